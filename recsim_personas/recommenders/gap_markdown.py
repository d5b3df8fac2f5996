"""The gap report as markdown (``gap.md``): tables of the figures, the reading, the configs and the failures."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from recsim_personas.recommenders.simulated import SIM_METRICS

if TYPE_CHECKING:
    from recsim_personas.recommenders.gap_report import GapReport

SIM_LABELS = {
    "mean_rating": "mean rating",
    "like_rate": "like rate",
    "watch_rate": "watch rate",
    "pages_per_session": "pages/session",
    "exit_rate": "exit rate",
    "returning": "returning",
    "likes_per_user": "likes/user",
    "coverage": "coverage",
    "shown_popularity": "shown popularity",
}
"""Column labels of the simulated metrics."""


def num(value: float | None, digits: int, suffix: str = "") -> str:
    """``value`` with ``digits`` decimals (and ``suffix``), ``–`` for ``None`` or NaN."""
    if value is None or value != value:
        return "–"
    return f"{value:.{digits}f}{suffix}"


def _ci(s: Mapping[str, Any], digits: int) -> str:
    return f"{s['mean']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}]"


def render_markdown(report: GapReport) -> str:
    """``gap.md`` of ``report``."""
    k = report.k
    seeds = ", ".join(map(str, report.seeds))
    failed = f"; {len(report.failures)} failed" if report.failures else ""
    lines = [
        f"# Offline vs simulated: {len(report.results)} recommenders on split {report.split_id[:12]}{failed}",
        "",
        f"{report.users} simulated users, rater `{report.rater}`, {report.days} days, seeds {seeds};"
        f" wall time {report.wall_seconds:.0f} s.",
        "",
        *_offline(report, k),
        *_simulated(report),
        *_rankings(report, k),
        *_deltas(report),
        "",
        "## Reading",
        "",
        *(f"- {s}" for s in report.reading()),
        *_fidelity(report),
        *_failures(report),
        *_configs(report),
        "",
        "![offline vs simulated](gap.png)",
        "",
    ]
    return "\n".join(lines)


def _offline(report: GapReport, k: int) -> list[str]:
    lines = [
        f"## Offline (held-out test part, full ranking, history excluded, k = {k})",
        "",
        f"| policy | Recall@{k} | NDCG@{k} | MRR@{k} | RecBole's evaluator (R / N / M) | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in report.results:
        rb = "–"
        if r.recbole:
            rb = " / ".join(f"{r.recbole.get(f'{m}@{k}', float('nan')):.4f}" for m in ("recall", "ndcg", "mrr"))
        ts = "–" if r.train_seconds is None else f"{r.train_seconds:.0f}"
        lines.append(
            f"| {r.name} | {r.offline['recall']:.4f} | {r.offline['ndcg']:.4f} | {r.offline['mrr']:.4f} | {rb} | {ts} |"
        )
    return lines


def _simulated(report: GapReport) -> list[str]:
    lines = [
        "",
        "## Simulated (mean over seeds [95% CI])",
        "",
        "| policy | " + " | ".join(SIM_LABELS[m] for m in SIM_METRICS) + " |",
        "|---|" + "---|" * len(SIM_METRICS),
    ]
    for r in report.results:
        cells = [_ci(r.simulated[m], 1 if m in ("likes_per_user", "shown_popularity") else 3) for m in SIM_METRICS]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return lines


def _rankings(report: GapReport, k: int) -> list[str]:
    tau = report.kendall()
    lines = [
        "",
        "## Rankings",
        "",
        f"- offline (NDCG@{k}): " + " > ".join(report.offline_ranking()),
        "- simulated (liked watches per user): " + " > ".join(report.simulated_ranking()),
        "",
        f"Kendall τ between offline NDCG@{k} and each simulated metric:",
        "",
        "| simulated metric | τ | p |",
        "|---|---|---|",
    ]
    for m in SIM_METRICS:
        lines.append(f"| {SIM_LABELS[m]} | {num(tau[m]['tau'], 3)} | {num(tau[m]['p_value'], 3)} |")
    return lines


def _deltas(report: GapReport) -> list[str]:
    lines = [
        "",
        "## Per-model deltas",
        "",
        "| policy | offline rank | simulated rank | shift | offline lift vs random | simulated lift vs random |",
        "|---|---|---|---|---|---|",
    ]
    for d in report.deltas():
        lines.append(
            f"| {d['policy']} | {d['offline_rank']} | {d['simulated_rank']} | {d['rank_shift']:+d} |"
            f" {num(d.get('offline_lift'), 2, 'x')} | {num(d.get('simulated_lift'), 2, 'x')} |"
        )
    return lines


def _fidelity(report: GapReport) -> list[str]:
    lines = ["", "## Fidelity of the simulator where ground truth exists", ""]
    rt = report.fidelity.get("rater_on_test") or {}
    if rt.get("n"):
        rho = ""
        if rt.get("popularity_rho_expected") is not None and rt.get("popularity_rho_real") is not None:
            rho = (
                f" Spearman ρ of a movie's popularity with the rating: {rt['popularity_rho_expected']:.2f} (expected)"
                f" vs {rt['popularity_rho_real']:.2f} (real)."
            )
        lines.append(
            f"- The rater on the {rt['n']:,} real test ratings: real mean {rt['real_mean']:.3f}, expected simulated"
            f" mean {rt['expected_mean']:.3f}, MAE {rt['mae']:.3f}, RMSE {rt['rmse']:.3f}; a sampled rating equals"
            f" the real one {rt['sampled_exact']:.1%} of the time; like (≥ {report.config.session.like_threshold})"
            f" agreement {rt['like_agreement']:.1%}.{rho}"
        )
    wt = report.fidelity.get("watched_test") or {}
    if wt.get("n"):
        lines.append(
            f"- In the simulations, {wt['n']:,} watches (all policies and seeds) were of movies the real user rated"
            f" in the test part: simulated mean {wt['sim_mean']:.3f} vs real {wt['real_mean']:.3f}, MAE"
            f" {wt['mae']:.3f}, exact {wt['exact']:.1%}, like agreement {wt['like_agreement']:.1%}."
        )
        lines += [
            "",
            "| policy | watches per seed | share of watches the real user rated in test | their sim / real mean |"
            " liked watches of movies never rated |",
            "|---|---|---|---|---|",
        ]
        for r in report.results:
            w = r.watched_test
            never = w.get("liked_never_rated_share")
            never_pct = None if never is None else 100 * never
            lines.append(
                f"| {r.name} | {w['watches_per_seed']:.0f} | {w['test_share']:.1%} |"
                f" {num(w.get('sim_mean'), 2)} / {num(w.get('real_mean'), 2)} | {num(never_pct, 1, '%')} |"
            )
    return lines


def _failures(report: GapReport) -> list[str]:
    if not report.failures:
        return []
    lines = ["", "## Failed policies", "", "| policy | while | error | message |", "|---|---|---|---|"]
    for f in report.failures:
        message = " ".join(f.message.split()).replace("|", "\\|")
        lines.append(f"| {f.name} | {f.stage} | {f.error} | {message} |")
    return lines


def _configs(report: GapReport) -> list[str]:
    c = report.config
    ra = report.rater_artifact
    artifact = f", artifact `{ra['artifact_id'][:12]}`" if ra.get("artifact_id") else ""
    lines = [
        "",
        "## Configuration",
        "",
        f"- policies {', '.join(c.policies)}; slate size {c.slate_size}; k = {c.k};"
        f" seeds {', '.join(map(str, c.seeds))}; {c.days} days;"
        f" RecBole epochs {c.epochs if c.epochs is not None else 'per model'}",
        f"- rater `{ra.get('spec', report.rater)}` ({report.rater}{artifact})",
        f"- session config: `{json.dumps(c.session.to_dict(), sort_keys=True)}`",
    ]
    for r in [*report.results, *report.failures]:
        if r.config is not None:
            lines.append(f"- {r.name}: `{json.dumps(r.config, sort_keys=True)}`")
    return lines
