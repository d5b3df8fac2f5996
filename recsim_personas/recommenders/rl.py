"""RL recommenders: a slate network over item embeddings, and the trained policy as a :class:`Policy`.

:class:`SlateNet` (torch) reads the environment's observation and scores every item:

- the user state ``u`` = an MLP of [the mean embedding of the history items, their rating-weighted mean
  (weights ``(rating - 3) / 2``), the traits] plus a per-user embedding (zero at the start);
- ``head="pl"`` (policy-gradient training, e.g. ``benchmarks/rl_reinforce.py``): one logit per item,
  ``u · e_i + b_i`` — the logits of a Plackett-Luce slate policy
  (:mod:`~recsim_personas.recommenders.plackett_luce`) — and a value ``V(s)``;
- ``head="slateq"`` (``benchmarks/rl_slateq.py``): per item a watch logit ``c(s) · e_i + w_i`` (the user
  choice model, learned from the observed watches) and an item-wise long-term value ``Q̄(s, i) = q(s) · e_i +
  v_i``; a slate's value decomposes as ``Σ_i P(watch i | s) · Q̄(s, i)`` (Ie et al., 2019, with this
  simulator's independent per-item watch decisions), so its best slate is the top-k of
  ``P(watch) · Q̄``.

The item embeddings start from item factors (:func:`~recsim_personas.envs.item_space.item_factors`) and the item
biases from the items' log popularity (the policy starts near Pop), both trained.

:class:`RLPolicy` wraps a trained network (greedy top-k of its scores over the unseen items by default, or a
Plackett-Luce sample) and saves/loads it as an artifact directory (``weights.safetensors``, ``rl.json``,
``manifest.json`` with the split id), so ``benchmark --policies rl:DIR`` reports it beside the others.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recsim_personas.artifacts import ArtifactKind, check_input, has_manifest, read_manifest, verify_files
from recsim_personas.errors import ArtifactError, ConfigError, config_from_dict, unknown_choice
from recsim_personas.recommenders.policies import SeenAwarePolicy, top_k_unseen

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RL_POLICY = ArtifactKind(
    format="recsim-personas/rl-policy",
    version=1,
    what="RL policy",
    fix="train one with `python benchmarks/rl_reinforce.py --out DIR` or `python benchmarks/rl_slateq.py --out DIR`",
)
"""The RL-policy artifact kind."""
WEIGHTS = "weights.safetensors"
CONFIG_FILE = "rl.json"
HEADS = ("pl", "slateq")


@dataclass(frozen=True)
class SlateNetConfig:
    """The shape of a :class:`SlateNet`.

    Attributes:
        n_items: items scored (the environment's ``n_items``).
        n_users: simulated users (the observation's ``user_index`` range).
        dim: embedding width.
        hidden: width of the user-state MLP.
        head: ``"pl"`` (Plackett-Luce logits + a state value) or ``"slateq"`` (watch logits + item-wise values).
        user_embeddings: add a learned per-user vector to the user state.
        init_scale: the initial value of the learned factor all scores are multiplied by (a policy-gradient
            policy starts this much sharper than a softmax of the standardised log popularity).
    """

    n_items: int
    n_users: int
    dim: int = 32
    hidden: int = 128
    head: Literal["pl", "slateq"] = "pl"
    user_embeddings: bool = True
    init_scale: float = 3.0

    def __post_init__(self) -> None:
        for name in ("n_items", "n_users", "dim", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SlateNetConfig.{name} must be a positive integer, got {value!r}.")
        if not (isinstance(self.init_scale, int | float) and self.init_scale > 0):
            raise ConfigError(f"SlateNetConfig.init_scale must be > 0, got {self.init_scale!r}.")
        if self.head not in HEADS:
            raise unknown_choice("SlateNetConfig.head", str(self.head), HEADS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SlateNetConfig:
        return config_from_dict(cls, dict(d), "SlateNetConfig field")


def _torch_module() -> Any:
    import torch
    from torch import nn

    class _SlateNet(nn.Module):
        def __init__(self, config: SlateNetConfig, item_factors: np.ndarray | None, popularity: np.ndarray | None):
            super().__init__()
            self.config = config
            n, d = config.n_items, config.dim
            self.item_emb = nn.Embedding(n, d)
            if item_factors is not None:
                f = np.asarray(item_factors, dtype=np.float32)
                if f.shape != (n, d):
                    raise ConfigError(f"item_factors must have shape ({n}, {d}), got {f.shape}.")
                self.item_emb.weight.data.copy_(torch.from_numpy(f))
            else:
                nn.init.normal_(self.item_emb.weight, std=0.1)
            bias = np.zeros(n, dtype=np.float32)
            if popularity is not None:
                p = np.log1p(np.asarray(popularity, dtype=np.float64))
                if p.shape != (n,):
                    raise ConfigError(f"popularity must have shape ({n},), got {p.shape}.")
                bias = ((p - p.mean()) / (p.std() + 1e-9)).astype(np.float32)
            n_heads = 1 if config.head == "pl" else 2
            # PL: the logits start at popularity; SlateQ: the watch logits do, the item values start at 0 (an
            # item's value is learned from its watches only, so a popularity start would stay optimistic for
            # the items that are shown and never watched)
            biases = np.stack([bias, np.zeros_like(bias)])[:n_heads]
            self.item_bias = nn.Parameter(torch.from_numpy(biases))
            self.user_emb = nn.Embedding(config.n_users, d) if config.user_embeddings else None
            if self.user_emb is not None:
                nn.init.zeros_(self.user_emb.weight)
            self.mlp = nn.Sequential(
                nn.Linear(2 * d + 3, config.hidden), nn.Tanh(), nn.Linear(config.hidden, d * n_heads)
            )
            self.log_scale = nn.Parameter(torch.tensor(float(np.log(config.init_scale))))
            self.value = nn.Sequential(nn.Linear(2 * d + 3, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))

        def state(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
            items = obs["history_items"].long()
            valid = (items >= 0).float()
            emb = self.item_emb(items.clamp(min=0)) * valid.unsqueeze(-1)  # (N, H, d)
            count = valid.sum(1, keepdim=True).clamp(min=1.0)
            mean = emb.sum(1) / count
            weight = ((obs["history_ratings"].float() - 3.0) / 2.0) * valid
            liked = (emb * weight.unsqueeze(-1)).sum(1) / count
            return torch.cat([mean, liked, obs["traits"].float()], dim=1)

        def forward(self, obs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            """(scores, value): PL logits (N, n_items) and V(s) (N,) for ``head="pl"``; for ``"slateq"``
            (N, 2, n_items) [watch logits, item-wise values] and V(s)."""
            x = self.state(obs)
            u = self.mlp(x)
            n_heads = self.item_bias.shape[0]
            u = u.view(u.shape[0], n_heads, -1)
            if self.user_emb is not None:
                u = u + self.user_emb(obs["user_index"].long()).unsqueeze(1)
            scores = torch.einsum("nhd,id->nhi", u, self.item_emb.weight) + self.item_bias.unsqueeze(0)
            if n_heads == 1:  # the PL logits' sharpness is learned; SlateQ's heads are a logit and a value
                scores = scores * self.log_scale.exp()
            value = self.value(x).squeeze(-1)
            return (scores[:, 0] if n_heads == 1 else scores), value

    return _SlateNet


def SlateNet(  # a factory (CamelCase: it makes a module) that keeps torch out of this module's import
    config: SlateNetConfig, item_factors: np.ndarray | None = None, popularity: np.ndarray | None = None
) -> torch.nn.Module:
    """A new slate network (a ``torch.nn.Module``; see the module docstring).

    Args:
        config: its shape.
        item_factors: initial item embeddings, float (n_items, dim) (default: small random ones).
        popularity: per item (e.g. rating counts), (n_items,); the item biases start at its standardised log
            (default: zero).

    Calling it on a batch of observations (torch tensors: ``history_items`` (N, H) int, ``history_ratings``
    (N, H) int, ``traits`` (N, 3) float, ``user_index`` (N,) int) returns ``(scores, value)``.
    """
    return _torch_module()(config, item_factors, popularity)


def obs_to_torch(obs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The observation entries a :class:`SlateNet` reads, as torch tensors (leading axis N)."""
    import torch

    out = {}
    for key in ("history_items", "history_ratings", "traits", "user_index"):
        if key not in obs:
            raise ConfigError(f"the observation has no {key!r} entry (keys: {sorted(obs)}); pass the environment's.")
        out[key] = torch.as_tensor(np.asarray(obs[key]))
    return out


def slate_scores(net: torch.nn.Module, obs: Mapping[str, Any]) -> np.ndarray:
    """The scores a policy ranks by, float64 (N, n_items): PL logits, or ``P(watch) · Q̄`` for SlateQ."""
    import torch

    with torch.no_grad():
        scores, _ = net(obs_to_torch(obs))
        if scores.dim() == 3:
            scores = torch.sigmoid(scores[:, 0]) * scores[:, 1]
    return scores.double().numpy()


class RLPolicy(SeenAwarePolicy):
    """A trained :class:`SlateNet` as a recommender policy.

    Args:
        net: the network.
        name: report label (default ``"rl"``).
        slate_size: items per slate.
        greedy: the top ``slate_size`` unseen items by score (default), else a Plackett-Luce sample of the PL
            logits divided by ``temperature`` (``head="pl"`` only).
        temperature: see ``greedy``.
        seed: the generator of the samples.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        *,
        name: str = "rl",
        slate_size: int = 10,
        greedy: bool = True,
        temperature: float = 1.0,
        seed: int | np.random.SeedSequence | None = None,
        split_id: str | None = None,
        train_seconds: float | None = None,
    ) -> None:
        config: SlateNetConfig = net.config
        super().__init__(config.n_items, slate_size, seed)
        if not greedy and config.head != "pl":
            raise ConfigError("sampling (greedy=False) needs a Plackett-Luce network (head='pl').")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}.")
        self.net, self.name, self.greedy, self.temperature = net.eval(), name, greedy, float(temperature)
        self.split_id, self.train_seconds = split_id, train_seconds

    def scores(self, obs: Mapping[str, Any]) -> np.ndarray:
        """:func:`slate_scores` of a batched observation, float64 (N, n_items)."""
        return slate_scores(self.net, obs)

    def act_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        seen = self._seen(obs)
        scores = self.scores(obs)
        if self.greedy:
            return top_k_unseen(scores, seen, self.slate_size)
        from recsim_personas.recommenders.plackett_luce import sample_slates

        return sample_slates(scores, self.slate_size, self.rng, allowed=~seen, temperature=self.temperature)

    # ------------------------------------------------------------------------------------------- artifact
    def save(self, out: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> Path:
        """Write the policy directory atomically (weights, config, manifest with the split id); returns it.

        Args:
            out: a new or empty directory, or an earlier RL policy's (replaced).
            extra: JSON-serialisable facts recorded in the manifest (algorithm, training settings, figures).
        """
        from safetensors.torch import save_file

        from recsim_personas._io import atomic_dir, write_json
        from recsim_personas.artifacts import write_manifest

        out = Path(out)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not has_manifest(out))):
            raise ArtifactError(
                f"{str(out)!r} exists and is not a saved RL policy; refusing to replace it. Fix: a new or empty"
                " directory."
            )
        with atomic_dir(out) as tmp:
            save_file({k: v.detach().contiguous() for k, v in self.net.state_dict().items()}, str(tmp / WEIGHTS))
            write_json(tmp / CONFIG_FILE, {"net": self.net.config.to_dict(), "slate_size": self.slate_size})
            body = {
                "split_id": self.split_id,
                "name": self.name,
                "train_seconds": self.train_seconds,
                "training": dict(extra or {}),
            }
            write_manifest(tmp, RL_POLICY, body, files=[WEIGHTS, CONFIG_FILE], libraries=("torch",))
        return out

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        split_id: str | None = None,
        n_items: int | None = None,
        slate_size: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> RLPolicy:
        """Load a directory written by :meth:`save`.

        Args:
            path: the policy directory.
            split_id: refuse a policy trained on another split (``None``: no check).
            n_items: refuse a policy of another catalogue size.
            slate_size: items per slate (default: the trained one).
            name: report label (default: the saved one).
            **kwargs: ``greedy``, ``temperature``, ``seed``.

        Raises:
            ArtifactError: not an RL policy directory, damaged or altered files, another split or catalogue.
        """
        from safetensors.torch import load_file

        path = Path(path)
        manifest = read_manifest(path, RL_POLICY, required=("split_id",))
        verify_files(path, manifest, RL_POLICY)
        if split_id is not None:
            check_input(
                path, RL_POLICY, "split", manifest["split_id"], split_id, "train the policy on this split first"
            )
        saved = json.loads((path / CONFIG_FILE).read_text())
        config = SlateNetConfig.from_dict(saved["net"])
        if n_items is not None and config.n_items != n_items:
            raise ArtifactError(
                f"RL policy {str(path)!r} scores {config.n_items} items, the environment has {n_items}. Fix: train"
                " it on this split."
            )
        net = SlateNet(config)
        try:
            net.load_state_dict(load_file(str(path / WEIGHTS)))
        except (RuntimeError, KeyError) as exc:
            raise ArtifactError(
                f"RL policy {str(path)!r}: {WEIGHTS} does not fit the network of {CONFIG_FILE} ({exc})."
            ) from exc
        return cls(
            net,
            name=name or manifest.get("name") or "rl",
            slate_size=slate_size or int(saved["slate_size"]),
            split_id=manifest["split_id"],
            train_seconds=manifest.get("train_seconds"),
            **kwargs,
        )


def latest_checkpoint(directory: str | os.PathLike[str]) -> tuple[Path | None, int]:
    """The newest finished checkpoint ``directory/checkpoints/update_N`` (one with a manifest) and ``N``, or
    ``(None, 0)``: where a training script resumes."""
    root = Path(directory) / "checkpoints"
    found = [c for c in sorted(root.glob("update_*")) if has_manifest(c)] if root.is_dir() else []
    return (found[-1], int(found[-1].name.split("_")[1])) if found else (None, 0)
