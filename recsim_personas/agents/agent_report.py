"""The persona-agent fidelity report: agents beside classical raters, overall and per persona.

For every rater (classical or SLM agent) scored on the same test ratings: RMSE and MAE of the expected
rating, the MAE of the median rating (the MAE-optimal point of a distribution), the rating-histogram
distance (W1, overall and per user), the NLL, and the unusable-response rate (URR). Token-scoring agents
read a distribution over the five rating tokens, so their URR is 0 by construction (``urr_method="token
scoring"``); the prompt-only causal LM's URR is also measured with free greedy generation
(:func:`~recsim_personas.agents.persona_agents.measure_urr`) and reported with the number of answers it is
based on. Per persona = the test ratings of the users of each persona cluster.

Written as ``agents_fidelity.md``, ``agents_fidelity.json`` and ``agents_fidelity.png`` (predicted vs real
rating histograms).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsim_personas.agents.fidelity import (
    FidelityReport,
    FidelityRow,
    HeldOutRatings,
    predict_distributions,
    save_report_files,
    score_distributions,
)
from recsim_personas.agents.rater import Rater

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class ReportEntry:
    """One rater's figures.

    Attributes:
        label: the rater's name in the report.
        family: ``"classical"`` or ``"agent"``.
        variant: ``"prompt"``, ``"single"``, ``"persona"`` or the classical rater's name.
        memories: memories per prompt (``None`` for classical raters).
        anchor: ``"bias"`` / ``"none"`` (``None`` for classical raters).
        urr: unusable-response rate (0 for distribution raters).
        urr_method: how the URR was obtained.
        overall: figures on all test ratings.
        per_persona: figures per persona cluster (key: cluster id as a string).
    """

    label: str
    family: str
    variant: str
    memories: int | None
    anchor: str | None
    urr: float
    urr_method: str
    overall: FidelityRow
    per_persona: dict[str, FidelityRow] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportEntry:
        """The inverse of :meth:`to_dict` (e.g. an entry saved by an interrupted benchmark run)."""
        fields = dict(d)
        fields["overall"] = FidelityRow(**fields["overall"])
        fields["per_persona"] = {k: FidelityRow(**v) for k, v in fields.get("per_persona", {}).items()}
        return cls(**fields)


@dataclass
class AgentFidelityReport(HeldOutRatings):
    """Fidelity of agents and classical raters on the same test ratings.

    Attributes:
        personas: test ratings per persona cluster (key: cluster id as a string).
        entries: one :class:`ReportEntry` per rater, in report order.
        notes: further lines of the markdown.
    """

    personas: dict[str, int] = field(default_factory=dict)
    entries: list[ReportEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "personas": self.personas,
            "entries": [e.to_dict() for e in self.entries],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        head = "| rater | memories | anchor | RMSE | MAE | MAE (median) | URR | W1 | W1 per user | NLL | ratings/s |"
        lines = [head, "|" + "---|" * 11]
        for e in self.entries:
            r = e.overall
            speed = r.n / r.seconds if r.seconds > 0 else float("nan")
            rate = f"{speed:,.0f}" if speed >= 100 else f"{speed:.1f}"
            lines.append(
                f"| {e.label} | {'' if e.memories is None else e.memories} | {e.anchor or ''} |"
                f" {r.rmse_expected:.4f} | {r.mae_expected:.4f} | {r.mae_median:.4f} | {e.urr:.3f} | {r.w1:.4f} |"
                f" {r.w1_user:.4f} | {r.nll:.4f} | {rate} |"
            )
        clusters = sorted(self.personas, key=int)
        if clusters:
            lines += [
                "",
                "RMSE / MAE per persona cluster (test ratings of its users):",
                "",
                "| rater | " + " | ".join(f"persona {c} (n={self.personas[c]})" for c in clusters) + " |",
                "|---|" + "---|" * len(clusters),
            ]
            for e in self.entries:
                cells = []
                for c in clusters:
                    r = e.per_persona.get(c)
                    cells.append("" if r is None else f"{r.rmse_expected:.3f} / {r.mae_expected:.3f}")
                lines.append(f"| {e.label} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"{self.summary()} RMSE and MAE score the expected rating;"
            " MAE (median) scores the median of the same distribution, the point that minimises absolute error.",
        ]
        for e in self.entries:
            if e.urr_method != "token scoring" and e.family == "agent":
                lines.append(f"URR of {e.label}: {e.urr_method}.")
        lines += self.notes
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike[str], *, plot: bool = True) -> dict[str, Path]:
        """Write ``agents_fidelity.md``, ``.json`` and (``plot``) ``.png`` into ``out_dir``."""
        hist = FidelityReport(self.split_id, self.n_test, self.real_histogram, [e.overall for e in self.entries])
        return save_report_files(
            out_dir,
            "agents_fidelity",
            "# Persona-agent fidelity",
            self.to_markdown(),
            self.to_dict(),
            hist.plot if plot else None,
        )


def score_entry(
    rater: Rater,
    test: pd.DataFrame,
    persona_of: dict[int, int] | None,
    *,
    family: str,
    variant: str,
    memories: int | None = None,
    anchor: str | None = None,
    urr: tuple[float, str] = (0.0, "token scoring"),
    batch_size: int = 256,
    progress: bool = False,
) -> ReportEntry:
    """Predict ``test`` with ``rater`` once and score it overall and per persona cluster."""
    start = time.perf_counter()
    dist = predict_distributions(rater, test, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    overall = score_distributions(rater.name, dist, test, seconds)
    per: dict[str, FidelityRow] = {}
    if persona_of:
        labels = test["user_id"].map(persona_of).to_numpy()
        for c in sorted({int(x) for x in labels if x == x}):
            sel = labels == c
            per[str(c)] = score_distributions(rater.name, dist[sel], test[sel], seconds * sel.mean())
    return ReportEntry(rater.name, family, variant, memories, anchor, float(urr[0]), urr[1], overall, per)


def new_report(test: pd.DataFrame, persona_of: dict[int, int] | None, split_id: str | None) -> AgentFidelityReport:
    """An empty report for ``test`` (the real histogram and the persona sizes filled in)."""
    sizes: dict[str, int] = {}
    if persona_of:
        labels = test["user_id"].map(persona_of)
        sizes = {str(int(c)): int(n) for c, n in labels.value_counts().sort_index().items()}
    return AgentFidelityReport(
        split_id=split_id,
        n_test=len(test),
        real_histogram=HeldOutRatings.histogram_of(test),
        personas=sizes,
    )
