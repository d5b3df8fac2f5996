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

Backends. ``backend="local"`` runs the work units one after another in this process; ``backend="ray"`` spreads
them over Ray tasks (a local ``ray.init(num_cpus=num_workers)``, or the cluster at ``ray_address``; a session
that is already initialised is used as it is). A *work unit* is one (policy, seed) run — or, for a policy
without a ``seed`` method, all of that policy's seeds in order, since its random state carries from one seed
to the next. The world, the test mask and each policy are put in Ray's object store once; every unit runs
:func:`_run_seed`, the same function the local backend runs, so the figures are identical. Users of one run are
**not** sharded: they share the population's simulated clock, its one random generator (drawn in the order of
the sessions' start minutes) and the rater's batched calls per step, and coverage is a property of the whole
run, so splitting a population would change the figures.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recsim_personas.errors import ConfigError, RecsimPersonasError, unknown_choice

logger = logging.getLogger(__name__)

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
BACKENDS = ("local", "ray")
"""Where the simulation runs: in this process, or spread over Ray tasks."""
RAY_FIX = "Fix: pip install 'recsim-personas[ray]'"


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
        traces: per seed, the :class:`~recsim_personas.envs.trace.TraceRecord` (when run with ``trace``).
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
    traces: tuple[Any, ...] = field(default=(), repr=False)

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


def check_backend(
    backend: Any, ray_address: Any = None, num_workers: Any = None, owner: str = "", workers_name: str = "num_workers"
) -> None:
    """Validate the simulation backend's settings (``owner`` prefixes the field names in the messages,
    ``workers_name`` is the caller's name for ``num_workers``).

    Raises:
        ConfigError: an unknown backend (with close matches), a ``ray_address`` that is not a non-empty string,
            a ``num_workers`` that is not a positive integer, or either given with the local backend.
    """
    if backend not in BACKENDS:
        raise unknown_choice(f"{owner}backend", str(backend), BACKENDS)
    if ray_address is not None and (not isinstance(ray_address, str) or not ray_address.strip()):
        raise ConfigError(
            f"{owner}ray_address must be a Ray cluster address such as 'ray://host:10001', got {ray_address!r}."
        )
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer) or num_workers < 1
    ):
        raise ConfigError(f"{owner}{workers_name} must be a positive integer (or None: all CPUs), got {num_workers!r}.")
    if backend == "local" and (ray_address is not None or num_workers is not None):
        given = "ray_address" if ray_address is not None else workers_name
        raise ConfigError(
            f"{owner}{given} applies to the Ray backend only, got {given} with backend='local'. Fix: backend='ray'."
        )


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ConfigError: Ray is not installed (names the extra to install).
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"backend='ray' needs Ray, which is not installed ({exc}). {RAY_FIX}") from exc
    return ray


@contextmanager
def ray_session(ray_address: str | None = None, num_workers: int | None = None) -> Iterator[Any]:
    """A Ray session for the duration of the block: the one already initialised if there is one (left running),
    else ``ray.init(address=ray_address)`` or a local ``ray.init(num_cpus=num_workers or os.cpu_count())``, shut
    down at the end. Yields the ``ray`` module.

    Raises:
        ConfigError: Ray is not installed.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if ray_address is not None:
        ray.init(address=ray_address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


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
    backend: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    trace: Any = None,
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
        backend: ``"local"`` (this process) or ``"ray"`` (Ray tasks, one per seed; see the module docstring:
            the same figures as ``"local"``). With Ray the world and the policy are sent to the workers
            (cloudpickle), and the local backend's policy object is not advanced by the runs.
        ray_address: a Ray cluster to connect to (default: an initialised session, else a local one).
        num_workers: at most this many units run at once (default: the session's CPUs); also the
            ``num_cpus`` of a local session started here.
        trace: a :class:`~recsim_personas.envs.trace.TraceConfig`: record every seed's sessions of a sample of
            users (:attr:`SimulatedMetrics.traces`); the same sample of users for every policy and seed.

    Raises:
        ConfigError: an unknown environment id (with close matches), bad seeds or days, a bad backend setting,
            Ray not installed with ``backend="ray"``, or a policy that returns invalid or seen items.
    """
    return evaluate_policies(
        env_id,
        [policy],
        seeds,
        days=days,
        split=split,
        rater=rater,
        world=world,
        session_config=session_config,
        history_len=history_len,
        confidence=confidence,
        progress=progress,
        test=test,
        backend=backend,
        ray_address=ray_address,
        num_workers=num_workers,
        trace=trace,
    )[0]


def evaluate_policies(
    env_id: str,
    policies: Sequence[Any],
    seeds: Iterable[int] = (0, 1, 2),
    *,
    return_errors: bool = False,
    **kwargs: Any,
) -> list[Any]:
    """:func:`evaluate_policy` for several policies at once: with ``backend="ray"`` all (policy, seed) units are
    spread over the workers together (several policies keep both workers busy where one policy's three seeds
    would leave one idle). Keyword arguments as :func:`evaluate_policy`; ``history_len`` applies to every policy.

    Returns:
        one :class:`SimulatedMetrics` per policy, in order; with ``return_errors``, a policy whose run raised a
        :class:`~recsim_personas.errors.RecsimPersonasError` gets that error in its place instead of the call
        raising it.
    """
    import inspect
    import time

    params = inspect.signature(evaluate_policy).parameters
    known = [k for k in params if k not in ("env_id", "policy", "seeds")]
    unknown = [k for k in kwargs if k not in known]
    if unknown:
        raise unknown_choice("evaluate_policies argument", unknown[0], known)
    kwargs = {k: kwargs.get(k, params[k].default) for k in known}  # evaluate_policy's defaults, stated once
    days, confidence, progress, test = kwargs["days"], kwargs["confidence"], kwargs["progress"], kwargs["test"]
    backend, ray_address, num_workers = kwargs["backend"], kwargs["ray_address"], kwargs["num_workers"]
    trace = kwargs["trace"]
    if trace is not None:
        from recsim_personas.envs.trace import TraceConfig

        if not isinstance(trace, TraceConfig):
            raise ConfigError(f"trace must be a TraceConfig or None, got {type(trace).__name__}.")
    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0 for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of non-negative integers, got {list(seeds)!r}.")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be a positive integer, got {days!r}.")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}.")
    check_backend(backend, ray_address, num_workers)
    if not policies:
        raise ConfigError("evaluate_policies needs at least one policy, got none.")
    sizes = {int(_slate_size(p)) for p in policies}
    if len(sizes) != 1:
        raise ConfigError(f"the policies must share one slate_size, got {sorted(sizes)}.")
    if backend == "ray":
        import_ray()  # fail before any work
    env = _make_env(
        env_id,
        split=kwargs["split"],
        rater=kwargs["rater"],
        world=kwargs["world"],
        session_config=kwargs["session_config"],
        slate_size=sizes.pop(),
    )
    base = env.unwrapped
    w, config = base.world, base.config
    env.close()
    history_len = kwargs["history_len"]
    lens = [int(history_len or getattr(p, "history_len", None) or base.history_len) for p in policies]
    mask = None if test is None else pair_mask(w, test)
    names = [str(getattr(p, "name", type(p).__name__)) for p in policies]
    # a unit: (policy index, the seeds it runs in order); a policy without seed() keeps its state across seeds
    units = [
        (i, (int(s),) if callable(getattr(p, "seed", None)) else tuple(int(x) for x in seeds))
        for i, p in enumerate(policies)
        for s in (seeds if callable(getattr(p, "seed", None)) else seeds[:1])
    ]
    desc = f"simulating {names[0]}" if len(policies) == 1 else f"simulating {len(policies)} policies"
    bar = tqdm(total=len(policies) * len(seeds), desc=desc, unit="run", disable=not progress)
    t0 = time.perf_counter()
    runs: dict[int, list[Any]] = {}
    if backend == "local":
        for i, unit_seeds in units:
            try:
                runs.setdefault(i, []).extend(_run_unit(w, config, policies[i], unit_seeds, days, lens[i], mask, trace))
            except RecsimPersonasError as exc:
                if not return_errors:
                    raise
                runs[i] = [exc]
            bar.update(len(unit_seeds))
    else:
        outcome = _ray_units(units, w, config, policies, days, lens, mask, ray_address, num_workers, bar, trace)
        for key in range(len(units)):
            i = units[key][0]
            result = outcome[key]
            if isinstance(result, RecsimPersonasError) and not return_errors:
                raise result
            runs.setdefault(i, []).extend([result] if isinstance(result, RecsimPersonasError) else result)
    bar.close()
    wall = time.perf_counter() - t0
    out: list[Any] = []
    for i, name in enumerate(names):
        error = next((r for r in runs[i] if isinstance(r, RecsimPersonasError)), None)
        out.append(error if error is not None else _metrics(name, runs[i], seeds, days, w.n_users, confidence, test))
    logger.info("simulated %d policies x %d seeds on %s in %.1fs", len(policies), len(seeds), backend, wall)
    return out


def _slate_size(policy: Any) -> int:
    slate_size = getattr(policy, "slate_size", None)
    if isinstance(slate_size, bool) or not isinstance(slate_size, int | np.integer) or slate_size < 1:
        raise ConfigError(f"the policy needs a positive integer slate_size, got {slate_size!r}.")
    return int(slate_size)


def _run_unit(
    world: Any,
    config: Any,
    policy: Any,
    seeds: Sequence[int],
    days: int,
    history_len: int,
    mask: Any,
    trace: Any = None,
) -> list[dict[str, Any]]:
    """Run ``policy`` for each of ``seeds`` in order (:func:`_run_seed`); the work of a Ray task."""
    checked = CheckedPolicy(policy, world.n_items, mask)
    return [_run_seed(world, config, checked, seed, days, history_len, trace) for seed in seeds]


def _run_seed(
    world: Any, config: Any, checked: CheckedPolicy, seed: int, days: int, history_len: int, trace: Any = None
) -> dict[str, Any]:
    """One seed's run: a fresh population for ``days`` days under the policy; both backends run this."""
    import time

    from recsim_personas.envs.model import Population

    t0 = time.perf_counter()
    pop_seq, policy_seq = np.random.SeedSequence(int(seed)).spawn(2)
    if callable(getattr(checked.policy, "seed", None)):
        checked.policy.seed(policy_seq)
    population = Population(world, config, rng=np.random.default_rng(pop_seq))
    if trace is not None:
        from recsim_personas.envs.trace import Tracer

        population.tracer = Tracer(world, trace)
    checked.reset_counts()
    summary = population.run_days(days, checked, history_len=history_len, progress=False)
    t = summary["totals"]
    values = _seed_metrics(t, world.n_users)
    shown = checked.shown
    values["coverage"] = float((shown > 0).mean())
    values["shown_popularity"] = float(shown @ world.item_popularity / shown.sum()) if shown.sum() else 0.0
    return {
        "totals": t,
        "values": values,
        "watched": population.watches(),
        "sessions": population.ended_sessions(),
        "shown_total": int(shown.sum()),
        "shown_test": checked.shown_test,
        "seconds": time.perf_counter() - t0,
        "trace": None if population.tracer is None else population.tracer.result(),
    }


def _ray_units(
    units: Sequence[tuple[int, tuple[int, ...]]],
    world: Any,
    config: Any,
    policies: Sequence[Any],
    days: int,
    lens: Sequence[int],
    mask: Any,
    ray_address: str | None,
    num_workers: int | None,
    bar: Any,
    trace: Any = None,
) -> list[Any]:
    """Each unit's runs (or its RecsimPersonasError), run as Ray tasks, at most ``num_workers`` at a time."""
    with ray_session(ray_address, num_workers) as ray:
        from ray.exceptions import RayTaskError

        world_ref, mask_ref = ray.put(world), ray.put(mask)
        policy_refs = [ray.put(p) for p in policies]
        task = ray.remote(num_cpus=1, max_retries=0)(_run_unit)
        window = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        out: list[Any] = [None] * len(units)
        pending: dict[Any, int] = {}
        todo = iter(range(len(units)))

        def submit() -> None:
            for key in todo:
                i, unit_seeds = units[key]
                ref = task.remote(world_ref, config, policy_refs[i], unit_seeds, days, lens[i], mask_ref, trace)
                pending[ref] = key
                if len(pending) >= window:
                    return

        submit()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ref)
            try:
                out[key] = ray.get(ref)
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if not isinstance(cause, RecsimPersonasError):
                    raise
                out[key] = cause
            bar.update(len(units[key][1]))
            submit()
    return out


def _metrics(
    name: str,
    runs: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    days: int,
    n_users: int,
    confidence: float,
    test: Any,
) -> SimulatedMetrics:
    """A policy's :class:`SimulatedMetrics` from its per-seed runs (in seed order)."""
    return SimulatedMetrics(
        policy=name,
        seeds=tuple(int(s) for s in seeds),
        days=days,
        users=n_users,
        confidence=confidence,
        metrics={
            m: interval([r["values"][m] for r in runs], confidence, (0.0, 1.0) if m in RATES else (0.0, math.inf))
            for m in SIM_METRICS
        },
        totals=tuple(r["totals"] for r in runs),
        watched=tuple(r["watched"] for r in runs),
        seconds=float(sum(r["seconds"] for r in runs)),
        sessions=tuple(r["sessions"] for r in runs),
        shown_test=tuple(r["shown_test"] for r in runs) if test is not None else (),
        shown_total=tuple(r["shown_total"] for r in runs),
        traces=tuple(r["trace"] for r in runs) if runs and runs[0].get("trace") is not None else (),
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
