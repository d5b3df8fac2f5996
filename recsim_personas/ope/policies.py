"""The slate policies off-policy evaluation compares: Plackett-Luce or greedy over mixtures of base scores.

A policy is written as a spec string, ``KIND:SCORES[@TEMPERATURE]``:

- ``KIND`` — ``pl`` (a Plackett-Luce slate over the user's unseen items, Gumbel-top-k; stochastic, with exact
  slate, prefix and inclusion probabilities) or ``greedy`` (the ``k`` best-scored unseen items; deterministic);
- ``SCORES`` — a sum of ``[weight*]name`` terms over the base scores: ``pop`` (``log(1 + popularity)``),
  ``affinity`` (the mean item factor of the user's observed history · each item's factor, item factors from
  :func:`~recsim_personas.envs.item_space.world_item_factors`), ``bpr`` (a trained RecBole model's scores; needs
  ``recbole_dir``), ``rl`` (a trained RL policy's scores, :class:`~recsim_personas.recommenders.rl.RLPolicy`;
  needs ``rl_dir``: ``greedy:rl`` is that policy as it is evaluated) and ``uniform`` (all zero: ``pl:uniform``
  is the uniformly random slate);
- ``TEMPERATURE`` — the PL logits are the mixed scores divided by it (default 1; ignored by ``greedy``).

Every base score is standardised per row over the allowed (unseen) items (mean 0, standard deviation 1), so a
weight or a temperature means the same whatever the base. Examples: ``pl:0.5*pop+affinity@0.5``,
``greedy:affinity``, ``pl:uniform``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recsim_personas.errors import ConfigError, unknown_choice

if TYPE_CHECKING:
    from recsim_personas.envs.world import World

KINDS = ("pl", "greedy")
BASES = ("pop", "affinity", "bpr", "rl", "uniform")
_TERM = re.compile(r"^\s*(?:(?P<w>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\*\s*)?(?P<name>[a-z]+)\s*$")


@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec (see the module docstring).

    Attributes:
        kind: ``"pl"`` or ``"greedy"``.
        terms: ``((base name, weight), ...)``, each base once.
        temperature: PL temperature (> 0); 1 for greedy.
    """

    kind: Literal["pl", "greedy"]
    terms: tuple[tuple[str, float], ...]
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise unknown_choice("policy kind", str(self.kind), KINDS)
        if not self.terms:
            raise ConfigError("PolicySpec.terms must name at least one base score, got none.")
        names = [name for name, _ in self.terms]
        for name in names:
            if name not in BASES:
                raise unknown_choice("base score", name, BASES)
        if len(set(names)) != len(names):
            raise ConfigError(f"PolicySpec.terms names a base score twice: {names!r}.")
        for name, weight in self.terms:
            if not np.isfinite(weight):
                raise ConfigError(f"PolicySpec weight of {name!r} must be finite, got {weight!r}.")
        if isinstance(self.temperature, bool) or not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"PolicySpec.temperature must be a finite number > 0, got {self.temperature!r}.")

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        """Read ``KIND:SCORES[@TEMPERATURE]``.

        Raises:
            ConfigError: names the part of the spec that is wrong and shows the expected form.
        """
        form = "expected KIND:SCORES[@TEMPERATURE], e.g. 'pl:0.5*pop+affinity@0.5' or 'greedy:affinity'"
        if not isinstance(text, str) or ":" not in text:
            raise ConfigError(f"policy spec {text!r}: {form}.")
        kind, _, rest = text.strip().partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise unknown_choice("policy kind", kind, KINDS)
        scores, at, temp = rest.partition("@")
        temperature = 1.0
        if at:
            try:
                temperature = float(temp)
            except ValueError:
                raise ConfigError(f"policy spec {text!r}: temperature {temp!r} is not a number; {form}.") from None
        terms = []
        for part in scores.split("+"):
            m = _TERM.match(part)
            if m is None:
                raise ConfigError(f"policy spec {text!r}: cannot read the term {part!r}; {form}.")
            terms.append((m["name"], float(m["w"]) if m["w"] else 1.0))
        return cls(kind, tuple(terms), temperature)  # type: ignore[arg-type]

    def __str__(self) -> str:
        body = "+".join(name if w == 1.0 else f"{w:g}*{name}" for name, w in self.terms)
        return f"{self.kind}:{body}" + (f"@{self.temperature:g}" if self.kind == "pl" and self.temperature != 1 else "")

    @property
    def bases(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.terms)


def standardise(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per-row z-scores over the allowed items (0 where a row's allowed scores are constant).

    Args:
        scores: float (N, n_items).
        allowed: bool (N, n_items).

    Returns:
        float64 (N, n_items); disallowed entries are 0 (the policies mask them anyway).
    """
    s = np.asarray(scores, dtype=np.float64)
    count = np.maximum(allowed.sum(axis=1, keepdims=True), 1)
    mean = np.where(allowed, s, 0.0).sum(axis=1, keepdims=True) / count
    centred = np.where(allowed, s - mean, 0.0)
    std = np.sqrt((centred**2).sum(axis=1, keepdims=True) / count)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 1e-12)


class ScoreBank:
    """The base scores of a world's items for batches of observations.

    Args:
        world: the simulation's world (item popularity, train histories for the item factors).
        factor_dim: dimension of the item factors (``affinity``).
        recbole_dir: a trained RecBole model directory (``RecBolePolicy.load``) for ``bpr``; optional.
        split: the split the RecBole model was trained on (a directory or a loaded Split), with ``recbole_dir``.
        rl_dir: a trained RL policy directory (``RLPolicy.load``, checked against the world's split) for ``rl``.

    Attributes:
        item_factors: float32 (n_items, factor_dim).
        log_popularity: float64 (n_items,).
    """

    def __init__(
        self,
        world: World,
        factor_dim: int = 32,
        recbole_dir: str | None = None,
        split: Any = None,
        rl_dir: str | None = None,
    ) -> None:
        from recsim_personas.envs.item_space import world_item_factors

        self.world = world
        self.item_factors = world_item_factors(world, dim=factor_dim)
        self.log_popularity = np.log1p(np.asarray(world.item_popularity, dtype=np.float64))
        self._recbole_dir, self._split, self._recbole = recbole_dir, split, None
        self._rl_dir, self._rl = rl_dir, None

    def context(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The user vector of each observation: the mean factor of its observed history, float32 (N, factor_dim)
        (zero for an empty history)."""
        hist = np.asarray(obs["history_items"], dtype=np.int64)
        valid = hist >= 0
        f = self.item_factors[np.maximum(hist, 0)] * valid[..., None]
        return (f.sum(axis=1) / np.maximum(valid.sum(axis=1, keepdims=True), 1)).astype(np.float32)

    def base(self, name: str, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw base scores, float64 (N, n_items)."""
        n = np.asarray(obs["seen"]).shape[0]
        if name == "pop":
            return np.broadcast_to(self.log_popularity, (n, self.world.n_items))
        if name == "affinity":
            return (self.context(obs) @ self.item_factors.T).astype(np.float64)
        if name == "uniform":
            return np.zeros((n, self.world.n_items))
        if name == "bpr":
            scores = self._bpr().score_batch(obs).astype(np.float64)
            known = scores > -1e29  # RecBole's unknown items get -1e30: put them at the row's lowest known score
            low = np.where(known, scores, np.inf).min(axis=1, keepdims=True)
            return np.where(known, scores, np.where(np.isfinite(low), low, 0.0))
        if name == "rl":
            return self._rl_policy().scores(obs)
        raise unknown_choice("base score", name, BASES)

    def _rl_policy(self) -> Any:
        if self._rl is None:
            if self._rl_dir is None:
                raise ConfigError(
                    "the 'rl' base score needs a trained RL policy. Fix: pass rl_dir= (e.g. the policy directory of"
                    " benchmarks/rl_slateq.py --out DIR: DIR/policy) or drop 'rl' from the spec."
                )
            from recsim_personas.recommenders.rl import RLPolicy

            self._rl = RLPolicy.load(self._rl_dir, split_id=self.world.split_id, n_items=self.world.n_items)
        return self._rl

    def _bpr(self) -> Any:
        if self._recbole is None:
            if self._recbole_dir is None:
                raise ConfigError(
                    "the 'bpr' base score needs a trained RecBole model. Fix: pass recbole_dir= (a directory from"
                    " `recsim-personas benchmark --out DIR`, DIR/models/...) or drop 'bpr' from the spec."
                )
            from recsim_personas.recommenders.recbole_policy import RecBolePolicy

            self._recbole = RecBolePolicy.load(self._recbole_dir, self._split)
        return self._recbole


class SlatePolicy:
    """A :class:`PolicySpec` bound to a :class:`ScoreBank` and a slate size.

    Args:
        spec: the spec (or its string).
        bank: the base scores.
        slate_size: items per slate.
        seed: seed of the generator :meth:`act_batch` samples with.
    """

    def __init__(self, spec: PolicySpec | str, bank: ScoreBank, slate_size: int, seed: Any = None) -> None:
        self.spec = spec if isinstance(spec, PolicySpec) else PolicySpec.parse(spec)
        self.bank, self.slate_size = bank, int(slate_size)
        self.name = str(self.spec)
        self.rng = np.random.default_rng(seed)

    @property
    def stochastic(self) -> bool:
        return self.spec.kind == "pl"

    @property
    def uniform(self) -> bool:
        """Whether the policy draws uniformly among the allowed items (a PL policy over ``uniform`` only)."""
        return self.stochastic and all(name == "uniform" or w == 0 for name, w in self.spec.terms)

    def logits(self, obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, allowed)``: the mixed standardised scores float64 (N, n_items) (the PL logits times the
        temperature) and the allowed (unseen) items bool (N, n_items)."""
        allowed = ~np.asarray(obs["seen"]).astype(bool)
        total = np.zeros(allowed.shape)
        for name, weight in self.spec.terms:
            if name != "uniform":
                total += weight * standardise(self.bank.base(name, obs), allowed)
        return total, allowed

    def greedy(self, scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """The ``k`` best-scored allowed items per row, best first (ties: lower index), int64 (N, k)."""
        from recsim_personas.recommenders.policies import top_k_unseen

        return top_k_unseen(scores, ~allowed, self.slate_size)

    def sample(self, scores: np.ndarray, allowed: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Slates drawn from the policy, int64 (N, n_samples, k) (a greedy policy repeats its one slate)."""
        if not self.stochastic:
            return np.repeat(self.greedy(scores, allowed)[:, None, :], n_samples, axis=1)
        return gumbel_top_k(scores / self.spec.temperature, allowed, self.slate_size, n_samples, rng)

    def position_log_probs(self, scores: np.ndarray, allowed: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """``log P(a_j | a_1..a_{j-1})`` of given slates, float64 (N, k); for greedy 0 while the slate follows the
        greedy one and ``-inf`` from its first departure on."""
        if self.stochastic:
            from recsim_personas.recommenders.plackett_luce import position_log_probs

            return position_log_probs(scores, slates, allowed, self.spec.temperature)
        follows = np.cumprod(slates == self.greedy(scores, allowed), axis=1).astype(bool)
        return np.where(follows, 0.0, -np.inf)

    def inclusion(self, scores: np.ndarray, allowed: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(item ∈ slate), float64 (N, r) for items int (N, r): exact (:func:`~.propensities.pl_inclusion`) for
        PL, 0/1 for greedy."""
        if self.uniform:  # k of the m allowed items, each equally likely
            m = allowed.sum(axis=1, keepdims=True)
            chosen = np.take_along_axis(allowed, items, axis=1)
            return np.where(chosen, np.minimum(1.0, self.slate_size / np.maximum(m, 1)), 0.0)
        if self.stochastic:
            from recsim_personas.ope.propensities import pl_inclusion

            return pl_inclusion(scores, items, self.slate_size, allowed, self.spec.temperature)
        g = self.greedy(scores, allowed)
        return (items[:, :, None] == g[:, None, :]).any(axis=2).astype(np.float64)

    def first_position(self, scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """The distribution of the first slate item, float64 (N, n_items) (one-hot for greedy)."""
        if self.stochastic:
            from recsim_personas.ope.propensities import masked_softmax

            return masked_softmax(scores, allowed, self.spec.temperature)
        out = np.zeros(scores.shape)
        out[np.arange(scores.shape[0]), self.greedy(scores, allowed)[:, 0]] = 1.0
        return out

    def act_batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One slate per observation (the Policy protocol), int64 (N, k)."""
        scores, allowed = self.logits(obs)
        return self.sample(scores, allowed, 1, self.rng)[:, 0]

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        return self.act_batch({key: np.asarray(value)[None, ...] for key, value in obs.items()})[0]


def gumbel_top_k(
    logits: np.ndarray, allowed: np.ndarray, k: int, n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_samples`` Plackett-Luce slates per row by the Gumbel-top-k trick, int64 (N, n_samples, k).

    The same distribution as :func:`~recsim_personas.recommenders.plackett_luce.sample_slates` (which rows with
    fewer than ``k`` allowed items fall back to), drawn in float32 for speed: many draws per context feed Monte
    Carlo averages (the truth and the direct method of a stochastic target), where float32 keys are plenty.

    Args:
        logits: float (N, n_items) (already divided by the temperature).
        allowed: bool (N, n_items).
        k: slate size.
        n_samples: slates per row.
        rng: the generator.
    """
    n, n_items = logits.shape
    out = np.empty((n, n_samples, k), dtype=np.int64)
    short = allowed.sum(axis=1) < k
    from recsim_personas.recommenders.plackett_luce import sample_slates, top_k_of_keys

    if short.any():
        rows = np.flatnonzero(short)
        rep = np.repeat(logits[rows], n_samples, axis=0)
        drawn = sample_slates(rep, k, rng, np.repeat(allowed[rows], n_samples, axis=0))
        out[rows] = drawn.reshape(rows.size, n_samples, k)
    rows = np.flatnonzero(~short)
    if rows.size:
        base = np.where(allowed[rows], logits[rows], -np.inf).astype(np.float32)
        u = rng.random((rows.size, n_samples, n_items), dtype=np.float32)
        np.maximum(u, np.float32(1e-30), out=u)
        out[rows] = top_k_of_keys(base[:, None, :] - np.log(-np.log(u)), k)
    return out


def first_position_kl(target: np.ndarray, behaviour: np.ndarray) -> np.ndarray:
    """``KL(target ‖ behaviour)`` of first-position distributions, float64 (N,) (finite while the behaviour puts
    mass wherever the target does; a greedy target gives ``-log behaviour(its first item)``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(target > 0, target * (np.log(target) - np.log(behaviour)), 0.0)
    return terms.sum(axis=1)
