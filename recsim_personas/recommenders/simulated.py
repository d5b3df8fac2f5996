"""Simulated metrics of a policy: the Mesa population lives ``days`` days under it, for several seeds.

:func:`evaluate_policy` builds the environment registered under ``env_id`` (its world, behaviour config and
history length), then per seed runs a fresh :class:`~recsim_personas.envs.model.Population` for ``days``
days with :meth:`~recsim_personas.envs.model.Population.run_days` — the same machinery as ``simulate`` and
the Gymnasium environments; nothing about sessions is re-implemented here. Per seed it reads the
DataCollector's totals:

| metric              | meaning                                                                    |
|---------------------|----------------------------------------------------------------------------|
| `mean_rating`       | mean rating of the watched movies                                          |
| `like_rate`         | share of watched movies rated ≥ ``like_threshold`` (4)                     |
| `watch_rate`        | watched / shown (only unseen items are ever watched)                       |
| `pages_per_session` | pages shown per session                                                    |
| `exit_rate`         | share of sessions the user left before the page limit                      |
| `returning`         | share of users still returning after ``days`` days (not churned)           |
| `likes_per_user`    | liked watches per user over the run (watching × liking, the headline)      |
| `coverage`          | share of the catalogue shown at least once                                 |
| `shown_popularity`  | mean number of history ratings of the shown movies (popularity bias)       |

and reports each metric's mean over seeds with a Student-t confidence interval. The slates are checked
on the way: a policy that shows out-of-range items, repeats, or items the user has seen while unseen ones
remain is stopped with a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recsim_personas.errors import ConfigError, unknown_choice

SIM_METRICS = (
    "mean_rating",
    "like_rate",
    "watch_rate",
    "pages_per_session",
    "exit_rate",
    "returning",
    "likes_per_user",
    "coverage",
    "shown_popularity",
)
"""The simulated metrics, in report order."""
RATES = ("like_rate", "watch_rate", "exit_rate", "returning", "coverage")
"""The metrics that are shares (their intervals are clipped to [0, 1])."""


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its confidence interval (``low == high == mean`` for a single seed)."""

    mean: float
    low: float
    high: float
    per_seed: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "per_seed": list(self.per_seed)}


def interval(
    values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> Interval:
    """Mean and Student-t interval of ``values`` (NaN-free; one value → a zero-width interval), clipped to
    ``bounds`` (e.g. ``(0, 1)`` for a rate)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all():
        raise ConfigError(f"interval needs finite values, got {list(values)!r}.")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, mean, mean, tuple(x.tolist()))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    low, high = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    return Interval(mean, low, high, tuple(x.tolist()))


@dataclass(frozen=True)
class SimulatedMetrics:
    """Simulated metrics of one policy over seeds.

    Attributes:
        policy: the policy's name.
        seeds: the seeds run.
        days: days simulated per seed.
        users: simulated users.
        confidence: level of the intervals.
        metrics: :data:`SIM_METRICS` → :class:`Interval`.
        totals: per seed, the DataCollector totals (:meth:`Population.summary`).
        watched: per seed, what the users watched during the run: ``user_id``, ``item_id``, ``rating``
            (int64 arrays of equal length, in watch order per user).
        seconds: wall time of the runs.
        sessions: per seed, the sessions that ended (:meth:`Population.ended_sessions`: ``user_id``, ``day``,
            ``pages``, ``watches``).
        shown_test: per seed, how many shown (user, movie) pairs were movies the real user rated in the test
            part (empty when ``evaluate_policy`` was not given the test ratings).
        shown_total: per seed, how many (user, movie) pairs were shown.
    """

    policy: str
    seeds: tuple[int, ...]
    days: int
    users: int
    confidence: float
    metrics: dict[str, Interval]
    totals: tuple[dict[str, Any], ...]
    watched: tuple[dict[str, np.ndarray], ...] = field(repr=False)
    seconds: float = 0.0
    sessions: tuple[dict[str, np.ndarray], ...] = field(default=(), repr=False)
    shown_test: tuple[int, ...] = ()
    shown_total: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "seeds": list(self.seeds),
            "days": self.days,
            "users": self.users,
            "confidence": self.confidence,
            "metrics": {name: value.to_dict() for name, value in self.metrics.items()},
            "totals": list(self.totals),
            "seconds": self.seconds,
        }


class CheckedPolicy:
    """Wraps a policy so that every batch of slates is validated (see :func:`check_policy_slates`) and
    counted (:attr:`shown`: how often each item index was shown since the last :meth:`reset_counts`; with a
    ``test_mask``, :attr:`shown_test`: how many shown (user, item) pairs it marks)."""

    def __init__(self, policy: Any, n_items: int, test_mask: np.ndarray | None = None) -> None:
        self.policy, self.n_items = policy, n_items
        self.name = str(getattr(policy, "name", type(policy).__name__))
        self.slate_size = int(policy.slate_size)
        self.shown = np.zeros(n_items, dtype=np.int64)
        self.test_mask = test_mask
        self.shown_test = 0

    def reset_counts(self) -> None:
        self.shown[:] = 0
        self.shown_test = 0

    def act_batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        from recsim_personas.recommenders.offline import check_policy_slates

        slates = np.asarray(self.policy.act_batch(obs))
        check_policy_slates(self.name, slates, obs["seen"], self.slate_size, self.n_items)
        slates = slates.astype(np.int64, copy=False)
        np.add.at(self.shown, slates.ravel(), 1)
        if self.test_mask is not None:
            self.shown_test += int(self.test_mask[np.asarray(obs["user_index"])[:, None], slates].sum())
        return slates


def _make_env(env_id: str, **kwargs: Any) -> Any:
    import gymnasium as gym

    import recsim_personas  # noqa: F401  (registers the ids)

    if env_id not in gym.registry:
        ours = [key for key in gym.registry if key.startswith("recsim_personas/")]
        raise unknown_choice("environment id", env_id, ours)
    return gym.make(env_id, disable_env_checker=True, **{k: v for k, v in kwargs.items() if v is not None})


def evaluate_policy(
    env_id: str,
    policy: Any,
    seeds: Iterable[int] = (0, 1, 2),
    *,
    days: int = 30,
    split: Any = None,
    rater: Any = None,
    world: Any = None,
    session_config: Any = None,
    history_len: int | None = None,
    confidence: float = 0.95,
    progress: bool = True,
    test: Any = None,
) -> SimulatedMetrics:
    """Run the population of ``env_id``'s world for ``days`` days under ``policy``, once per seed.

    Args:
        env_id: a registered environment id (``"recsim_personas/MovieLens-v1"``).
        policy: anything with ``slate_size`` and ``act_batch(obs)``; an optional ``seed(seed)`` method is
            called with a child of each run's seed, and an optional ``history_len`` attribute sets the
            observation's history length (default: the environment's).
        seeds: root seeds; each spawns the population's and the policy's streams
            (``numpy.random.SeedSequence(seed).spawn(2)``).
        days: days per run.
        split, rater, world, session_config: passed to the environment (give ``world`` to share one load).
        history_len: observation history length (overrides the policy's and the environment's).
        confidence: level of the intervals over seeds.
        progress: a progress bar over seeds.
        test: the split's test ratings (``user_id``, ``item_id``): counts how often the policy showed a user a
            movie it rated in the test part (``shown_test``).

    Raises:
        ConfigError: an unknown environment id (with close matches), bad seeds or days, or a policy that
            returns invalid or seen items.
    """
    import time

    from recsim_personas.envs.model import Population

    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0 for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of non-negative integers, got {list(seeds)!r}.")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be a positive integer, got {days!r}.")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}.")
    slate_size = getattr(policy, "slate_size", None)
    if isinstance(slate_size, bool) or not isinstance(slate_size, int | np.integer) or slate_size < 1:
        raise ConfigError(f"the policy needs a positive integer slate_size, got {slate_size!r}.")
    env = _make_env(
        env_id, split=split, rater=rater, world=world, session_config=session_config, slate_size=int(slate_size)
    )
    base = env.unwrapped
    w, config = base.world, base.config
    if history_len is None:
        history_len = int(getattr(policy, "history_len", None) or base.history_len)
    checked = CheckedPolicy(policy, w.n_items, None if test is None else pair_mask(w, test))
    per_seed: dict[str, list[float]] = {name: [] for name in SIM_METRICS}
    totals, watched, sessions, shown_test, shown_total = [], [], [], [], []
    t0 = time.perf_counter()
    for seed in tqdm(seeds, desc=f"simulating {checked.name}", unit="seed", disable=not progress):
        pop_seq, policy_seq = np.random.SeedSequence(int(seed)).spawn(2)
        if callable(getattr(policy, "seed", None)):
            policy.seed(policy_seq)
        population = Population(w, config, rng=np.random.default_rng(pop_seq))
        checked.reset_counts()
        summary = population.run_days(days, checked, history_len=history_len, progress=False)
        t = summary["totals"]
        totals.append(t)
        values = _seed_metrics(t, w.n_users)
        shown = checked.shown
        values["coverage"] = float((shown > 0).mean())
        values["shown_popularity"] = float(shown @ w.item_popularity / shown.sum()) if shown.sum() else 0.0
        for name in SIM_METRICS:
            per_seed[name].append(values[name])
        watched.append(population.watches())
        sessions.append(population.ended_sessions())
        shown_total.append(int(shown.sum()))
        if test is not None:
            shown_test.append(checked.shown_test)
    env.close()
    return SimulatedMetrics(
        policy=checked.name,
        seeds=tuple(int(s) for s in seeds),
        days=days,
        users=w.n_users,
        confidence=confidence,
        metrics={
            name: interval(per_seed[name], confidence, (0.0, 1.0) if name in RATES else (0.0, math.inf))
            for name in SIM_METRICS
        },
        totals=tuple(totals),
        watched=tuple(watched),
        seconds=time.perf_counter() - t0,
        sessions=tuple(sessions),
        shown_test=tuple(shown_test),
        shown_total=tuple(shown_total),
    )


def pair_mask(world: Any, ratings: Any) -> np.ndarray:
    """True where a world user rated a movie in ``ratings`` (``user_id``, ``item_id``), bool (n_users, n_items);
    ratings of users or movies outside the world are ignored."""
    users = np.searchsorted(world.user_ids, ratings["user_id"].to_numpy(dtype=np.int64))
    items = np.searchsorted(world.item_ids, ratings["item_id"].to_numpy(dtype=np.int64))
    ok = (users < world.n_users) & (items < world.n_items)
    ok[ok] &= world.user_ids[users[ok]] == ratings["user_id"].to_numpy(dtype=np.int64)[ok]
    ok[ok] &= world.item_ids[items[ok]] == ratings["item_id"].to_numpy(dtype=np.int64)[ok]
    mask = np.zeros((world.n_users, world.n_items), dtype=bool)
    mask[users[ok], items[ok]] = True
    return mask


def _seed_metrics(t: Mapping[str, Any], n_users: int) -> dict[str, float]:
    watched, sessions = t["items_watched"], t["sessions"]
    return {
        "mean_rating": float(t["mean_rating"]) if watched else 0.0,
        "like_rate": t["likes"] / watched if watched else 0.0,
        "watch_rate": float(t["watch_rate"] or 0.0),
        "pages_per_session": float(t["pages_per_session"] or 0.0),
        "exit_rate": t["early_exits"] / sessions if sessions else 0.0,
        "returning": 1.0 - t["churned_users"] / n_users,
        "likes_per_user": t["likes"] / n_users,
    }
