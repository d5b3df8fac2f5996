from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsim_personas.agents.fidelity import evaluate_fidelity, w1_distance
from recsim_personas.errors import RaterOutputError


class TableRater:
    """Returns a fixed distribution per (user, item)."""

    def __init__(self, name, table):
        self.name, self.table = name, table

    def predict(self, users, items):
        return np.array([self.table[(int(u), int(i))] for u, i in zip(users, items, strict=True)])


TEST = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 3], "rating": [5, 3, 1, 4]})


def onehot(r):
    v = np.zeros(5)
    v[r - 1] = 1
    return v


def test_perfect_rater_scores_zero_and_a_wrong_one_does_not(tmp_path):
    truth = {(u, i): onehot(r) for u, i, r in TEST.itertuples(index=False)}
    flat = {k: np.full(5, 0.2) for k in truth}
    report = evaluate_fidelity([TableRater("oracle", truth), TableRater("flat", flat)], TEST, split_id="abc")
    oracle, uniform = report.rows
    assert oracle.rmse_expected == 0 and oracle.mae_mode == 0 and oracle.w1 == 0 and oracle.w1_user == 0
    assert oracle.nll == pytest.approx(0, abs=1e-9)
    assert uniform.rmse_expected == pytest.approx(np.sqrt(np.mean((3 - TEST.rating) ** 2)))
    assert uniform.mae_mode == pytest.approx(np.mean(np.abs(1 - TEST.rating)))  # mode of a flat row = 1
    assert uniform.mae_median == pytest.approx(np.mean(np.abs(3 - TEST.rating)))  # median of a flat row = 3
    assert oracle.mae_median == 0
    assert uniform.nll == pytest.approx(np.log(5))
    paths = report.save(tmp_path)
    assert json.loads(paths["json"].read_text())["raters"][0]["rater"] == "oracle"
    assert "| flat |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_w1_matches_the_cdf_formula():
    p, q = np.array([0.5, 0, 0, 0, 0.5]), np.array([0, 0, 1.0, 0, 0])
    assert w1_distance(p, q) == pytest.approx(2.0)
    assert w1_distance(p, p) == 0


def test_malformed_rater_output_is_refused():
    bad = {k: np.full(5, 0.3) for k in zip(TEST.user_id, TEST.item_id, strict=True)}
    with pytest.raises(RaterOutputError, match=r"bad.*summing"):
        evaluate_fidelity([TableRater("bad", bad)], TEST)


def test_report_entry_round_trips_through_json_and_scores_per_persona():
    from recsim_personas.agents.agent_report import ReportEntry, new_report, score_entry

    truth = {(u, i): onehot(r) for u, i, r in TEST.itertuples(index=False)}
    persona_of = {1: 0, 2: 1}
    entry = score_entry(TableRater("oracle", truth), TEST, persona_of, family="agent", variant="persona", memories=1)
    assert set(entry.per_persona) == {"0", "1"} and entry.per_persona["0"].n == 2
    back = ReportEntry.from_dict(json.loads(json.dumps(entry.to_dict())))
    assert back == entry
    report = new_report(TEST, persona_of, "abc")
    report.entries.append(back)
    assert "| oracle | 1 |" in report.to_markdown()


def fixed_input() -> tuple[pd.DataFrame, np.ndarray]:
    """29 test ratings of 5 users over 12 items and a distribution per rating (seeded, not fitted)."""
    rng = np.random.default_rng(7)
    n = 40
    users = rng.integers(1, 6, n)
    items = rng.permutation(np.arange(1, 13).repeat(5))[:n]
    test = pd.DataFrame({"user_id": users, "item_id": items, "rating": rng.integers(1, 6, n)})
    test = test.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    return test, rng.dirichlet(np.ones(5), len(test))


# The figures both reports gave on fixed_input() before they shared one scorer (recorded at commit ae7e537).
OVERALL = {
    "n": 29,
    "rmse_expected": 1.850845207270684,
    "mae_expected": 1.5605399267545528,
    "rmse_mode": 2.599734734478726,
    "mae_mode": 2.206896551724138,
    "mae_median": 1.8620689655172413,
    "w1": 0.18944370909484323,
    "w1_user": 0.8752762504144564,
    "nll": 2.2042857623211507,
}
PERSONA_2 = {"n": 8, "rmse_expected": 1.750970040517554, "mae_expected": 1.5155742230089375, "w1": 0.4621298447054654}


def test_both_fidelity_reports_give_the_figures_they_gave_before_on_a_fixed_input():
    from recsim_personas.agents.agent_report import score_entry

    test, dist = fixed_input()
    table = dict(zip(zip(test.user_id.tolist(), test.item_id.tolist(), strict=True), dist, strict=True))
    rater = TableRater("table", table)
    row = evaluate_fidelity([rater], test).rows[0]
    entry = score_entry(rater, test, {1: 0, 2: 0, 3: 1, 4: 1, 5: 2}, family="agent", variant="persona")
    for scored in (row, entry.overall):
        assert {k: getattr(scored, k) for k in OVERALL} == pytest.approx(OVERALL, rel=1e-12)
    assert {k: getattr(entry.per_persona["2"], k) for k in PERSONA_2} == pytest.approx(PERSONA_2, rel=1e-12)
    assert [entry.per_persona[c].n for c in ("0", "1", "2")] == [9, 12, 8]


# What the gap report's simulator check gave on fixed_input() before it used the same scorer (commit ae7e537).
RATER_ON_TEST = {
    "n": 29,
    "real_mean": 3.0,
    "expected_mean": 3.186839130175268,
    "sampled_mean": 3.0344827586206895,
    "mae": 1.5605399267545528,
    "rmse": 1.850845207270684,
    "sampled_exact": 0.20689655172413793,
    "like_agreement": 0.4827586206896552,
}
WATCHED_TEST = {
    "watches_per_seed": 30.0,
    "n": 18,
    "test_share": 0.3,
    "sim_mean": 2.8333333333333335,
    "real_mean": 2.6666666666666665,
    "mae": 1.6111111111111112,
    "exact": 0.2222222222222222,
    "like_agreement": 0.6111111111111112,
}


def test_the_gap_report_s_simulator_check_gives_the_figures_it_gave_before_on_a_fixed_input():
    from types import SimpleNamespace

    from recsim_personas.recommenders.gap_fidelity import rater_on_test, watched_test

    test, dist = fixed_input()
    table = dict(zip(zip(test.user_id.tolist(), test.item_id.tolist(), strict=True), dist, strict=True))
    items = np.arange(1, 13)
    world = SimpleNamespace(
        rater=TableRater("table", table), rater_name="table", item_ids=items, item_popularity=items * 3 % 7
    )
    got = rater_on_test(world, test, seed=3)
    assert {k: got[k] for k in RATER_ON_TEST} == pytest.approx(RATER_ON_TEST, rel=1e-12)
    rng = np.random.default_rng(11)
    watched = [
        {"user_id": rng.integers(1, 6, 30), "item_id": rng.integers(1, 16, 30), "rating": rng.integers(1, 6, 30)}
        for _ in range(2)
    ]
    w = watched_test(watched, test)
    assert {k: w[k] for k in WATCHED_TEST} == pytest.approx(WATCHED_TEST, rel=1e-12)


def test_rating_agreement_of_point_ratings():
    from recsim_personas.agents.fidelity import rating_agreement

    got = rating_agreement([5, 4, 2, 1], [4, 4, 3, 5], like_threshold=4)
    assert got == {"n": 4, "predicted_mean": 3.0, "real_mean": 4.0, "mae": 1.5, "exact": 0.25, "like_agreement": 0.75}
    assert rating_agreement([3, 4], [3, 4], like_threshold=4)["like_agreement"] == 1.0
    assert rating_agreement([], []) == {"n": 0}
    with pytest.raises(ValueError, match="2 predicted ratings for 1 real"):
        rating_agreement([1, 2], [1])
