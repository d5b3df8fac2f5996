"""Fidelity evaluation: how closely a rater reproduces the real users' held-out ratings.

For each rater, over the test ratings of a split:

- ``rmse_expected`` / ``mae_expected``: error of the expected rating (the distribution's mean);
- ``rmse_mode`` / ``mae_mode``: error of the most likely rating (an integer answer, as an LLM would give);
- ``mae_median``: absolute error of the distribution's median — the point that minimises the expected
  absolute error, as the mean does the squared error. A rater that outputs a distribution is scored at the
  point each loss asks for: RMSE of the mean, MAE of the median (both are reported beside the others);
- ``w1``: 1-Wasserstein distance between the predicted rating histogram (the mean of the predicted
  distributions) and the real histogram of the test ratings, on the 1..5 scale;
- ``w1_user``: the same distance computed per user and averaged over users — does the rater reproduce each
  user's own spread of ratings, not just the population's?
- ``nll``: mean negative log-likelihood of the real ratings under the predicted distributions.

Reports are written as markdown, JSON and a PNG of the histograms.

This module is the one fidelity scorer of the package: :func:`predict_distributions` asks a rater for the
test ratings in batches, :func:`score_distributions` scores distributions (the figures above) and
:func:`rating_agreement` scores point ratings (a sampled or a simulated rating against the real one). The
classical raters' report (:class:`FidelityReport`), the persona agents' report
(:mod:`~recsim_personas.agents.agent_report`) and the gap report's check of the simulator
(:mod:`~recsim_personas.recommenders.gap_fidelity`) all score with them; :func:`save_report_files` writes a
report's markdown, JSON and PNG.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas._io import atomic_path, atomic_write_text, write_json
from recsim_personas.agents.rater import (
    RATINGS,
    Rater,
    check_distribution,
    expected_rating,
    median_rating,
    most_likely_rating,
    rating_histogram,
)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FidelityRow:
    """Fidelity figures of one rater (see the module docstring)."""

    rater: str
    n: int
    rmse_expected: float
    mae_expected: float
    rmse_mode: float
    mae_mode: float
    mae_median: float
    w1: float
    w1_user: float
    nll: float
    predicted_histogram: list[float]
    seconds: float


@dataclass
class HeldOutRatings:
    """The real ratings a fidelity report scores against (the base of the classical and the agents' reports).

    Attributes:
        split_id: the split they come from, if known.
        n_test: how many test ratings.
        real_histogram: the share of each rating 1..5 among them.
    """

    split_id: str | None
    n_test: int
    real_histogram: list[float]

    @staticmethod
    def histogram_of(test: pd.DataFrame) -> list[float]:
        """The real rating histogram of ``test`` (shares of 1..5)."""
        return [float(x) for x in rating_histogram(test["rating"].to_numpy())]

    def to_dict(self) -> dict[str, Any]:
        return {"split_id": self.split_id, "n_test": self.n_test, "real_histogram": self.real_histogram}

    def summary(self) -> str:
        """``"<n> test ratings; real rating shares 1: ..., 5: ...."``"""
        real = ", ".join(f"{k + 1}: {p:.3f}" for k, p in enumerate(self.real_histogram))
        return f"{self.n_test} test ratings; real rating shares {real}."


@dataclass
class FidelityReport(HeldOutRatings):
    """Fidelity of several raters on one split.

    Attributes:
        rows: one :class:`FidelityRow` per rater, in report order.
    """

    rows: list[FidelityRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "raters": [asdict(r) for r in self.rows]}

    def to_markdown(self) -> str:
        head = "| rater | RMSE (mean) | MAE (mean) | RMSE (mode) | MAE (mode) | MAE (median) | W1 | W1 per user | NLL |"
        lines = [head, "|" + "---|" * 9]
        for r in self.rows:
            lines.append(
                f"| {r.rater} | {r.rmse_expected:.4f} | {r.mae_expected:.4f} | {r.rmse_mode:.4f} |"
                f" {r.mae_mode:.4f} | {r.mae_median:.4f} | {r.w1:.4f} | {r.w1_user:.4f} | {r.nll:.4f} |"
            )
        lines += ["", self.summary()]
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike[str], *, plot: bool = True) -> dict[str, Path]:
        """Write ``fidelity.md``, ``fidelity.json`` and (``plot=True``) ``fidelity.png`` into ``out_dir``."""
        return save_report_files(
            out_dir, "fidelity", "# Rater fidelity", self.to_markdown(), self.to_dict(), self.plot if plot else None
        )

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Bar chart of the real vs each rater's predicted rating histogram."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        n = len(self.rows) + 1
        width = 0.8 / n
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar(RATINGS - 0.4 + width / 2, self.real_histogram, width, label="real (test)", color="black")
        for k, row in enumerate(self.rows, start=1):
            ax.bar(RATINGS - 0.4 + width / 2 + k * width, row.predicted_histogram, width, label=row.rater)
        ax.set_xlabel("rating")
        ax.set_ylabel("share of ratings")
        ax.set_xticks(RATINGS)
        ax.set_title("Predicted vs real rating histogram (test ratings)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)


def w1_distance(p: np.ndarray, q: np.ndarray) -> float:
    """1-Wasserstein distance between two histograms over the ratings 1..5 (scipy)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(RATINGS, RATINGS, u_weights=p, v_weights=q))


def predict_distributions(
    rater: Rater, test: pd.DataFrame, *, batch_size: int = 4096, progress: bool = False
) -> np.ndarray:
    """Rating distributions of ``rater`` for every (``user_id``, ``item_id``) row of ``test``, in batches.

    Args:
        rater: a fitted rater.
        test: the requests, one per row.
        batch_size: at most this many requests per ``predict`` call.
        progress: a progress bar over the batches (on stderr).

    Returns:
        float64 (len(test), 5), checked (:func:`~recsim_personas.agents.rater.check_distribution`).

    Raises:
        RaterOutputError: the rater returned something that is not a batch of distributions.
    """
    from tqdm.auto import tqdm

    users = test["user_id"].to_numpy(dtype=np.int64)
    items = test["item_id"].to_numpy(dtype=np.int64)
    name = str(getattr(rater, "name", type(rater).__name__))
    parts = []
    steps = range(0, len(users), batch_size)
    for lo in tqdm(steps, desc=name, unit="batch", disable=not progress, leave=False):
        hi = min(lo + batch_size, len(users))
        parts.append(check_distribution(rater.predict(users[lo:hi], items[lo:hi]), hi - lo, source=name))
    return np.concatenate(parts) if parts else np.zeros((0, 5))


def evaluate_rater(rater: Rater, test: pd.DataFrame, *, batch_size: int = 4096) -> FidelityRow:
    """Score one (already fitted) rater on ``test`` (``user_id``, ``item_id``, ``rating``)."""
    start = time.perf_counter()
    dist = predict_distributions(rater, test, batch_size=batch_size)
    return score_distributions(rater.name, dist, test, time.perf_counter() - start)


def score_distributions(name: str, dist: np.ndarray, test: pd.DataFrame, seconds: float = 0.0) -> FidelityRow:
    """Fidelity figures of predicted distributions ``dist`` (len(test), 5) against ``test``'s ratings."""
    users = test["user_id"].to_numpy(dtype=np.int64)
    y = test["rating"].to_numpy(dtype=np.int64)
    dist = check_distribution(dist, len(y), source=name)
    e, m = expected_rating(dist), most_likely_rating(dist)
    pred_hist = dist.mean(axis=0)
    per_user = []
    for uid in np.unique(users):
        sel = users == uid
        per_user.append(w1_distance(dist[sel].mean(axis=0), rating_histogram(y[sel])))
    return FidelityRow(
        rater=name,
        n=len(y),
        rmse_expected=float(np.sqrt(np.mean((e - y) ** 2))),
        mae_expected=float(np.mean(np.abs(e - y))),
        rmse_mode=float(np.sqrt(np.mean((m - y) ** 2))),
        mae_mode=float(np.mean(np.abs(m - y))),
        mae_median=float(np.mean(np.abs(median_rating(dist) - y))),
        w1=w1_distance(pred_hist, rating_histogram(y)),
        w1_user=float(np.mean(per_user)),
        nll=float(-np.mean(np.log(np.maximum(dist[np.arange(len(y)), y - 1], 1e-12)))),
        predicted_histogram=[float(x) for x in pred_hist],
        seconds=seconds,
    )


def rating_agreement(predicted: Any, real: Any, *, like_threshold: int = 4) -> dict[str, float | int]:
    """How closely point ratings (a sampled or a simulated rating) match the real ones, pair by pair.

    Args:
        predicted: ratings 1..5, int (n,).
        real: the real ratings of the same (user, item) pairs, int (n,).
        like_threshold: ratings at or above it count as likes.

    Returns:
        ``n``; ``predicted_mean`` and ``real_mean``; ``mae``; ``exact``: the share of equal ratings;
        ``like_agreement``: the share of pairs on the same side of ``like_threshold``. Without pairs, ``n`` only.
    """
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    r = np.asarray(real, dtype=np.float64).reshape(-1)
    if p.shape != r.shape:
        raise ValueError(f"rating_agreement: {p.size} predicted ratings for {r.size} real ones.")
    if not p.size:
        return {"n": 0}
    return {
        "n": int(p.size),
        "predicted_mean": float(p.mean()),
        "real_mean": float(r.mean()),
        "mae": float(np.abs(p - r).mean()),
        "exact": float((p == r).mean()),
        "like_agreement": float(((p >= like_threshold) == (r >= like_threshold)).mean()),
    }


def evaluate_fidelity(
    raters: list[Rater],
    test: pd.DataFrame,
    *,
    fit_on: pd.DataFrame | None = None,
    split_id: str | None = None,
    progress: bool = False,
) -> FidelityReport:
    """Score several raters on the same test ratings.

    Args:
        raters: raters to score, in report order.
        test: the held-out ratings (``user_id``, ``item_id``, ``rating``).
        fit_on: if given, each rater is first fitted on it (``rater.fit(fit_on)``); otherwise the raters
            must already be fitted.
        split_id: recorded in the report.
        progress: show a progress bar over the raters (on stderr).
    """
    from tqdm.auto import tqdm

    report = FidelityReport(
        split_id=split_id,
        n_test=len(test),
        real_histogram=HeldOutRatings.histogram_of(test),
    )
    bar = tqdm(raters, desc="raters", unit="rater", disable=not progress)
    for rater in bar:
        bar.set_postfix_str(rater.name)
        if fit_on is not None:
            rater.fit(fit_on)
        report.rows.append(evaluate_rater(rater, test))
        logger.info("%s: RMSE %.4f", rater.name, report.rows[-1].rmse_expected)
    return report


def save_report_files(
    out_dir: str | os.PathLike[str],
    stem: str,
    title: str,
    markdown: str,
    payload: Mapping[str, Any],
    plot: Callable[[Path], Any] | None = None,
) -> dict[str, Path]:
    """Write a report as ``<stem>.md`` (``title``, then ``markdown``), ``<stem>.json`` and, given ``plot``
    (called with the path), ``<stem>.png`` into ``out_dir``, each atomically.

    Returns:
        ``{"md": ..., "json": ...[, "png": ...]}``.
    """
    out = Path(out_dir)
    paths = {"md": out / f"{stem}.md", "json": out / f"{stem}.json"}
    atomic_write_text(paths["md"], f"{title}\n\n{markdown}\n")
    write_json(paths["json"], payload)
    if plot is not None:
        paths["png"] = out / f"{stem}.png"
        plot(paths["png"])
    return paths
