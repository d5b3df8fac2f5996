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
