"""Off-policy evaluation checked against the simulator: estimates from logs beside the targets' true values.

:func:`evaluate_offpolicy` runs, per seed: :func:`~recsim_personas.ope.logs.log_sessions` (the behaviour's pages
with exact propensities and each target's exact value at the logged contexts), the cross-fitted reward model
(:mod:`.reward_model`), every estimator of :mod:`.estimators` for every target, the targets' distance from the
behaviour, and optionally each target's own on-policy page reward (:func:`~recsim_personas.ope.logs.run_on_policy`,
same environment seed: it differs from the value at the logged contexts because a target leads the users
through other states). Over the seeds, :class:`~recsim_personas.ope.report.OPEReport` gives each estimator's bias,
RMSE, relative error and interval coverage per target.

**The estimand** is a contextual slate bandit's: ``V(π) = (1/n) Σ_t E_{s~π(x_t)} Σ_{i∈s} q(x_t, i)`` over the
logged contexts ``x_t`` (:mod:`.truth`). The simulator's items are rewarded independently of their slot and of the
other items of the page, so item-level estimators (IIPS, DR) are unbiased here; that is a property of this
simulator (stated, and used), not of recommendation in general.

With ``out``, each seed's results are written atomically to ``out/seeds/seed-<s>.json`` and reused by a later
run with the same settings (other settings are refused), so a long run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from recsim_personas._io import write_json
from recsim_personas.errors import ArtifactError, ConfigError, config_from_dict, unknown_choice
from recsim_personas.ope import estimators as est
from recsim_personas.ope.policies import PolicySpec

if TYPE_CHECKING:
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.world import World
    from recsim_personas.ope.logs import OPELog
    from recsim_personas.ope.policies import ScoreBank
    from recsim_personas.ope.report import OPEReport

logger = logging.getLogger(__name__)

RESULT_VERSION = 1


@dataclass(frozen=True)
class OPEConfig:
    """Settings of an off-policy evaluation run (defaults work on ML-100K).

    Attributes:
        behaviour: the behaviour policy's spec, stochastic (pl:SCORES@T; see recsim_personas/ope/policies.py).
        targets: the target policies' specs (comma-separated on the command line).
        seeds: root seeds; each logs its own pages (comma-separated).
        pages: logged pages per seed.
        num_envs: concurrent sessions of the vector environment (at most the number of users).
        slate_size: items per page.
        reward: per-slot reward: likes (watched and rated at least like_threshold), watches, or rating.
        history_len: history entries in the observation.
        factor_dim: dimension of the item factors behind the affinity score.
        mc_samples: Monte Carlo slates per context of a stochastic target (its truth and its direct method).
        folds: cross-fitting folds of the reward model (by session).
        estimators: the estimators to run (ips, snips, iips, rips, dm, dr, pi).
        confidence: level of the normal-approximation intervals.
        target_error: the relative RMSE the report judges each estimator against.
        on_policy: also run each target itself for its on-policy page reward.
        recbole_dir: a trained RecBole model directory, for the bpr base score.
        rl_dir: a trained RL policy directory, for the rl base score (``greedy:rl`` is that policy).
    """

    behaviour: str = "pl:0.5*pop+affinity"
    targets: tuple[str, ...] = ("pl:0.5*pop+affinity@0.5", "greedy:affinity", "greedy:pop")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    pages: int = 5000
    num_envs: int = 64
    slate_size: int = 10
    reward: Literal["likes", "watches", "rating"] = "likes"
    history_len: int = 20
    factor_dim: int = 32
    mc_samples: int = 8
    folds: int = 2
    estimators: tuple[str, ...] = est.ESTIMATORS
    confidence: float = 0.95
    target_error: float = 0.10
    on_policy: bool = True
    recbole_dir: str | None = None
    rl_dir: str | None = None

    def __post_init__(self) -> None:
        behaviour = PolicySpec.parse(self.behaviour)
        if behaviour.kind != "pl":
            raise ConfigError(f"OPEConfig.behaviour must be a stochastic policy (pl:...), got {self.behaviour!r}.")
        if isinstance(self.targets, str) or not self.targets:
            raise ConfigError(f"OPEConfig.targets must be a non-empty tuple of policy specs, got {self.targets!r}.")
        canonical = [str(PolicySpec.parse(t)) for t in self.targets]
        if len(set(canonical)) != len(canonical):
            raise ConfigError(f"OPEConfig.targets names a policy twice: {list(self.targets)!r}.")
        seeds = self.seeds
        if (
            isinstance(seeds, str)
            or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
        ):
            raise ConfigError(f"OPEConfig.seeds must be a non-empty tuple of non-negative integers, got {seeds!r}.")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"OPEConfig.seeds must be distinct, got {seeds!r}.")
        for name in ("pages", "num_envs", "slate_size", "history_len", "factor_dim", "mc_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"OPEConfig.{name} must be a positive integer, got {value!r}.")
        if self.mc_samples < 2:
            raise ConfigError(
                f"OPEConfig.mc_samples must be at least 2 (for the truth's error), got {self.mc_samples!r}."
            )
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"OPEConfig.folds must be an integer >= 2, got {self.folds!r}.")
        if self.reward not in ("likes", "watches", "rating"):
            raise unknown_choice("OPEConfig.reward", str(self.reward), ("likes", "watches", "rating"))
        if isinstance(self.estimators, str) or not self.estimators:
            raise ConfigError(f"OPEConfig.estimators must be a non-empty tuple, got {self.estimators!r}.")
        for name in self.estimators:
            if name not in est.ESTIMATORS:
                raise unknown_choice("OPEConfig.estimators entry", str(name), est.ESTIMATORS)
        if not 0 < self.confidence < 1:
            raise ConfigError(f"OPEConfig.confidence must be in (0, 1), got {self.confidence!r}.")
        if not self.target_error > 0:
            raise ConfigError(f"OPEConfig.target_error must be > 0, got {self.target_error!r}.")

    @property
    def target_names(self) -> tuple[str, ...]:
        """The targets' canonical spec strings (the keys of the results)."""
        return tuple(str(PolicySpec.parse(t)) for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OPEConfig:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return config_from_dict(cls, d, "OPEConfig field")


def _ess(weights: np.ndarray) -> float:
    """Effective sample size share ``(Σ w)² / (Σ w² · count)`` (0 when every weight is 0)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    sq = float((w**2).sum())
    return float(w.sum() ** 2 / (sq * w.size)) if sq > 0 else 0.0


def estimate_target(
    log: OPELog,
    spec: str,
    *,
    logged_predictions: np.ndarray | None,
    target_predictions: np.ndarray | None,
    estimators: Sequence[str] = est.ESTIMATORS,
    uniform_behaviour: bool = False,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Every estimator's estimate of one target from one log, with the truth and the distance.

    Args:
        log: the logs (with the target among its targets).
        spec: the target's canonical spec.
        logged_predictions: ``q̂`` of the logged items, float (n, k) (for dm/dr; ``None`` skips them).
        target_predictions: ``q̂`` on the target's slates, float (n, M, k).
        estimators: which to run.
        uniform_behaviour: the behaviour is uniform (the closed-form ``pi`` applies).
        confidence: interval level.

    Returns:
        ``{"truth", "truth_se", "distance": {...}, "estimates": {name: {"value", "se", "low", "high"} or
        {"value": None, "reason": ...}}}``.
    """
    t = log.targets[spec]
    r = log.rewards
    out: dict[str, dict[str, Any]] = {}
    for name in estimators:
        try:
            if name == "ips":
                e = est.ips(r, t.logp, log.behaviour_logp)
            elif name == "snips":
                e = est.snips(r, t.logp, log.behaviour_logp)
            elif name == "iips":
                e = est.iips(r, t.inclusion, log.behaviour_inclusion)
            elif name == "rips":
                e = est.rips(r, t.logp, log.behaviour_logp)
            elif name == "dm":
                if target_predictions is None:
                    raise ConfigError("no reward model predictions")
                e = est.dm(target_predictions)
            elif name == "dr":
                if target_predictions is None or logged_predictions is None:
                    raise ConfigError("no reward model predictions")
                e = est.dr(r, logged_predictions, t.inclusion, log.behaviour_inclusion, target_predictions)
            elif name == "pi":
                if not uniform_behaviour:
                    out[name] = {
                        "value": None,
                        "reason": "needs the behaviour's pairwise inclusion matrix: computed only for a uniform"
                        " behaviour (closed form)",
                    }
                    continue
                e = est.pseudo_inverse_uniform(r, t.inclusion, log.n_allowed)
            else:
                raise unknown_choice("estimator", name, est.ESTIMATORS)
        except ConfigError as exc:
            out[name] = {"value": None, "reason": str(exc)}
            continue
        if not np.isfinite(e.value):
            out[name] = {"value": None, "reason": "undefined: no logged slate has a positive weight"}
            continue
        low, high = e.interval(confidence)
        out[name] = {"value": e.value, "se": e.se, "low": low, "high": high}
    slate_w = est.slate_weights(t.logp, log.behaviour_logp)
    item_w = np.divide(
        t.inclusion, log.behaviour_inclusion, out=np.zeros_like(t.inclusion), where=log.behaviour_inclusion > 0
    )
    distance = {
        "kl_first": float(t.kl_first.mean()),
        "ess_item": _ess(item_w),
        "ess_slate": _ess(slate_w),
        "max_item_weight": float(item_w.max(initial=0.0)),
    }
    return {"truth": t.truth_value, "truth_se": t.truth_se, "distance": distance, "estimates": out}


def evaluate_seed(
    world: World,
    bank: ScoreBank,
    config: OPEConfig,
    seed: int,
    *,
    session_config: SessionConfig | None = None,
    logs_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """One seed: log, fit the reward model, estimate every target, and (optionally) run the targets on-policy.

    Returns:
        a JSON-able dict: ``seed``, ``pages``, ``sessions``, ``behaviour_value`` (logged mean page reward),
        ``behaviour_expected`` (its simulator expectation), ``seconds`` and ``targets`` ``{spec: ...}`` (see
        :func:`estimate_target`, plus ``on_policy``).
    """
    from recsim_personas.ope.logs import log_sessions, run_on_policy
    from recsim_personas.ope.policies import SlatePolicy
    from recsim_personas.ope.reward_model import cross_fitted_predictions

    t0 = time.perf_counter()
    common = {
        "num_envs": config.num_envs,
        "slate_size": config.slate_size,
        "history_len": config.history_len,
        "reward": config.reward,
        "session_config": session_config,
    }
    names = config.target_names
    log = log_sessions(
        world,
        config.behaviour,
        names,
        bank=bank,
        pages=config.pages,
        seed=seed,
        mc_samples=config.mc_samples,
        progress=progress,
        **common,
    )
    if logs_dir is not None:
        log.save(logs_dir / f"seed-{seed}")
    need_model = any(name in config.estimators for name in ("dm", "dr"))
    predictions: list[np.ndarray] | None = None
    if need_model:
        sets = [log.slates] + [log.targets[n].slates.reshape(log.n_pages, -1) for n in names]
        predictions = cross_fitted_predictions(log, bank, sets, folds=config.folds, seed=seed)
    uniform = SlatePolicy(config.behaviour, bank, config.slate_size).uniform
    targets = {}
    for i, name in enumerate(names):
        shape = log.targets[name].slates.shape
        row = estimate_target(
            log,
            name,
            logged_predictions=predictions[0] if predictions else None,
            target_predictions=predictions[i + 1].reshape(shape) if predictions else None,
            estimators=config.estimators,
            uniform_behaviour=uniform,
            confidence=config.confidence,
        )
        row["on_policy"] = (
            run_on_policy(world, name, bank=bank, pages=config.pages, seed=seed, **common) if config.on_policy else None
        )
        targets[name] = row
    return {
        "seed": int(seed),
        "pages": log.n_pages,
        "sessions": int(np.unique(log.session).size),
        "behaviour_value": log.behaviour_value,
        "behaviour_expected": float(log.expected.sum(axis=1).mean()),
        "seconds": time.perf_counter() - t0,
        "targets": targets,
    }


def _recorded_settings(config: OPEConfig, world: World, session_config: SessionConfig | None) -> dict[str, Any]:
    """What a per-seed result depends on besides its seed."""
    from recsim_personas.ope.logs import world_description

    d = config.to_dict()
    d.pop("seeds")
    d.pop("target_error")  # only the report judges against it
    d["world"] = world_description(world)
    sessions = session_config or world.session_config
    d["session_config"] = sessions.to_dict() if sessions is not None else None
    for key in ("recbole_dir", "rl_dir"):  # a model retrained in the same directory invalidates the results
        if d.get(key) is not None:
            from recsim_personas.artifacts import manifest_digest

            d[key + "_manifest"] = manifest_digest(d[key])
    return d


def _load_seed(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    from recsim_personas.artifacts import describe_differences

    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable per-seed result ({exc}). Fix: delete it to recompute it.") from exc
    if stored.get("version") != RESULT_VERSION or stored.get("settings") != settings:
        diff = describe_differences(stored.get("settings") or {}, settings)
        raise ArtifactError(
            f"{path} was computed with other settings ({diff}). Fix: use another --out directory or remove it."
        )
    return stored["result"]


def evaluate_offpolicy(
    split_or_world: Any,
    behaviour: str | None = None,
    targets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    *,
    config: OPEConfig | None = None,
    rater: Any = None,
    choice: Any = None,
    session_config: SessionConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    save_logs: bool = False,
    progress: bool = True,
) -> OPEReport:
    """Estimate target policies' values from a behaviour's logs and check them against the simulator.

    Args:
        split_or_world: a split directory, a loaded ``Split`` or a ``World`` (``make_world``).
        behaviour: the behaviour's spec (overrides ``config.behaviour``).
        targets: the targets' specs (override ``config.targets``).
        seeds: root seeds (override ``config.seeds``).
        config: the other settings (default :class:`OPEConfig`).
        rater: the rater when a split is given (default ``"bias"``).
        choice: the choice model when a split is given (default ``"fitted"``).
        session_config: behaviour coefficients (default: the world's).
        out: a directory for per-seed results (resumable) and, with ``save_logs``, the logs.
        save_logs: write each seed's :class:`~recsim_personas.ope.logs.OPELog` to ``out/logs/seed-<s>``.
        progress: progress bars.

    Returns:
        the :class:`~recsim_personas.ope.report.OPEReport` (call ``save(out)`` for report.json/.md/.png).
    """
    from recsim_personas.envs.world import as_world
    from recsim_personas.ope.logs import world_description
    from recsim_personas.ope.policies import ScoreBank
    from recsim_personas.ope.report import OPEReport

    config = config or OPEConfig()
    overrides = {"behaviour": behaviour, "targets": targets, "seeds": seeds}
    given = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in overrides.items() if v is not None}
    if given:
        config = dataclasses.replace(config, **given)
    if save_logs and out is None:
        raise ConfigError("save_logs needs out= (the directory the logs go to).")
    t0 = time.perf_counter()
    world = as_world(split_or_world, rater, choice=choice)
    if config.num_envs > world.n_users:
        raise ConfigError(f"OPEConfig.num_envs ({config.num_envs}) exceeds the world's {world.n_users} users.")
    split = None
    if config.recbole_dir is not None:
        from recsim_personas.envs.world import World

        if isinstance(split_or_world, World):
            raise ConfigError(
                "recbole_dir needs the split the RecBole model was trained on. Fix: pass the split (a directory or a"
                " Split) instead of a World, with rater= and choice=."
            )
        split = split_or_world
    bank = ScoreBank(
        world, factor_dim=config.factor_dim, recbole_dir=config.recbole_dir, split=split, rl_dir=config.rl_dir
    )
    settings = _recorded_settings(config, world, session_config)
    out_dir = Path(out) if out is not None else None
    results, reused = [], []
    for seed in tqdm(config.seeds, desc="off-policy evaluation", unit="seed", disable=not progress):
        path = out_dir / "seeds" / f"seed-{seed}.json" if out_dir is not None else None
        stored = _load_seed(path, settings) if path is not None else None
        if stored is not None:
            logger.info("seed %d: reusing %s", seed, path)
            results.append(stored)
            reused.append(int(seed))
            continue
        result = evaluate_seed(
            world,
            bank,
            config,
            seed,
            session_config=session_config,
            logs_dir=out_dir / "logs" if save_logs and out_dir is not None else None,
            progress=progress,
        )
        if path is not None:
            write_json(path, {"version": RESULT_VERSION, "settings": settings, "result": result})
        results.append(result)
    return OPEReport(
        config=config,
        world=world_description(world),
        per_seed=tuple(results),
        seconds=time.perf_counter() - t0,
        reused=tuple(reused),
    )
