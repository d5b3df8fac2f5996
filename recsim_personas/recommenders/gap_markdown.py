"""The gap report as markdown (``gap.md``): tables of the figures, the reading, the configs and the failures."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recsim_personas.recommenders.simulated import SIM_METRICS

if TYPE_CHECKING:
    from recsim_personas.recommenders.gap_report import GapReport, PolicyResult

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


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table: the header, the separator and one line per row of cells."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return out + ["| " + " | ".join(cells) + " |" for cells in rows]


def _offline(report: GapReport, k: int) -> list[str]:
    def row(r: PolicyResult) -> list[str]:
        rb = "–"
        if r.recbole:
            rb = " / ".join(f"{r.recbole.get(f'{m}@{k}', float('nan')):.4f}" for m in ("recall", "ndcg", "mrr"))
        ts = "–" if r.train_seconds is None else f"{r.train_seconds:.0f}"
        return [r.name, *(f"{r.offline[m]:.4f}" for m in ("recall", "ndcg", "mrr")), rb, ts]

    columns = ["policy", f"Recall@{k}", f"NDCG@{k}", f"MRR@{k}", "RecBole's evaluator (R / N / M)", "train s"]
    head = [f"## Offline (held-out test part, full ranking, history excluded, k = {k})", ""]
    return head + _table(columns, map(row, report.results))


def _simulated(report: GapReport) -> list[str]:
    def row(r: PolicyResult) -> list[str]:
        digits = {m: 1 if m in ("likes_per_user", "shown_popularity") else 3 for m in SIM_METRICS}
        return [r.name, *(_ci(r.simulated[m], digits[m]) for m in SIM_METRICS)]

    columns = ["policy", *(SIM_LABELS[m] for m in SIM_METRICS)]
    return ["", "## Simulated (mean over seeds [95% CI])", "", *_table(columns, map(row, report.results))]


def _rankings(report: GapReport, k: int) -> list[str]:
    tau = report.kendall()
    rows = ([SIM_LABELS[m], num(tau[m]["tau"], 3), num(tau[m]["p_value"], 3)] for m in SIM_METRICS)
    return [
        "",
        "## Rankings",
        "",
        f"- offline (NDCG@{k}): " + " > ".join(report.offline_ranking()),
        "- simulated (liked watches per user): " + " > ".join(report.simulated_ranking()),
        "",
        f"Kendall τ between offline NDCG@{k} and each simulated metric:",
        "",
        *_table(["simulated metric", "τ", "p"], rows),
    ]


def _deltas(report: GapReport) -> list[str]:
    rows = (
        [
            d["policy"],
            str(d["offline_rank"]),
            str(d["simulated_rank"]),
            f"{d['rank_shift']:+d}",
            num(d.get("offline_lift"), 2, "x"),
            num(d.get("simulated_lift"), 2, "x"),
        ]
        for d in report.deltas()
    )
    columns = [
        "policy",
        "offline rank",
        "simulated rank",
        "shift",
        "offline lift vs random",
        "simulated lift vs random",
    ]
    return ["", "## Per-model deltas", "", *_table(columns, rows)]


def _fidelity(report: GapReport) -> list[str]:
    lines = ["", "## Fidelity of the simulator where ground truth exists", ""]
    rt = report.fidelity.get("rater_on_test") or {}
    like = (report.fidelity.get("session") or {}).get("like_threshold", 4)
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
            f" the real one {rt['sampled_exact']:.1%} of the time; like (≥ {like})"
            f" agreement {rt['like_agreement']:.1%}.{rho}"
        )
    wt = report.fidelity.get("watched_test") or {}
    if wt.get("n"):
        lines.append(
            f"- In the simulations, {wt['n']:,} watches (all policies and seeds) were of movies the real user rated"
            f" in the test part: simulated mean {wt['sim_mean']:.3f} vs real {wt['real_mean']:.3f}, MAE"
            f" {wt['mae']:.3f}, exact {wt['exact']:.1%}, like agreement {wt['like_agreement']:.1%}."
        )
        columns = [
            "policy",
            "watches per seed",
            "share of watches the real user rated in test",
            "their sim / real mean",
            "liked watches of movies never rated",
        ]
        lines += ["", *_table(columns, map(_watched_row, report.results))]
    alignment = alignment_lines(report.fidelity.get("alignment") or {}, report.fidelity.get("choice") or {})
    lines += ["", *alignment] if alignment else []
    if any(r.behaviour for r in report.results):
        lines += ["", *behaviour_table(report.results)]
    return lines


def alignment_lines(summary: Mapping[str, Any], choice: Mapping[str, Any]) -> list[str]:
    """The preference-alignment sentences and table of a summary
    (:func:`~recsim_personas.fidelity.suite.alignment_summary`)."""
    if not summary:
        return []
    one = summary.get("1") or {}
    lines = []
    if one:
        best = max(one["baselines"].items(), key=lambda kv: kv[1])
        lines.append(
            f"- Preference alignment ({choice.get('name', 'choice')} choice model): shown each user's real test movies"
            f" mixed 1:1 with movies it never rated, the simulated users decide with accuracy {one['accuracy']:.3f}"
            f" (P(watch) > 0.5) and ROC-AUC {one['roc_auc']:.3f}; the best baseline, {best[0]}, reaches an AUC of"
            f" {best[1]:.3f} ({one['roc_auc'] - best[1]:+.3f})."
        )
    columns = ["random : real", "accuracy", "F1", "F1 (sampled)", "ROC-AUC", *BASELINE_LABELS]
    rows = [
        [
            f"{m} : 1",
            f"{r['accuracy']:.3f}",
            f"{r['f1']:.3f}",
            f"{r['f1_sampled']:.3f}",
            f"{r['roc_auc']:.3f}",
            *(num(r["baselines"].get(b), 3) for b in BASELINE_LABELS),
        ]
        for m, r in summary.items()
    ]
    return [*lines, "", *_table(columns, rows)]


BASELINE_LABELS = ("random", "popularity", "item_knn", "ease")
"""The alignment baselines, in table order (their ROC-AUC)."""

BEHAVIOUR_LABELS = {
    "rating_w1": "rating W1",
    "rating_w1_per_user": "rating W1 per user",
    "items_per_session": "items/session W1",
    "sessions_per_user": "sessions/user W1",
    "genre_js": "genre JS",
    "popularity_w1": "log-popularity W1",
    "off_taste_share": "off-taste share diff.",
}
"""Column labels of the behaviour distances."""


def behaviour_table(results: Sequence[PolicyResult]) -> list[str]:
    """Per policy: the behaviour distances (real test part vs simulated) and the replay check."""
    columns = ["policy", *BEHAVIOUR_LABELS.values(), "test movies among shown", "of them watched", "other watched"]
    rows = []
    for r in results:
        d = r.behaviour.get("distances", {})
        rp = r.replay
        rows.append(
            [
                r.name,
                *(num(d.get(k), 3) for k in BEHAVIOUR_LABELS),
                num(None if rp.get("shown_test_share") is None else 100 * rp["shown_test_share"], 2, "%"),
                num(
                    None
                    if rp.get("watched_test_share_of_shown_test") is None
                    else 100 * rp["watched_test_share_of_shown_test"],
                    1,
                    "%",
                ),
                num(None if rp.get("watch_rate_other") is None else 100 * rp["watch_rate_other"], 1, "%"),
            ]
        )
    return [
        "Behaviour, real test part vs simulated (distances: smaller is closer) and the replay check:",
        "",
        *_table(columns, rows),
    ]


def _watched_row(r: PolicyResult) -> list[str]:
    w = r.watched_test
    never = w.get("liked_never_rated_share")
    return [
        r.name,
        f"{w['watches_per_seed']:.0f}",
        f"{w['test_share']:.1%}",
        f"{num(w.get('sim_mean'), 2)} / {num(w.get('real_mean'), 2)}",
        num(None if never is None else 100 * never, 1, "%"),
    ]


def _failures(report: GapReport) -> list[str]:
    if not report.failures:
        return []
    rows = ([f.name, f.stage, f.error, " ".join(f.message.split()).replace("|", "\\|")] for f in report.failures)
    return ["", "## Failed policies", "", *_table(["policy", "while", "error", "message"], rows)]


def _configs(report: GapReport) -> list[str]:
    c = report.config
    ra = report.rater_artifact
    artifact = f", artifact `{ra['artifact_id'][:12]}`" if ra.get("artifact_id") else ""
    session = report.fidelity.get("session") or (c.session.to_dict() if c.session is not None else None)
    lines = [
        "",
        "## Configuration",
        "",
        f"- policies {', '.join(c.policies)}; slate size {c.slate_size}; k = {c.k};"
        f" seeds {', '.join(map(str, c.seeds))}; {c.days} days;"
        f" RecBole epochs {c.epochs if c.epochs is not None else 'per model'}",
        f"- rater `{ra.get('spec', report.rater)}` ({report.rater}{artifact})",
        f"- choice model: `{json.dumps(report.fidelity.get('choice', {'name': c.choice}), sort_keys=True)}`",
        f"- session config: `{json.dumps(session, sort_keys=True)}`",
    ]
    for r in [*report.results, *report.failures]:
        if r.config is not None:
            lines.append(f"- {r.name}: `{json.dumps(r.config, sort_keys=True)}`")
    return lines
