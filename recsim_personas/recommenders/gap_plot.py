"""The gap report's figure (``gap.png``): offline NDCG@k against two simulated metrics, one dot per policy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from recsim_personas._io import atomic_path
from recsim_personas.recommenders.gap_markdown import SIM_LABELS, num
from recsim_personas.recommenders.gap_report import HEADLINE_OFFLINE, HEADLINE_SIMULATED

if TYPE_CHECKING:
    from recsim_personas.recommenders.gap_report import GapReport

PLOTTED = ("likes_per_user", "returning")
"""The simulated metrics on the y axes."""


def plot_gap(report: GapReport, path: str | os.PathLike[str]) -> Path:
    """Scatter of offline NDCG@k against liked watches per user and returning users (CI bars), written to
    ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, metric in zip(axes, PLOTTED, strict=True):
        for r in report.results:
            s = r.simulated[metric]
            x = r.offline[HEADLINE_OFFLINE]
            ax.errorbar(x, s["mean"], yerr=[[s["mean"] - s["low"]], [s["high"] - s["mean"]]], fmt="o", capsize=4)
            ax.annotate(r.name, (x, s["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(f"offline NDCG@{report.k} (test part)")
        ax.set_ylabel(f"simulated {SIM_LABELS[metric]} ({report.days} days)")
        ax.grid(alpha=0.3)
    tau = report.kendall()[HEADLINE_SIMULATED]["tau"]
    fig.suptitle(f"offline vs simulated, split {report.split_id[:12]} (Kendall τ = {num(tau, 2)})")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
