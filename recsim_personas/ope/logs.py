"""Logged pages of a stochastic behaviour policy, with everything off-policy estimators and the truth need.

:func:`log_sessions` runs the vector environment
(:class:`~recsim_personas.envs.vector.MovieLensVectorEnv`, one shared population, NEXT_STEP autoreset) with a
Plackett-Luce behaviour policy and records, for each page a user is shown:

- the context: user row, session, page number, the user vector of the observation and its mean history rating;
  pages of users with at most ``k`` unseen items (their slate would be padded with seen items) are played but
  not logged — on ML-100K no user gets there;
- the slate, the reward of each slot (``info["watched"]`` / ``info["ratings"]``, summing to the env's reward);
- the behaviour's exact per-position conditional log-probabilities of the slate and the exact inclusion
  probability of each slate item (:func:`~recsim_personas.ope.propensities.pl_inclusion`), and the number of
  items it drew from;
- per target policy: its log-probabilities and inclusion probabilities of the logged slate, its own slates at
  that context (the greedy slate, or ``mc_samples`` PL draws), the first-position KL to the behaviour, and the
  **ground truth** — the exact expected page reward of its slate at this context
  (:func:`~recsim_personas.ope.truth.expected_item_rewards`, read from the population before the page is played,
  without changing it or drawing from its generator), averaged over its draws for a PL target;
- the simulator's expected reward of each logged item (a check: the logged rewards average to it).

:func:`run_on_policy` plays a policy itself for the same number of pages and seed (its plain per-page reward).
An :class:`OPELog` saves to a directory (``log.npz`` without pickles + ``manifest.json``) and loads back.

Seeding: ``SeedSequence(seed).spawn(3)`` → the environment's reset seed, the behaviour's draws, the targets'
Monte Carlo draws.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from recsim_personas._io import atomic_dir, atomic_path
from recsim_personas.artifacts import ArtifactKind, read_manifest, verify_files, write_manifest
from recsim_personas.envs.session import item_rewards
from recsim_personas.errors import ArtifactError, ConfigError, RecsimPersonasError
from recsim_personas.ope.policies import SlatePolicy, first_position_kl, standardise
from recsim_personas.ope.truth import expected_item_rewards

if TYPE_CHECKING:
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.world import World
    from recsim_personas.ope.policies import ScoreBank

logger = logging.getLogger(__name__)

OPE_LOG = ArtifactKind(
    format="recsim-personas/ope-log",
    version=1,
    what="off-policy log",
    fix="write one with `recsim-personas ope --save-logs` or OPELog.save",
)
LOG_FILE = "log.npz"
MAX_IDLE_STEPS = 1000
"""Steps without a loggable page after which :func:`log_sessions` gives up (the users ran out of items)."""
_PAGE_FIELDS = (
    "user",
    "session",
    "page",
    "slates",
    "rewards",
    "behaviour_logp",
    "behaviour_inclusion",
    "n_allowed",
    "expected",
    "context",
    "user_mean_rating",
)
_TARGET_FIELDS = ("logp", "inclusion", "slates", "truth", "truth_var", "kl_first")


@dataclass(frozen=True, eq=False)
class TargetLog:
    """What one target policy would have done at the logged contexts (``n`` pages, ``k`` slots).

    Attributes:
        spec: the target's spec string.
        logp: its per-position conditional log-probabilities of the logged slates, float64 (n, k).
        inclusion: P(logged item ∈ its slate), float64 (n, k).
        slates: its slates at each context, int32 (n, M, k): the greedy one (M = 1) or M PL draws.
        truth: the exact expected page reward of its slate at each context, float64 (n,) (for PL the mean over
            its M draws of each draw's exact expected reward).
        truth_var: the variance over the M draws of the exact expected reward, float64 (n,) (0 for greedy): the
            Monte Carlo error of ``truth``.
        kl_first: ``KL(target ‖ behaviour)`` of the first-position distributions, float64 (n,).
    """

    spec: str
    logp: np.ndarray
    inclusion: np.ndarray
    slates: np.ndarray
    truth: np.ndarray
    truth_var: np.ndarray
    kl_first: np.ndarray

    @property
    def truth_value(self) -> float:
        """The target's value at the logged contexts (the estimand)."""
        return float(self.truth.mean())

    @property
    def truth_se(self) -> float:
        """Monte Carlo standard error of :attr:`truth_value` (0 for a deterministic target)."""
        m = self.slates.shape[1]
        return float(np.sqrt(self.truth_var.sum() / m) / self.truth.size) if m > 1 else 0.0


@dataclass(frozen=True, eq=False)
class OPELog:
    """Logged pages of a behaviour policy (``n`` pages, ``k`` slots); see the module docstring.

    Attributes:
        behaviour: the behaviour's spec string.
        reward: ``"likes"``, ``"watches"`` or ``"rating"``.
        seed: the root seed of the run.
        world: the world it ran on: ``split_id``, ``rater``, ``choice``, ``n_users``, ``n_items``.
        user: user rows, int64 (n,).
        session: session ids (distinct per session of the run), int64 (n,).
        page: the page's number in its session (1 = first), int64 (n,).
        slates: the logged slates, int64 (n, k).
        rewards: per-slot rewards, float64 (n, k).
        behaviour_logp: the behaviour's per-position conditional log-probabilities, float64 (n, k).
        behaviour_inclusion: P(logged item ∈ S) under the behaviour, float64 (n, k).
        n_allowed: the number of items the behaviour drew from (the user's unseen items), int64 (n,).
        expected: the simulator's expected reward of each logged item, float64 (n, k).
        context: the observation's user vector (mean item factor of the observed history), float32 (n, dim).
        user_mean_rating: the mean rating of the observed history (0 if empty), float64 (n,).
        targets: ``{spec: TargetLog}``.
        seconds: wall time of the logging run.
    """

    behaviour: str
    reward: str
    seed: int
    world: dict[str, Any]
    user: np.ndarray
    session: np.ndarray
    page: np.ndarray
    slates: np.ndarray
    rewards: np.ndarray
    behaviour_logp: np.ndarray
    behaviour_inclusion: np.ndarray
    n_allowed: np.ndarray
    expected: np.ndarray
    context: np.ndarray
    user_mean_rating: np.ndarray
    targets: dict[str, TargetLog] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_pages(self) -> int:
        return int(self.user.shape[0])

    @property
    def slate_size(self) -> int:
        return int(self.slates.shape[1])

    @property
    def behaviour_value(self) -> float:
        """The logged mean page reward."""
        return float(self.rewards.sum(axis=1).mean())

    # ------------------------------------------------------------------------------------ artifact
    def save(self, out: str | os.PathLike[str]) -> Path:
        """Write the directory ``out`` (replaced if it exists): ``log.npz`` (plain arrays) + ``manifest.json``."""
        out = Path(out)
        arrays = {name: getattr(self, name) for name in _PAGE_FIELDS}
        for t, target in enumerate(self.targets.values()):
            for name in _TARGET_FIELDS:
                arrays[f"target{t}_{name}"] = getattr(target, name)
        with atomic_dir(out) as tmp:
            with atomic_path(tmp / LOG_FILE) as part, open(part, "wb") as f:
                np.savez_compressed(f, **arrays)
            write_manifest(
                tmp,
                OPE_LOG,
                {
                    "behaviour": self.behaviour,
                    "targets": list(self.targets),
                    "reward": self.reward,
                    "seed": self.seed,
                    "world": self.world,
                    "pages": self.n_pages,
                    "seconds": self.seconds,
                },
                files=[LOG_FILE],
            )
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OPELog:
        """Read a directory written by :meth:`save` (files checked against the manifest).

        Raises:
            ArtifactError: not an off-policy log, or altered/damaged files.
        """
        path = Path(path)
        manifest = read_manifest(path, OPE_LOG, required=("behaviour", "targets", "reward", "seed", "world", "files"))
        verify_files(path, manifest, OPE_LOG)
        with np.load(path / LOG_FILE, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        try:
            targets = {
                spec: TargetLog(spec, **{name: arrays[f"target{t}_{name}"] for name in _TARGET_FIELDS})
                for t, spec in enumerate(manifest["targets"])
            }
            pages = {name: arrays[name] for name in _PAGE_FIELDS}
        except KeyError as exc:
            raise ArtifactError(
                f"{path / LOG_FILE}: the array {exc.args[0]!r} is missing. Fix: {OPE_LOG.fix}."
            ) from exc
        return cls(
            behaviour=manifest["behaviour"],
            reward=manifest["reward"],
            seed=int(manifest["seed"]),
            world=manifest["world"],
            targets=targets,
            seconds=float(manifest.get("seconds", 0.0)),
            **pages,
        )


def world_description(world: World) -> dict[str, Any]:
    """The world's identity as a log records it."""
    return {
        "split_id": world.split_id,
        "rater": world.rater_name,
        "choice": getattr(world.choice, "name", "handset"),
        "n_users": world.n_users,
        "n_items": world.n_items,
    }


def _seeds(seed: int) -> tuple[int, np.random.Generator, np.random.Generator]:
    env_ss, act_ss, mc_ss = np.random.SeedSequence(seed).spawn(3)
    return int(env_ss.generate_state(1)[0]), np.random.default_rng(act_ss), np.random.default_rng(mc_ss)


def _make_env(world: World, num_envs: int, slate_size: int, history_len: int, reward: str, session_config: Any):
    from recsim_personas.envs.vector import MovieLensVectorEnv

    if num_envs > world.n_users:
        raise ConfigError(f"num_envs ({num_envs}) exceeds the world's {world.n_users} users; use at most that many.")
    return MovieLensVectorEnv(
        num_envs,
        world=world,
        session_config=session_config,
        slate_size=slate_size,
        history_len=history_len,
        reward=reward,
    )


def _bases(bank: ScoreBank, policies: Sequence[SlatePolicy], obs: dict[str, np.ndarray], allowed: np.ndarray):
    """Each base score the policies use, standardised once per batch."""
    names = {name for p in policies for name in p.spec.bases if name != "uniform"}
    return {name: standardise(bank.base(name, obs), allowed) for name in names}


def _mix(policy: SlatePolicy, bases: dict[str, np.ndarray], allowed: np.ndarray) -> np.ndarray:
    total = np.zeros(allowed.shape)
    for name, weight in policy.spec.terms:
        if name != "uniform":
            total += weight * bases[name]
    return total


def log_sessions(
    world: World,
    behaviour: str,
    targets: Sequence[str],
    *,
    bank: ScoreBank,
    pages: int,
    seed: int,
    num_envs: int = 64,
    slate_size: int = 10,
    history_len: int = 20,
    reward: str = "likes",
    mc_samples: int = 16,
    session_config: SessionConfig | None = None,
    progress: bool = True,
) -> OPELog:
    """Log ``pages`` pages of the behaviour policy with propensities, target quantities and the truth.

    Args:
        world: the simulation's world.
        behaviour: the behaviour's spec (must be ``pl:...``: a stochastic policy).
        targets: the target policies' specs.
        bank: the base scores (built on ``world``).
        pages: pages to log.
        seed: root seed (see the module docstring).
        num_envs: concurrent session slots of the vector environment.
        slate_size: items per page.
        history_len: history entries in the observation.
        reward: ``"likes"``, ``"watches"`` or ``"rating"``.
        mc_samples: PL draws per context of a stochastic target (for its truth and the DM).
        session_config: behaviour coefficients (default: the world's).
        progress: a progress bar over pages.

    Returns:
        the :class:`OPELog`.
    """
    b_policy = SlatePolicy(behaviour, bank, slate_size)
    if not b_policy.stochastic:
        raise ConfigError(f"the behaviour policy must be stochastic (pl:...), got {behaviour!r}.")
    t_policies = [SlatePolicy(spec, bank, slate_size) for spec in targets]
    names = [p.name for p in t_policies]
    if len(set(names)) != len(names):
        raise ConfigError(f"targets must be distinct policies, got {names!r}.")
    for name, value in (("pages", pages), ("mc_samples", mc_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    env_seed, act_rng, mc_rng = _seeds(seed)
    env = _make_env(world, num_envs, slate_size, history_len, reward, session_config)
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=env_seed)
    population = env.unwrapped.population
    like = env.unwrapped.config.like_threshold
    resetting = np.zeros(num_envs, dtype=bool)
    slot_session = np.arange(num_envs, dtype=np.int64)
    next_session = num_envs
    rec: dict[str, list[np.ndarray]] = {name: [] for name in _PAGE_FIELDS}
    trec: list[dict[str, list[np.ndarray]]] = [{name: [] for name in _TARGET_FIELDS} for _ in t_policies]
    logged = idle = 0
    bar = tqdm(total=pages, desc=f"logging {b_policy.name}", unit="page", disable=not progress)
    try:
        while logged < pages:
            allowed_all = ~np.asarray(obs["seen"]).astype(bool)
            playing = np.flatnonzero(~resetting)  # the slots that play a page (the last batch may overshoot)
            sub = {key: np.asarray(value)[playing] for key, value in obs.items()}
            allowed = allowed_all[playing]
            bases = _bases(bank, [b_policy, *t_policies], sub, allowed)
            b_scores = _mix(b_policy, bases, allowed)
            actions = np.tile(np.arange(slate_size, dtype=np.int64), (num_envs, 1))  # ignored for restarting slots
            slates = b_policy.sample(b_scores, allowed, 1, act_rng)[:, 0]
            actions[playing] = slates
            # a user with at most k unseen items gets a slate padded with seen ones: played, not logged
            keep = allowed.sum(axis=1) > slate_size
            act_rows = playing[keep]
            sub = {key: value[keep] for key, value in sub.items()}
            allowed, b_scores, slates = allowed[keep], b_scores[keep], slates[keep]
            bases = {name: value[keep] for name, value in bases.items()}
            users = sub["user_index"].astype(np.int64)
            rec["user"].append(users)
            rec["session"].append(slot_session[act_rows].copy())
            rec["page"].append(population.state.pages[users] + 1)
            rec["slates"].append(slates)
            rec["behaviour_logp"].append(b_policy.position_log_probs(b_scores, allowed, slates))
            rec["behaviour_inclusion"].append(b_policy.inclusion(b_scores, allowed, slates))
            rec["n_allowed"].append(allowed.sum(axis=1).astype(np.int64))
            rec["context"].append(bank.context(sub))
            hr = np.asarray(sub["history_ratings"], dtype=np.float64)
            rec["user_mean_rating"].append(hr.sum(axis=1) / np.maximum((hr > 0).sum(axis=1), 1))
            b_first = b_policy.first_position(b_scores, allowed)
            needed, t_slates = [slates], []
            for policy, store in zip(t_policies, trec, strict=True):
                scores = _mix(policy, bases, allowed)
                drawn = policy.sample(scores, allowed, mc_samples if policy.stochastic else 1, mc_rng)
                t_slates.append(drawn)
                needed.append(drawn.reshape(drawn.shape[0], -1))
                store["slates"].append(drawn.astype(np.int32))
                store["logp"].append(policy.position_log_probs(scores, allowed, slates))
                store["inclusion"].append(policy.inclusion(scores, allowed, slates))
                store["kl_first"].append(first_position_kl(policy.first_position(scores, allowed), b_first))
            q = expected_item_rewards(population, users, np.concatenate(needed, axis=1), reward)
            rec["expected"].append(q[:, :slate_size])
            offset = slate_size
            for drawn, store in zip(t_slates, trec, strict=True):
                width = drawn.shape[1] * slate_size
                values = q[:, offset : offset + width].reshape(drawn.shape).sum(axis=2)  # (N, M)
                offset += width
                store["truth"].append(values.mean(axis=1))
                store["truth_var"].append(values.var(axis=1, ddof=1) if values.shape[1] > 1 else np.zeros(len(values)))

            obs, env_reward, terminated, truncated, info = env.step(actions)
            r = item_rewards(info["watched"][act_rows], info["ratings"][act_rows], reward, like)
            if not np.allclose(r.sum(axis=1), env_reward[act_rows]):
                raise RuntimeError("per-slot rewards do not add up to the environment's page reward")
            rec["rewards"].append(r)
            bar.update(min(act_rows.size, pages - logged))
            logged += act_rows.size
            idle = 0 if act_rows.size else idle + 1
            if idle >= MAX_IDLE_STEPS:
                raise RecsimPersonasError(
                    f"no page could be logged in {idle} steps: the users have fewer than {slate_size + 1} unseen"
                    f" items left after {logged} logged pages. Fix: log fewer pages or use a smaller slate size."
                )
            restarted = resetting  # these slots started a new session at this step
            n_new = int(restarted.sum())
            slot_session[restarted] = np.arange(next_session, next_session + n_new)
            next_session += n_new
            resetting = terminated | truncated
    finally:
        bar.close()
        env.close()
    cat = {name: np.concatenate(values, axis=0)[:pages] for name, values in rec.items()}
    target_logs = {
        policy.name: TargetLog(policy.name, **{name: np.concatenate(v, axis=0)[:pages] for name, v in store.items()})
        for policy, store in zip(t_policies, trec, strict=True)
    }
    seconds = time.perf_counter() - t0
    logger.info("logged %d pages of %s in %.1f s", logged, b_policy.name, seconds)
    return OPELog(
        behaviour=b_policy.name,
        reward=reward,
        seed=int(seed),
        world=world_description(world),
        targets=target_logs,
        seconds=seconds,
        **cat,
    )


def run_on_policy(
    world: World,
    policy: str,
    *,
    bank: ScoreBank,
    pages: int,
    seed: int,
    num_envs: int = 64,
    slate_size: int = 10,
    history_len: int = 20,
    reward: str = "likes",
    session_config: SessionConfig | None = None,
) -> float:
    """The policy's own mean page reward over ``pages`` pages, with the logging run's environment seed (the
    policy draws from the behaviour's stream of that seed)."""
    env_seed, act_rng, _ = _seeds(seed)
    p = SlatePolicy(policy, bank, slate_size)
    env = _make_env(world, num_envs, slate_size, history_len, reward, session_config)
    obs, _ = env.reset(seed=env_seed)
    resetting = np.zeros(num_envs, dtype=bool)
    total, played = 0.0, 0
    try:
        while played < pages:
            allowed = ~np.asarray(obs["seen"]).astype(bool)
            scores = _mix(p, _bases(bank, [p], obs, allowed), allowed)
            actions = p.sample(scores, allowed, 1, act_rng)[:, 0]
            rows = np.flatnonzero(~resetting)[: pages - played]
            obs, env_reward, terminated, truncated, _ = env.step(actions)
            total += float(env_reward[rows].sum())
            played += rows.size
            resetting = terminated | truncated
    finally:
        env.close()
    return total / played
