"""The gap report and the ``benchmark`` subcommand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from reckit import rec_split_dir_fixture  # noqa: F401  (fixture)
from scipy.stats import kendalltau

from recsim_personas.cli import main
from recsim_personas.errors import ConfigError
from recsim_personas.recommenders.gap import GapReport, PolicyResult, parse_policies
from recsim_personas.recommenders.simulated import SIM_METRICS


def _result(name: str, ndcg: float, likes: float, spread: float = 0.5) -> PolicyResult:
    sim = {m: {"mean": 0.5, "low": 0.4, "high": 0.6, "per_seed": [0.5]} for m in SIM_METRICS}
    sim["likes_per_user"] = {"mean": likes, "low": likes - spread, "high": likes + spread, "per_seed": [likes]}
    return PolicyResult(
        name=name,
        offline={"recall": ndcg / 2, "ndcg": ndcg, "mrr": ndcg * 2},
        simulated=sim,
        watched_test={"watches_per_seed": 10.0, "n": 0, "test_share": 0.1},
    )


def _report(results) -> GapReport:
    fidelity = {
        "rater_on_test": {
            "n": 10,
            "real_mean": 3.5,
            "expected_mean": 3.6,
            "mae": 0.8,
            "rmse": 1.0,
            "sampled_exact": 0.3,
            "like_agreement": 0.6,
        },
        "watched_test": {"n": 0, "watches_per_seed": 0.0, "test_share": 0.0},
    }
    return GapReport("abc123def456", "bias", (0, 1), 5, 10, 20, results, fidelity)


def test_rankings_kendall_deltas_and_reading_of_a_disagreement():
    rep = _report(
        [_result("random", 0.04, 10.0), _result("pop", 0.30, 30.0), _result("recbole:BPR", 0.25, 40.0, spread=1.0)]
    )
    assert rep.offline_ranking() == ["pop", "recbole:BPR", "random"]
    assert rep.simulated_ranking() == ["recbole:BPR", "pop", "random"]
    tau = kendalltau([0.04, 0.30, 0.25], [10.0, 30.0, 40.0]).statistic
    assert rep.kendall()["likes_per_user"]["tau"] == pytest.approx(tau) == pytest.approx(1 / 3)
    deltas = {d["policy"]: d for d in rep.deltas()}
    assert deltas["pop"]["rank_shift"] == -1 and deltas["recbole:BPR"]["rank_shift"] == 1
    assert deltas["pop"]["offline_lift"] == pytest.approx(7.5) and deltas["pop"]["simulated_lift"] == pytest.approx(3.0)
    reading = " ".join(rep.reading())
    assert "Offline, pop beats recbole:BPR" in reading and "larger than the seed-to-seed noise" in reading
    assert "overstates" in reading
    md = rep.to_markdown()
    assert "| pop | 2 | 3 |" not in md and "| pop | 1 | 2 | -1 |" in md


def test_agreeing_rankings_are_read_as_agreement(tmp_path):
    rep = _report([_result("random", 0.04, 10.0), _result("pop", 0.30, 30.0)])
    assert rep.kendall()["likes_per_user"]["tau"] == pytest.approx(1.0)
    reading = rep.reading()
    assert "almost exactly as the simulated users do" in reading[0]
    assert any("No pair of recommenders swaps places" in s for s in reading)
    paths = rep.save(tmp_path / "report")
    assert json.loads(paths["json"].read_text())["offline_ranking"] == ["pop", "random"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Fidelity of the simulator" in paths["markdown"].read_text()


def test_policy_lists_are_validated():
    assert parse_policies("random, pop,recbole:bpr") == ("random", "pop", "recbole:BPR")
    with pytest.raises(ConfigError, match=r"unknown policy 'popular'.*Did you mean 'pop'"):
        parse_policies("random,popular")
    with pytest.raises(ConfigError, match="Did you mean 'SASRec'"):
        parse_policies("recbole:SASRek")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_policies("pop,pop")


def test_benchmark_cli_writes_the_report(rec_split_dir, tmp_path, capsys):
    out = tmp_path / "gap"
    argv = ["benchmark", "--split", str(rec_split_dir), "--policies", "random,pop,recbole:BPR", "--seeds", "0,1"]
    argv += ["--days", "3", "--epochs", "1", "--out", str(out), "--json", "--no-progress"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in payload["results"]] == ["random", "pop", "recbole:BPR"]
    assert payload["seeds"] == [0, 1] and payload["days"] == 3 and payload["rater"] == "bias"
    bpr = payload["results"][2]
    for metric in ("recall", "ndcg", "mrr"):  # RecBole's evaluator on the same split agrees
        assert bpr["offline"][metric] == pytest.approx(bpr["recbole_evaluator"][f"{metric}@10"], abs=5e-4)
    x = [r["offline"]["ndcg"] for r in payload["results"]]
    y = [r["simulated"]["likes_per_user"]["mean"] for r in payload["results"]]
    tau = kendalltau(x, y).statistic
    assert payload["kendall_tau"]["likes_per_user"]["tau"] == pytest.approx(tau)
    assert sorted(payload["offline_ranking"]) == sorted(payload["simulated_ranking"])
    assert payload["fidelity"]["rater_on_test"]["n"] > 0
    for key in ("markdown", "json", "png"):
        assert (out / {"markdown": "gap.md", "json": "gap.json", "png": "gap.png"}[key]).stat().st_size > 0
    assert (out / "models" / "BPR" / "manifest.json").is_file()
    # a second run reuses the saved model (same split and settings)
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["results"][2]["offline"] == bpr["offline"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--policies", "random,popular"], "unknown policy 'popular'"),
        (["--policies", "recbole:LightGNC"], "Did you mean 'LightGCN'"),
        (["--rater", "agents:/nowhere"], "is not a trained persona-agent directory"),
        (["--slate-size", "5"], "--slate-size must be at least 10"),
    ],
)
def test_benchmark_cli_bad_input_exits_2_with_one_line(rec_split_dir, capsys, extra, message):
    assert main(["benchmark", "--split", str(rec_split_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_registering_the_benchmark_imports_nothing_heavy():
    code = (
        "import argparse, sys\n"
        "from recsim_personas.cli.benchmark import register_benchmark\n"
        "p = argparse.ArgumentParser()\n"
        "register_benchmark(p.add_subparsers(), argparse.ArgumentParser(add_help=False))\n"
        "import recsim_personas.recommenders as r\n"
        "print(' '.join(m for m in ('torch', 'pandas', 'recbole', 'scipy', 'mesa') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
    from recsim_personas import recommenders

    assert recommenders.evaluate_policy.__module__ == "recsim_personas.recommenders.simulated"
    with pytest.raises(AttributeError):
        recommenders.no_such_name  # noqa: B018
