"""Running the offline-vs-simulated gap benchmark: do offline metrics rank recommenders the way simulated users do?

:func:`run_gap_benchmark` builds each policy of a :class:`GapConfig` (:mod:`.gap_policies`: Random, Popular,
RecBole models trained on the split's history), measures its offline metrics on the held-out test part
(:func:`~recsim_personas.recommenders.offline.evaluate_offline`, and RecBole's own evaluator for general
RecBole models), runs the simulated population under it for several seeds
(:func:`~recsim_personas.recommenders.simulated.evaluate_policy`, with the config's
:class:`~recsim_personas.envs.session.SessionConfig`), checks the simulator where ground truth exists
(:mod:`.gap_fidelity`) and returns a :class:`~recsim_personas.recommenders.gap_report.GapReport`.

A policy that fails (any :class:`~recsim_personas.errors.RecsimPersonasError`, e.g. a RecBole model that fails
to train) is recorded in the report's ``failures`` and the benchmark goes on with the others; RecBole models
that did train are saved to ``models_dir`` as soon as they are, so a rerun reuses them.

The policies are built and measured offline one after another; then all their simulations run together on
``GapConfig.backend``: ``local`` (this process) or ``ray`` (each (policy, seed) run a Ray task; the same figures,
see :mod:`.simulated`). The report's ``config`` records the backend.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recsim_personas import ENV_IDS
from recsim_personas.envs.session import SessionConfig
from recsim_personas.errors import ConfigError, RecsimPersonasError, config_from_dict
from recsim_personas.recommenders.gap_policies import (
    DEFAULT_POLICIES,
    RECBOLE_PREFIX,
    build_policy,
    parse_policies,
    policy_config,
)
from recsim_personas.recommenders.gap_report import GapReport, PolicyFailure, PolicyResult
from recsim_personas.recommenders.simulated import check_backend

if TYPE_CHECKING:
    from recsim_personas.data.split import Split
    from recsim_personas.envs.world import World

__all__ = [
    "ENV_ID",
    "GapConfig",
    "GapReport",
    "PolicyFailure",
    "PolicyResult",
    "parse_policies",
    "run_gap_benchmark",
]

logger = logging.getLogger(__name__)

ENV_ID = ENV_IDS[0]


@dataclass(frozen=True)
class GapConfig:
    """What the gap benchmark runs; every field is recorded in ``gap.json``.

    Attributes:
        policies: the recommenders to compare: random, pop, recbole:<Model> (any RecBole general or sequential
            model, trained on the split's history), rl:DIR (an RL policy saved for this split, e.g. by
            benchmarks/rl_reinforce.py); comma-separated on the command line.
        rater: the simulated users' rater: bias, another classical rater (global, user, item, mf),
            agents:DIR (persona agents from `agents train --out DIR`, or a USER-LLM agent) or userllm:DIR (a
            USER-LLM agent from `userllm train --out DIR`).
        seeds: simulation seeds (the first also seeds the Random policy's streams and RecBole's training).
        days: simulated days per seed.
        k: offline cut-off (at most ``slate_size``).
        slate_size: items per page.
        epochs: training epochs of every RecBole model (default: the benchmark's per-model settings,
            RECBOLE_DEFAULTS in recommenders/gap_policies.py).
        choice: how the simulated users choose what to watch: ``fitted`` (the choice model and session behaviour
            fitted on the split's history), ``handset`` (the hand-set formula and sessions), or a directory from
            `recsim-personas choice fit`.
        session: the simulated users' behaviour coefficients (default: those that go with ``choice``).
        backend: where the simulations run: local (this process) or ray (Ray tasks, one per policy and seed;
            the same figures; needs pip install 'recsim-personas[ray]').
        workers: with the ray backend, at most this many simulations at once (default: all CPUs of the session).
        ray_address: with the ray backend, the Ray cluster to connect to (default: a local Ray session).
        trace_users: record every page of this many users' sessions (a seeded sample, the same users for every
            policy and seed) into OUT/traces/<policy>/seed-<s> (`recsim-personas view OUT` shows them); off by
            default.
    """

    policies: tuple[str, ...] = DEFAULT_POLICIES
    rater: str = "bias"
    seeds: tuple[int, ...] = (0, 1, 2)
    days: int = 30
    k: int = 10
    slate_size: int = 10
    epochs: int | None = None
    choice: str = "fitted"
    session: SessionConfig | None = None
    backend: Literal["local", "ray"] = "local"
    workers: int | None = None
    ray_address: str | None = None
    trace_users: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", parse_policies(self.policies))
        if not isinstance(self.rater, str) or not self.rater.strip():
            raise ConfigError(
                f"GapConfig.rater must be a rater's name (bias, ...), agents:DIR or userllm:DIR, got {self.rater!r}."
            )
        seeds = self.seeds
        ok = isinstance(seeds, Sequence) and not isinstance(seeds, str) and len(seeds) > 0
        ok = ok and all(not isinstance(s, bool) and isinstance(s, int | np.integer) and s >= 0 for s in seeds)
        if not ok or len(set(seeds)) != len(seeds):
            raise ConfigError(f"GapConfig.seeds must be distinct non-negative integers, got {seeds!r}.")
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        optional = tuple(n for n in ("epochs", "trace_users") if getattr(self, n) is not None)
        for name in ("days", "k", "slate_size", *optional):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GapConfig.{name} must be a positive integer, got {value!r}.")
        if self.k > self.slate_size:
            raise ConfigError(
                f"GapConfig.k must be at most slate_size = {self.slate_size} (the offline metrics read the top k"
                f" of a slate), got {self.k!r}. Fix: a smaller k or a larger slate_size."
            )
        if not isinstance(self.choice, str) or not self.choice.strip():
            raise ConfigError(
                f"GapConfig.choice must be fitted, handset or a choice-model directory, got {self.choice!r}."
            )
        if isinstance(self.session, Mapping):
            object.__setattr__(self, "session", SessionConfig.from_dict(dict(self.session)))
        if self.session is not None and not isinstance(self.session, SessionConfig):
            raise ConfigError(f"GapConfig.session must be a SessionConfig, got {type(self.session).__name__}.")
        check_backend(self.backend, self.ray_address, self.workers, owner="GapConfig.", workers_name="workers")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(
            policies=list(self.policies),
            seeds=list(self.seeds),
            session=None if self.session is None else self.session.to_dict(),
        )
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GapConfig:
        return config_from_dict(cls, d, "GapConfig field")


def run_gap_benchmark(
    split: str | os.PathLike[str] | Split,
    config: GapConfig | None = None,
    *,
    models_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> GapReport:
    """Offline and simulated metrics of each policy on a split, and the gap between them.

    Args:
        split: a split directory or a loaded ``Split``.
        config: what to run (default :class:`GapConfig`).
        models_dir: where trained RecBole models are saved (and reused from when they match).
        progress: progress bars.

    The simulations run on ``config.backend`` (``"ray"``: Ray tasks, ``config.workers`` at a time, on the cluster
    at ``config.ray_address`` or a local session); the figures do not depend on it.

    Returns:
        the report; the policies that failed are in its ``failures``, every other policy's figures in its
        ``results``.

    Raises:
        RecsimPersonasError: a split or rater that cannot be loaded, or ``backend="ray"`` without Ray installed
            (``ConfigError`` naming ``pip install 'recsim-personas[ray]'``); nothing is run.
    """
    from recsim_personas.data import load_split
    from recsim_personas.envs.world import make_world
    from recsim_personas.fidelity.alignment import preference_alignment
    from recsim_personas.fidelity.behaviour import behaviour_statistics, replay_check
    from recsim_personas.fidelity.suite import alignment_summary, choice_description
    from recsim_personas.recommenders.gap_fidelity import rater_on_test, watched_test

    t0 = time.perf_counter()
    config = config or GapConfig()
    split = load_split(split)
    world = make_world(split, config.rater, choice=config.choice)
    session = config.session or world.session_config or SessionConfig()
    like = session.like_threshold
    results: list[PolicyResult] = []
    failures: list[PolicyFailure] = []
    all_watched: list[Mapping[str, np.ndarray]] = []
    traces: dict[str, dict[int, Any]] = {}
    if config.backend == "ray":
        from recsim_personas.recommenders.simulated import import_ray

        import_ray()  # fail before any policy is built
    # 1. build each policy and measure it offline (here); 2. simulate all of them at once (local or on Ray, where
    # every (policy, seed) run is a task); 3. the per-policy results, in the configured order
    built: list[tuple[str, Any, Any, Any, Any, float]] = []
    for name in config.policies:
        logger.info("policy %s", name)
        settings = policy_config(name, seed=config.seeds[0], epochs=config.epochs)
        settings = settings.to_dict() if settings is not None else None
        stage = "build"
        try:
            policy = build_policy(
                name,
                split,
                world,
                slate_size=config.slate_size,
                seed=config.seeds[0],
                epochs=config.epochs,
                models_dir=models_dir,
                progress=progress,
            )
            stage = "offline"
            t1 = time.perf_counter()
            offline, recbole = _offline(name, policy, split, world, config)
            built.append((name, policy, offline, recbole, settings, time.perf_counter() - t1))
        except RecsimPersonasError as exc:
            logger.warning("policy %s failed while %s (%s); going on with the others", name, stage, exc)
            failures.append(PolicyFailure(name, stage, type(exc).__name__, str(exc), settings))
    sims = _simulate([b[1] for b in built], world, config, session, split.test, progress) if built else []
    for (name, policy, offline, recbole, settings, offline_seconds), sim in zip(built, sims, strict=True):
        if isinstance(sim, RecsimPersonasError):
            logger.warning("policy %s failed while simulate (%s); going on with the others", name, sim)
            failures.append(PolicyFailure(name, "simulate", type(sim).__name__, str(sim), settings))
            continue
        all_watched += list(sim.watched)
        if sim.traces:
            traces[name] = dict(zip(sim.seeds, sim.traces, strict=True))
        results.append(
            PolicyResult(
                name=name,
                offline={m: getattr(offline, m) for m in ("recall", "ndcg", "mrr")},
                simulated={m: v.to_dict() for m, v in sim.metrics.items()},
                recbole=recbole,
                train_seconds=getattr(policy, "train_seconds", None),
                offline_seconds=offline_seconds,
                simulated_seconds=sim.seconds,
                watched_test=watched_test(sim.watched, split.test, split.train, like_threshold=like),
                config=settings,
                behaviour=behaviour_statistics(world, split.test, sim.watched, sim.sessions, train=split.train),
                replay=replay_check(sim, split.test),
            )
        )
    order = {name: k for k, name in enumerate(config.policies)}
    failures.sort(key=lambda f: order[f.name])
    fidelity = {
        "rater_on_test": rater_on_test(world, split.test, seed=config.seeds[0], like_threshold=like),
        "watched_test": watched_test(all_watched, split.test, split.train, like_threshold=like),
        "alignment": alignment_summary(
            preference_alignment(world, split.test, train=split.train, history=split.history(), seed=config.seeds[0])
        ),
        "choice": choice_description(world),
        "session": session.to_dict(),
    }
    return GapReport(
        split_id=split.split_id,
        config=config,
        rater=world.rater_name,
        users=world.n_users,
        results=results,
        fidelity=fidelity,
        failures=failures,
        rater_artifact=rater_artifact(config.rater, world),
        wall_seconds=time.perf_counter() - t0,
        versions=_versions(config.policies, config.backend),
        traces=traces,
        split_path=None if split.path is None else str(split.path),
    )


def _offline(name: str, policy: Any, split: Split, world: World, config: GapConfig) -> tuple[Any, Any]:
    """The policy's offline metrics, and RecBole's own evaluator's for a general RecBole model at k = 10."""
    from recsim_personas.recommenders.offline import evaluate_offline

    if callable(getattr(policy, "seed", None)):
        policy.seed(np.random.SeedSequence(config.seeds[0]))
    offline = evaluate_offline(policy, world, split.test, k=config.k)
    recbole = None
    if name.startswith(RECBOLE_PREFIX) and policy.kind == "general" and config.k == 10:
        from recsim_personas.recommenders.recbole_policy import recbole_evaluate

        recbole = recbole_evaluate(policy, split)
    return offline, recbole


def _simulate(
    policies: Sequence[Any], world: World, config: GapConfig, session: SessionConfig, test: Any, progress: bool
) -> list[Any]:
    """Each policy's simulated metrics, or the RecsimPersonasError its runs raised, on the config's backend."""
    from recsim_personas.envs.trace import TraceConfig
    from recsim_personas.recommenders.simulated import evaluate_policies

    return evaluate_policies(
        ENV_ID,
        policies,
        config.seeds,
        days=config.days,
        world=world,
        session_config=session,
        progress=progress,
        test=test,
        backend=config.backend,
        ray_address=config.ray_address,
        num_workers=config.workers,
        return_errors=True,
        trace=None if config.trace_users is None else TraceConfig(users=config.trace_users, seed=config.seeds[0]),
    )


def rater_artifact(spec: str, world: World) -> dict[str, Any]:
    """What the simulated users' rater is: ``spec`` as given, its ``name``, and for trained agents (``agents:DIR``:
    persona agents or a USER-LLM agent; ``userllm:DIR``) the directory and the sha256 of its manifest
    (``artifact_id``); a classical rater has no artifact (it is fitted on the split's history:
    ``fitted_on_split``)."""
    from recsim_personas.artifacts import manifest_digest
    from recsim_personas.envs.world import parse_rater

    out: dict[str, Any] = {"spec": spec, "name": world.rater_name, "artifact_id": None, "path": None}
    kind, path = parse_rater(spec)
    if kind == "remote":  # the agents behind the server, and where the server was
        from recsim_personas.envs.world import read_remote_spec

        agents_dir, remote = read_remote_spec(path)
        out.update(path=agents_dir, artifact_id=manifest_digest(agents_dir), remote_base_url=remote.base_url)
    elif kind != "classical":
        out.update(path=path, artifact_id=manifest_digest(path))
    else:
        out["fitted_on_split"] = world.split_id
    return out


def _versions(policies: Sequence[str], backend: str = "local") -> dict[str, str | None]:
    from recsim_personas.artifacts import library_versions

    recbole = ("recbole", "torch") if any(n.startswith(RECBOLE_PREFIX) for n in policies) else ()
    ray = ("ray",) if backend == "ray" else ()
    return library_versions("scipy", "pandas", "mesa", "gymnasium", *recbole, *ray)
