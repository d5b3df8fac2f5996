"""The gap report's figures: per-policy results, failures, both rankings, Kendall τ, deltas, and its JSON.

:class:`GapReport` holds what :func:`~recsim_personas.recommenders.gap.run_gap_benchmark` measured and
derives the rest (rankings, τ, deltas) on demand. Its prose comes from
:mod:`~recsim_personas.recommenders.gap_reading`, its markdown from
:mod:`~recsim_personas.recommenders.gap_markdown`, its plot from :mod:`~recsim_personas.recommenders.gap_plot`;
:meth:`GapReport.save` writes ``gap.md``, ``gap.json`` and ``gap.png``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsim_personas._io import atomic_write_text, write_json
from recsim_personas.recommenders.simulated import SIM_METRICS

if TYPE_CHECKING:
    from recsim_personas.recommenders.gap import GapConfig

HEADLINE_OFFLINE = "ndcg"
HEADLINE_SIMULATED = "likes_per_user"


@dataclass
class PolicyResult:
    """One finished policy's figures.

    Attributes:
        name: the benchmark name (``random``, ``pop``, ``recbole:<Model>``).
        offline: ``recall``, ``ndcg``, ``mrr`` at the report's ``k``.
        simulated: per simulated metric, ``mean``, ``low``, ``high``, ``per_seed``.
        recbole: RecBole's own evaluator (``recall@10`` ...) for general RecBole models, else ``None``.
        train_seconds: training wall time (``None`` for built-in policies and reloaded models).
        offline_seconds: wall time of the offline evaluation.
        simulated_seconds: wall time of the simulations.
        watched_test: :func:`~recsim_personas.recommenders.gap_fidelity.watched_test` of its simulations.
        config: the RecBole model's training config (``RecBoleConfig.to_dict()``), ``None`` for built-in ones.
        behaviour: :func:`~recsim_personas.fidelity.behaviour.behaviour_statistics` of its simulations (real test
            behaviour vs simulated, as distances).
        replay: :func:`~recsim_personas.fidelity.behaviour.replay_check` of its simulations.
    """

    name: str
    offline: dict[str, float]
    simulated: dict[str, dict[str, Any]]
    recbole: dict[str, float] | None = None
    train_seconds: float | None = None
    offline_seconds: float = 0.0
    simulated_seconds: float = 0.0
    watched_test: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    behaviour: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyFailure:
    """A policy that failed; the benchmark went on with the others.

    Attributes:
        name: the benchmark name.
        stage: what it was doing: ``"build"`` (training or loading), ``"offline"`` or ``"simulate"``.
        error: the exception's class name (a :class:`~recsim_personas.errors.RecsimPersonasError`).
        message: the exception's message.
        config: the RecBole model's training config, ``None`` for built-in policies.
    """

    name: str
    stage: str
    error: str
    message: str
    config: dict[str, Any] | None = None


@dataclass
class GapReport:
    """The offline-vs-simulated comparison of several policies on one split.

    Attributes:
        split_id: the split's id.
        config: the :class:`~recsim_personas.recommenders.gap.GapConfig` that produced it.
        rater: the simulated users' rater's name.
        users: simulated users.
        results: the finished policies, in the order run.
        fidelity: ``rater_on_test`` and ``watched_test`` (:mod:`~recsim_personas.recommenders.gap_fidelity`),
            ``alignment`` (the preference-alignment summary of the fidelity suite,
            :func:`~recsim_personas.fidelity.suite.alignment_summary`), ``choice`` (the choice model) and
            ``session`` (the behaviour coefficients used).
        failures: the policies that failed, in the order run.
        rater_artifact: what the rater is: ``spec`` (as given), ``name``, ``artifact_id`` (sha256 of a trained
            rater's manifest, ``None`` for a classical rater fitted on the split's history), ``path``,
            ``fitted_on_split``.
        wall_seconds: wall time of the whole benchmark.
        versions: library versions.
        traces: policy → seed → :class:`~recsim_personas.envs.trace.TraceRecord` (with ``trace_users``), saved
            by :meth:`save` into ``traces/<policy>/seed-<s>``.
        split_path: the split's directory (recorded in the traces, so a viewer finds the real users).
    """

    split_id: str
    config: GapConfig
    rater: str
    users: int
    results: list[PolicyResult]
    fidelity: dict[str, Any]
    failures: list[PolicyFailure] = field(default_factory=list)
    rater_artifact: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    versions: dict[str, Any] = field(default_factory=dict)
    traces: dict[str, dict[int, Any]] = field(default_factory=dict, repr=False)
    split_path: str | None = None

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.config.seeds

    @property
    def days(self) -> int:
        return self.config.days

    @property
    def k(self) -> int:
        return self.config.k

    # ------------------------------------------------------------------------------ derived
    def offline_ranking(self) -> list[str]:
        """Policy names by decreasing offline NDCG@k."""
        return [r.name for r in sorted(self.results, key=lambda r: -r.offline[HEADLINE_OFFLINE])]

    def simulated_ranking(self, metric: str = HEADLINE_SIMULATED) -> list[str]:
        """Policy names by decreasing simulated ``metric`` (mean over seeds)."""
        return [r.name for r in sorted(self.results, key=lambda r: -r.simulated[metric]["mean"])]

    def kendall(self) -> dict[str, dict[str, float | None]]:
        """Kendall τ (and its p-value) between offline NDCG@k and each simulated metric over the policies."""
        x = [r.offline[HEADLINE_OFFLINE] for r in self.results]
        return {m: kendall_tau(x, [r.simulated[m]["mean"] for r in self.results]) for m in SIM_METRICS}

    def deltas(self) -> list[dict[str, Any]]:
        """Per policy: offline and simulated rank, the rank shift, and the lift over the Random policy on both
        sides (headline metrics; ``None`` without a ``random`` policy)."""
        off, sim = self.offline_ranking(), self.simulated_ranking()
        base = next((r for r in self.results if r.name == "random"), None)
        rows = []
        for r in self.results:
            row: dict[str, Any] = {
                "policy": r.name,
                "offline_rank": off.index(r.name) + 1,
                "simulated_rank": sim.index(r.name) + 1,
            }
            row["rank_shift"] = row["offline_rank"] - row["simulated_rank"]
            if base is not None:
                b_off, b_sim = base.offline[HEADLINE_OFFLINE], base.simulated[HEADLINE_SIMULATED]["mean"]
                row["offline_lift"] = r.offline[HEADLINE_OFFLINE] / b_off if b_off > 0 else None
                row["simulated_lift"] = r.simulated[HEADLINE_SIMULATED]["mean"] / b_sim if b_sim > 0 else None
            rows.append(row)
        return rows

    def reading(self) -> list[str]:
        """The plain-words reading: the sentences the figures support (:mod:`.gap_reading`)."""
        from recsim_personas.recommenders.gap_reading import read

        return [sentence for _, sentence in read(self)]

    # ------------------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        return {
            "split_id": self.split_id,
            "rater": self.rater,
            "seeds": list(self.seeds),
            "days": self.days,
            "k": self.k,
            "users": self.users,
            "headline": {"offline": f"{HEADLINE_OFFLINE}@{self.k}", "simulated": HEADLINE_SIMULATED},
            "config": self.config.to_dict(),
            "rater_artifact": self.rater_artifact,
            "results": [
                {
                    "policy": r.name,
                    "offline": r.offline,
                    "recbole_evaluator": r.recbole,
                    "simulated": r.simulated,
                    "watched_test": r.watched_test,
                    "behaviour": r.behaviour,
                    "replay": r.replay,
                    "train_seconds": r.train_seconds,
                    "offline_seconds": r.offline_seconds,
                    "simulated_seconds": r.simulated_seconds,
                    "config": r.config,
                }
                for r in self.results
            ],
            "failed": [asdict(f) for f in self.failures],
            "offline_ranking": self.offline_ranking(),
            "simulated_ranking": self.simulated_ranking(),
            "kendall_tau": self.kendall(),
            "deltas": self.deltas(),
            "fidelity": self.fidelity,
            "reading": self.reading(),
            "wall_seconds": self.wall_seconds,
            "versions": self.versions,
        }

    def to_markdown(self) -> str:
        """The report as markdown (:func:`~recsim_personas.recommenders.gap_markdown.render_markdown`)."""
        from recsim_personas.recommenders.gap_markdown import render_markdown

        return render_markdown(self)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """``gap.png`` (:func:`~recsim_personas.recommenders.gap_plot.plot_gap`)."""
        from recsim_personas.recommenders.gap_plot import plot_gap

        return plot_gap(self, path)

    def save(self, out: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``gap.md``, ``gap.json``, ``gap.png`` and the traces (``traces/<policy>/seed-<s>``) into ``out``;
        returns their paths."""
        from recsim_personas.envs.trace import trace_dir_name, write_trace

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out / "gap.md", "json": out / "gap.json", "png": out / "gap.png"}
        for policy, per_seed in self.traces.items():
            for seed, record in per_seed.items():
                about = {"split_id": self.split_id, "split": self.split_path, "rater": self.rater, "policy": policy,
                         "seed": int(seed), "days": self.days, "slate_size": self.config.slate_size}  # fmt: skip
                where = out / "traces" / trace_dir_name(policy) / f"seed-{int(seed)}"
                paths[f"trace {policy} seed {seed}"] = write_trace(record, where, about)
        atomic_write_text(paths["markdown"], self.to_markdown() + "\n")
        write_json(paths["json"], self.to_dict())
        self.plot(paths["png"])
        return paths


def kendall_tau(x: list[float], y: list[float]) -> dict[str, float | None]:
    """Kendall τ and its p-value between two equally long lists (``None`` for fewer than two values or a
    constant list)."""
    from scipy.stats import kendalltau

    if len(x) < 2:
        return {"tau": None, "p_value": None}
    res = kendalltau(x, y)
    tau, p = float(res.statistic), float(res.pvalue)
    return {"tau": None if math.isnan(tau) else tau, "p_value": None if math.isnan(p) else p}
