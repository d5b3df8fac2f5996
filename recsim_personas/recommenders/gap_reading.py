"""The gap report's reading: plain-words sentences, each computed from the report's figures.

The reading is :data:`RULES`, a list of :class:`Rule`\\ s. A rule pairs a condition on the figures with the
sentences it then says; every sentence states the figures its claim rests on, and a rule whose condition the
figures do not meet says nothing. :func:`read` applies them in order to a report's :class:`Figures` (derived
once from the :class:`~recsim_personas.recommenders.gap_report.GapReport`).

The thresholds below decide the wording; they are hand-set (not fitted), and the figures are printed beside
every judgement so a reader can draw the line elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recsim_personas.recommenders.gap_report import HEADLINE_OFFLINE, HEADLINE_SIMULATED, kendall_tau

if TYPE_CHECKING:
    from recsim_personas.recommenders.gap_report import GapReport, PolicyResult

TAU_VERDICTS: tuple[tuple[str, Callable[[float], bool], str], ...] = (
    (
        "tau high",
        lambda t: t >= 0.8,
        "offline evaluation orders these recommenders almost exactly as the simulated users do",
    ),
    ("tau middling", lambda t: 0.4 <= t < 0.8, "offline evaluation gets the broad order right but not every pair"),
    ("tau weak", lambda t: -0.4 < t < 0.4, "offline evaluation is a weak guide to what the simulated users prefer"),
    (
        "tau backwards",
        lambda t: t <= -0.4,
        "offline evaluation orders these recommenders roughly backwards relative to the simulated users",
    ),
)
"""Kendall τ (NDCG@k vs liked watches per user) → the verdict: rule name, the band, the words (hand-set bands)."""
ASSOCIATION = 0.4
"""|Kendall τ| from which two figures are said to rise (or fall) together across the policies (hand-set)."""
SPREAD_RATIO = 0.5
"""The mean rating "moves little" when its relative range is below this share of the watch rate's (hand-set)."""
RHO_MARGIN = 0.1
"""Difference of Spearman ρ (popularity vs rating) from which the rater is said to tie ratings to popularity
more (or less) than the real users do (hand-set)."""


@dataclass(frozen=True)
class Figures:
    """What the rules read, derived once from a report.

    Attributes:
        report: the report.
        by_name: its finished results by policy name.
        offline: policy names by decreasing NDCG@k.
        simulated: policy names by decreasing liked watches per user.
        tau: Kendall τ (``tau``, ``p_value``) between NDCG@k and liked watches per user.
        swaps: pairs ``(a, b)`` that a beats b offline but b beats a in simulation, in offline order.
        winner_lift: the offline winner's ``offline_lift`` and ``simulated_lift`` over Random (``None`` without
            a Random policy, with Random the winner, or an undefined lift).
        popularity_tau: Kendall τ of the shown movies' mean popularity against NDCG@k (``offline``) and against
            liked watches per user (``simulated``).
    """

    report: GapReport
    by_name: dict[str, PolicyResult]
    offline: list[str]
    simulated: list[str]
    tau: dict[str, float | None]
    swaps: list[tuple[str, str]]
    winner_lift: dict[str, Any] | None
    popularity_tau: dict[str, float | None]

    @property
    def n(self) -> int:
        return len(self.by_name)

    def sim(self, metric: str) -> list[float]:
        """The simulated ``metric``'s mean per finished policy (run order)."""
        return [r.simulated[metric]["mean"] for r in self.report.results]

    def spread(self, metric: str) -> tuple[float, float, float | None]:
        """``(min, max, (max - min) / mean)`` of a simulated metric over the policies (relative range ``None``
        for a zero mean)."""
        values = self.sim(metric)
        lo, hi, mean = min(values), max(values), sum(values) / len(values)
        return lo, hi, (hi - lo) / mean if mean else None


def figures(report: GapReport) -> Figures:
    """The :class:`Figures` of ``report``."""
    by_name = {r.name: r for r in report.results}
    off, sim = report.offline_ranking(), report.simulated_ranking()
    swaps = [(a, b) for i, a in enumerate(off) for b in off[i + 1 :] if sim.index(b) < sim.index(a)]
    winner_lift = None
    if "random" in by_name and off and off[0] != "random":
        d = next(x for x in report.deltas() if x["policy"] == off[0])
        if d.get("offline_lift") and d.get("simulated_lift"):
            winner_lift = {"policy": off[0], "offline": d["offline_lift"], "simulated": d["simulated_lift"]}
    shown = [r.simulated["shown_popularity"]["mean"] for r in report.results]
    popularity_tau = {
        "offline": kendall_tau(shown, [r.offline[HEADLINE_OFFLINE] for r in report.results])["tau"],
        "simulated": kendall_tau(shown, [r.simulated[HEADLINE_SIMULATED]["mean"] for r in report.results])["tau"],
    }
    return Figures(
        report=report,
        by_name=by_name,
        offline=off,
        simulated=sim,
        tau=report.kendall()[HEADLINE_SIMULATED] if report.results else {"tau": None, "p_value": None},
        swaps=swaps,
        winner_lift=winner_lift,
        popularity_tau=popularity_tau,
    )


@dataclass(frozen=True)
class Rule:
    """One rule of the reading.

    Attributes:
        name: what the rule is about (tests and readers refer to it).
        when: the condition on the figures under which it speaks.
        say: its sentences, given figures that meet ``when``.
    """

    name: str
    when: Callable[[Figures], bool]
    say: Callable[[Figures], list[str]]


# ----------------------------------------------------------------------------------------------- helpers
def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return not (a["low"] > b["high"] or b["low"] > a["high"])


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _k(f: Figures) -> int:
    return f.report.k


def _fid(f: Figures, part: str) -> Mapping[str, Any]:
    return f.report.fidelity.get(part) or {}


# ----------------------------------------------------------------------------------------------- sentences
def _too_few(f: Figures) -> list[str]:
    names = ", ".join(f.by_name) or "none"
    return [f"{_plural(f.n, 'policy', 'policies')} finished ({names}): there is no ranking to compare."]


def _tau_undefined(f: Figures) -> list[str]:
    ndcg = [r.offline[HEADLINE_OFFLINE] for r in f.report.results]
    likes = f.sim(HEADLINE_SIMULATED)
    side = (
        f"NDCG@{_k(f)} is {ndcg[0]:.3f} for every policy"
        if len(set(ndcg)) == 1
        else f"liked watches per user are {likes[0]:.1f} for every policy"
    )
    return [f"Kendall τ between NDCG@{_k(f)} and liked watches per user is undefined: {side}."]


def _tau_rule(name: str, band: Callable[[float], bool], verdict: str) -> Rule:
    def when(f: Figures) -> bool:
        return f.n >= 2 and f.tau["tau"] is not None and band(f.tau["tau"])

    def say(f: Figures) -> list[str]:
        p = f.tau["p_value"]
        p_text = f", p = {p:.2f}" if p is not None else ""
        return [
            f"Kendall τ = {f.tau['tau']:.2f} (over {f.n} policies{p_text}) between NDCG@{_k(f)} and liked watches per"
            f" user: {verdict}."
        ]

    return Rule(name, when, say)


def _swaps(f: Figures) -> list[str]:
    out = []
    for a, b in f.swaps:
        ra, rb = f.by_name[a], f.by_name[b]
        sa, sb = ra.simulated[HEADLINE_SIMULATED], rb.simulated[HEADLINE_SIMULATED]
        noise = (
            "within the seed-to-seed noise (the intervals overlap)"
            if _overlap(sa, sb)
            else "a difference larger than the seed-to-seed noise"
        )
        out.append(
            f"Offline, {a} beats {b} (NDCG@{_k(f)} {ra.offline['ndcg']:.3f} vs {rb.offline['ndcg']:.3f}), but the"
            f" simulated users liked more of {b}'s recommendations ({sb['mean']:.1f} vs {sa['mean']:.1f} per"
            f" user) — {noise}."
        )
    return out


def _no_swap(f: Figures) -> list[str]:
    return [
        f"No pair of the {f.n} recommenders swaps places: offline ({' > '.join(f.offline)}) and in simulation"
        f" ({' > '.join(f.simulated)}) they stand in the same order."
    ]


def _overstated(f: Figures) -> bool:
    return f.winner_lift is not None and f.winner_lift["offline"] > f.winner_lift["simulated"]


def _understated(f: Figures) -> bool:
    return f.winner_lift is not None and f.winner_lift["offline"] < f.winner_lift["simulated"]


def _lift_head(f: Figures) -> str:
    w = f.winner_lift or {}
    return (
        f"Magnitudes: the offline winner {w['policy']} has {w['offline']:.1f}× Random's NDCG@{_k(f)} and"
        f" {w['simulated']:.2f}× its liked watches per user"
    )


def _say_overstated(f: Figures) -> list[str]:
    random_likes = f.by_name["random"].simulated[HEADLINE_SIMULATED]["mean"]
    test = _fid(f, "rater_on_test")
    per_user = ""
    if test.get("n") and test.get("users"):
        per_user = f" ({test['n'] / test['users']:.1f} per user on average)"
    return [
        f"{_lift_head(f)}: the offline lift overstates the gain the simulated users feel. Random's slates still"
        f" earned {random_likes:.1f} liked watches per user, while offline metrics credit only the movies each"
        f" real user rated in the test part{per_user}."
    ]


def _say_understated(f: Figures) -> list[str]:
    return [f"{_lift_head(f)}: the offline lift understates the gain the simulated users feel."]


def _rating_vs_watch(f: Figures) -> tuple[tuple[float, float, float | None], tuple[float, float, float | None]]:
    return f.spread("mean_rating"), f.spread("watch_rate")


def _rating_moves_little(f: Figures) -> bool:
    if f.n < 2:
        return False
    (_, _, rr), (_, _, wr) = _rating_vs_watch(f)
    return rr is not None and wr is not None and wr > 0 and rr < SPREAD_RATIO * wr


def _rating_moves_too(f: Figures) -> bool:
    if f.n < 2:
        return False
    (_, _, rr), (_, _, wr) = _rating_vs_watch(f)
    return rr is not None and wr is not None and rr > 0 and rr >= SPREAD_RATIO * wr


def _say_rating(f: Figures, little: bool) -> list[str]:
    (r0, r1, rr), (w0, w1, wr) = _rating_vs_watch(f)
    conclusion = (
        "the recommenders differ in how much users find worth watching more than in how much they enjoy what they watch"
        if little
        else "the recommenders differ in how much users enjoy what they watch, not only in how much they watch"
    )
    return [
        f"The mean rating of what users watched spans {r0:.2f}–{r1:.2f} across the recommenders (a {rr:.1%} range),"
        f" the watch rate {w0:.3f}–{w1:.3f} (a {wr:.1%} range): {conclusion}."
    ]


def _say_coverage(f: Figures) -> list[str]:
    cov = ", ".join(
        f"{r.name} {r.simulated['coverage']['mean']:.0%} / {r.simulated['shown_popularity']['mean']:.0f}"
        for r in f.report.results
    )
    return [
        f"Catalogue coverage over {f.report.days} days / mean popularity (history ratings) of the shown movies: {cov}."
    ]


def _popularity_offline(sign: int) -> Callable[[Figures], bool]:
    """With at least three policies (two always give τ = ±1), NDCG@k rises (``sign=+1``) or falls (``-1``) with
    the shown movies' popularity."""

    def when(f: Figures) -> bool:
        tau = f.popularity_tau["offline"]
        return f.n >= 3 and tau is not None and sign * tau >= ASSOCIATION

    return when


def _say_popularity(f: Figures) -> list[str]:
    off, sim = f.popularity_tau["offline"] or 0.0, f.popularity_tau["simulated"]
    head = (
        f"Offline accuracy rewards popular slates here: across the {f.n} recommenders NDCG@{_k(f)} rises with the mean"
        f" popularity of the shown movies (Kendall τ = {off:.2f})"
        if off > 0
        else f"Offline accuracy does not reward popular slates here: across the {f.n} recommenders NDCG@{_k(f)} falls"
        f" as the mean popularity of the shown movies rises (Kendall τ = {off:.2f})"
    )
    if sim is None:
        return [f"{head}."]
    if sim >= ASSOCIATION:
        tail = "rise with it too"
    elif sim <= -ASSOCIATION:
        tail = "fall as it rises"
    else:
        tail = "hardly follow it"
    return [f"{head}; in simulation, liked watches per user {tail} (τ = {sim:.2f})."]


def _test_shares(f: Figures) -> dict[str, float] | None:
    shares = {r.name: r.watched_test.get("test_share") for r in f.report.results}
    if f.n < 2 or any(v is None for v in shares.values()):
        return None
    return shares  # type: ignore[return-value]


def _has_test_leader(f: Figures) -> bool:
    shares = _test_shares(f)
    return shares is not None and max(shares.values()) > min(shares.values())


def _say_test_leader(f: Figures) -> list[str]:
    shares = _test_shares(f) or {}
    hi, lo = max(shares, key=shares.__getitem__), min(shares, key=shares.__getitem__)
    return [
        f"Offline metrics reward showing what the real user rated next; in the simulation {hi} has the largest share"
        f" of watches that the real user also rated in the test part ({shares[hi]:.1%}; the smallest: {lo},"
        f" {shares[lo]:.1%})."
    ]


def _liked_share(f: Figures) -> float | None:
    return _fid(f, "watched_test").get("liked_never_rated_share")


def _say_liked(f: Figures, mostly_unrated: bool) -> list[str]:
    w = _fid(f, "watched_test")
    share, liked = w["liked_never_rated_share"], w["liked"]
    if mostly_unrated:
        return [
            f"{share:.1%} of the liked watches ({w['liked_never_rated']:,} of {liked:,}, all policies and seeds) are of"
            " movies the real user never rated, which the test part cannot score."
        ]
    return [
        f"Only {share:.1%} of the liked watches ({w['liked_never_rated']:,} of {liked:,}, all policies and seeds) are"
        f" of movies the real user never rated; {w['liked_in_test']:,} are of movies the real user rated in the test"
        " part, which offline metrics score."
    ]


def _say_rater(f: Figures) -> list[str]:
    t = _fid(f, "rater_on_test")
    return [
        f"The simulated users are only as faithful as their rater (`{f.report.rater}`): on the {t['n']:,} real test"
        f" ratings its expected rating has MAE {t['mae']:.3f} (real mean {t['real_mean']:.3f}, expected"
        f" {t['expected_mean']:.3f}), and a sampled rating equals the real one {t['sampled_exact']:.1%} of the time"
        f" (like agreement {t['like_agreement']:.1%}); see the fidelity check below."
    ]


def _rho(f: Figures) -> tuple[float, float] | None:
    t = _fid(f, "rater_on_test")
    a, b = t.get("popularity_rho_expected"), t.get("popularity_rho_real")
    return None if a is None or b is None else (a, b)


def _say_rho(f: Figures) -> list[str]:
    a, b = _rho(f) or (0.0, 0.0)
    more = "more" if a > b else "less"
    return [
        f"The rater `{f.report.rater}` ties its ratings to popularity {more} than the real users do: Spearman ρ between"
        f" a movie's popularity (history ratings) and the rating is {a:.2f} for its expected ratings against {b:.2f}"
        " for the real test ratings."
    ]


def _say_failures(f: Figures) -> list[str]:
    failed = f.report.failures
    total = len(failed) + f.n
    listed = "; ".join(f"{x.name} ({x.error} while {x.stage})" for x in failed)
    return [
        f"{len(failed)} of {_plural(total, 'policy', 'policies')} failed and {'is' if len(failed) == 1 else 'are'}"
        f" left out of every figure above: {listed} — see “Failed policies”."
    ]


RULES: tuple[Rule, ...] = (
    Rule("too few policies", lambda f: f.n < 2, _too_few),
    Rule("tau undefined", lambda f: f.n >= 2 and f.tau["tau"] is None, _tau_undefined),
    *(_tau_rule(name, band, verdict) for name, band, verdict in TAU_VERDICTS),
    Rule("swapped pairs", lambda f: bool(f.swaps), _swaps),
    Rule("no swapped pair", lambda f: f.n >= 2 and not f.swaps, _no_swap),
    Rule("lift overstated", _overstated, _say_overstated),
    Rule("lift understated", _understated, _say_understated),
    Rule("rating moves little", _rating_moves_little, lambda f: _say_rating(f, little=True)),
    Rule("rating moves too", _rating_moves_too, lambda f: _say_rating(f, little=False)),
    Rule("coverage", lambda f: f.n >= 1, _say_coverage),
    Rule("popularity rewarded offline", _popularity_offline(+1), _say_popularity),
    Rule("popularity penalised offline", _popularity_offline(-1), _say_popularity),
    Rule("test-part leader", _has_test_leader, _say_test_leader),
    Rule(
        "liked watches mostly unscored",
        lambda f: _liked_share(f) is not None and _liked_share(f) > 0.5,  # type: ignore[operator]
        lambda f: _say_liked(f, mostly_unrated=True),
    ),
    Rule(
        "liked watches mostly scored",
        lambda f: _liked_share(f) is not None and _liked_share(f) <= 0.5,  # type: ignore[operator]
        lambda f: _say_liked(f, mostly_unrated=False),
    ),
    Rule("rater fidelity", lambda f: bool(_fid(f, "rater_on_test").get("n")), _say_rater),
    Rule(
        "rater ties ratings to popularity",
        lambda f: _rho(f) is not None and abs(_rho(f)[0] - _rho(f)[1]) >= RHO_MARGIN,  # type: ignore[index]
        _say_rho,
    ),
    Rule("failed policies", lambda f: bool(f.report.failures), _say_failures),
)
"""The reading's rules, in the order their sentences are printed."""


def read(report: GapReport, rules: tuple[Rule, ...] = RULES) -> list[tuple[str, str]]:
    """``(rule name, sentence)`` for every sentence the report's figures support, in rule order."""
    f = figures(report)
    return [(rule.name, sentence) for rule in rules if rule.when(f) for sentence in rule.say(f)]
