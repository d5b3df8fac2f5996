"""The gap report and the ``benchmark`` subcommand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from reckit import rec_split_dir_fixture  # noqa: F401  (fixture)
from scipy.stats import kendalltau

from recsim_personas.cli import main
from recsim_personas.envs.session import SessionConfig
from recsim_personas.errors import ConfigError, PolicyError
from recsim_personas.recommenders import gap as gap_module
from recsim_personas.recommenders.gap import GapConfig, GapReport, PolicyFailure, PolicyResult, parse_policies
from recsim_personas.recommenders.gap_reading import RULES, read
from recsim_personas.recommenders.simulated import SIM_METRICS

CONFIG = GapConfig(policies=("random", "pop"), seeds=(0, 1), days=5)


def _result(
    name: str, ndcg: float, likes: float, spread: float = 0.5, test_share: float = 0.1, **means
) -> PolicyResult:
    """A planted result: every simulated metric 0.5 ± 0.1 unless given in ``means``; liked watches ``likes``."""
    sim = {m: {"mean": 0.5, "low": 0.4, "high": 0.6, "per_seed": [0.5]} for m in SIM_METRICS}
    for metric, mean in means.items():
        sim[metric] = {"mean": mean, "low": mean - 0.01, "high": mean + 0.01, "per_seed": [mean]}
    sim["likes_per_user"] = {"mean": likes, "low": likes - spread, "high": likes + spread, "per_seed": [likes]}
    return PolicyResult(
        name=name,
        offline={"recall": ndcg / 2, "ndcg": ndcg, "mrr": ndcg * 2},
        simulated=sim,
        watched_test={"watches_per_seed": 10.0, "n": 0, "test_share": test_share},
    )


RATER_ON_TEST = {
    "n": 10,
    "users": 4,
    "real_mean": 3.5,
    "expected_mean": 3.6,
    "mae": 0.8,
    "rmse": 1.0,
    "sampled_exact": 0.3,
    "like_agreement": 0.6,
}


def _report(results, failures=(), rater="bias", rater_on_test=None, watched_test=None) -> GapReport:
    fidelity = {
        "rater_on_test": RATER_ON_TEST if rater_on_test is None else rater_on_test,
        "watched_test": watched_test or {"n": 0, "watches_per_seed": 0.0, "test_share": 0.0},
    }
    return GapReport("abc123def456", CONFIG, rater, 20, results, fidelity, failures=list(failures))


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
    assert any("No pair of the 2 recommenders swaps places" in s for s in reading)
    paths = rep.save(tmp_path / "report")
    saved = json.loads(paths["json"].read_text())
    assert saved["offline_ranking"] == ["pop", "random"]
    assert saved["config"] == CONFIG.to_dict() and saved["config"]["session"] is None  # the world's own sessions
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Fidelity of the simulator" in paths["markdown"].read_text()


def _three(**kwargs):
    """random < pop < bpr offline, with per-policy simulated means from kwargs (lists of three)."""
    names, ndcg, likes = ("random", "pop", "recbole:BPR"), (0.04, 0.2, 0.3), (10.0, 20.0, 30.0)
    return [
        _result(n, x, y, **{m: v[i] for m, v in kwargs.items()})
        for i, (n, x, y) in enumerate(zip(names, ndcg, likes, strict=True))
    ]


def _pair(random_ndcg=0.04, pop_ndcg=0.30, random_likes=10.0, pop_likes=30.0, **kwargs):
    return [
        _result("random", random_ndcg, random_likes, **{m: v[0] for m, v in kwargs.items()}),
        _result("pop", pop_ndcg, pop_likes, **{m: v[1] for m, v in kwargs.items()}),
    ]


def _four(likes):
    return [_result(n, x, y) for n, x, y in zip(("random", "pop", "a", "b"), (0.1, 0.2, 0.3, 0.4), likes, strict=True)]


FAILURE = PolicyFailure("recbole:BPR", "build", "PolicyError", "RecBole could not train BPR. Fix: ...")
LIKED = {"n": 0, "watches_per_seed": 0.0, "test_share": 0.0, "liked": 200, "liked_in_test": 40}

# rule → (planted figures under which it speaks, planted figures under which it does not, a figure it states)
PLANTED = {
    "too few policies": (lambda: _report(_pair()[:1]), lambda: _report(_pair()), "1 policy finished (random)"),
    "tau undefined": (
        lambda: _report(_pair(random_ndcg=0.2, pop_ndcg=0.2)),
        lambda: _report(_pair()),
        "NDCG@10 is 0.200 for every policy",
    ),
    "tau high": (lambda: _report(_pair()), lambda: _report(_pair(pop_likes=5.0)), "Kendall τ = 1.00"),
    "tau middling": (lambda: _report(_four((10, 20, 40, 30))), lambda: _report(_four((10, 20, 30, 40))), "τ = 0.67"),
    "tau weak": (
        lambda: _report([_result("random", 0.04, 10.0), _result("pop", 0.3, 30.0), _result("b", 0.25, 40.0)]),
        lambda: _report(_pair()),
        "Kendall τ = 0.33",
    ),
    "tau backwards": (lambda: _report(_pair(pop_likes=5.0)), lambda: _report(_pair()), "Kendall τ = -1.00"),
    "swapped pairs": (
        lambda: _report(_pair(pop_likes=5.0)),
        lambda: _report(_pair()),
        "Offline, pop beats random (NDCG@10 0.300 vs 0.040)",
    ),
    "no swapped pair": (lambda: _report(_pair()), lambda: _report(_pair(pop_likes=5.0)), "offline (pop > random)"),
    "lift overstated": (
        lambda: _report(_pair()),  # 7.5× offline, 3× simulated
        lambda: _report(_pair(random_ndcg=0.1, pop_ndcg=0.2)),  # 2× offline, 3× simulated
        "Random's slates still earned 10.0 liked watches per user",
    ),
    "lift understated": (
        lambda: _report(_pair(random_ndcg=0.1, pop_ndcg=0.2)),
        lambda: _report(_pair()),
        "has 2.0× Random's NDCG@10 and 3.00× its liked watches",
    ),
    "rating moves little": (
        lambda: _report(_pair(mean_rating=(3.90, 3.94), watch_rate=(0.2, 0.3))),
        lambda: _report(_pair(mean_rating=(3.0, 4.0), watch_rate=(0.2, 0.21))),
        "spans 3.90–3.94",
    ),
    "rating moves too": (
        lambda: _report(_pair(mean_rating=(3.0, 4.0), watch_rate=(0.2, 0.21))),
        lambda: _report(_pair(mean_rating=(3.90, 3.94), watch_rate=(0.2, 0.3))),
        "the watch rate 0.200–0.210",
    ),
    "coverage": (
        lambda: _report(_pair(coverage=(1.0, 0.35))),
        lambda: _report([], failures=[FAILURE]),
        "random 100% / 0, pop 35% / 0",
    ),
    "popularity rewarded offline": (
        lambda: _report(_three(shown_popularity=[40.0, 250.0, 300.0])),
        lambda: _report(_three(shown_popularity=[300.0, 250.0, 40.0])),
        "rises with the mean popularity of the shown movies (Kendall τ = 1.00)",
    ),
    "popularity penalised offline": (
        lambda: _report(_three(shown_popularity=[300.0, 250.0, 40.0])),
        lambda: _report(_three(shown_popularity=[40.0, 250.0, 300.0])),
        "falls as the mean popularity of the shown movies rises (Kendall τ = -1.00)",
    ),
    "test-part leader": (
        lambda: _report([_result("random", 0.04, 10.0, test_share=0.02), _result("pop", 0.3, 30.0, test_share=0.2)]),
        lambda: _report([_result("random", 0.04, 10.0), _result("pop", 0.3, 30.0)]),
        "pop has the largest share of watches that the real user also rated in the test part (20.0%",
    ),
    "liked watches mostly unscored": (
        lambda: _report(_pair(), watched_test={**LIKED, "liked_never_rated": 160, "liked_never_rated_share": 0.8}),
        lambda: _report(_pair(), watched_test={**LIKED, "liked_never_rated": 60, "liked_never_rated_share": 0.3}),
        "80.0% of the liked watches (160 of 200",
    ),
    "liked watches mostly scored": (
        lambda: _report(_pair(), watched_test={**LIKED, "liked_never_rated": 60, "liked_never_rated_share": 0.3}),
        lambda: _report(_pair(), watched_test={**LIKED, "liked_never_rated": 160, "liked_never_rated_share": 0.8}),
        "Only 30.0% of the liked watches",
    ),
    "rater fidelity": (
        lambda: _report(_pair(), rater="mf"),
        lambda: _report(_pair(), rater_on_test={"n": 0}),
        "(`mf`): on the 10 real test ratings its expected rating has MAE 0.800",
    ),
    "rater ties ratings to popularity": (
        lambda: _report(
            _pair(), rater_on_test={**RATER_ON_TEST, "popularity_rho_expected": 0.5, "popularity_rho_real": 0.2}
        ),
        lambda: _report(
            _pair(), rater_on_test={**RATER_ON_TEST, "popularity_rho_expected": 0.25, "popularity_rho_real": 0.2}
        ),
        "to popularity more than the real users do: Spearman ρ between a movie's popularity (history ratings) and"
        " the rating is 0.50 for its expected ratings against 0.20",
    ),
    "failed policies": (
        lambda: _report(_pair(), failures=[FAILURE]),
        lambda: _report(_pair()),
        "1 of 3 policies failed and is left out of every figure above: recbole:BPR (PolicyError while build)",
    ),
}


def test_every_rule_of_the_reading_has_planted_figures():
    assert sorted(PLANTED) == sorted(rule.name for rule in RULES)


@pytest.mark.parametrize("rule", sorted(PLANTED))
def test_each_sentence_is_printed_exactly_when_the_figures_support_it(rule):
    fires, silent, figure = PLANTED[rule]
    said = [sentence for name, sentence in read(fires()) if name == rule]
    assert said and any(figure in s for s in said), (rule, said)
    assert rule not in [name for name, _ in read(silent())]


def test_no_sentence_of_the_reading_is_fixed_text():
    """The conclusions the reading used to print whatever the figures are gone (item: computed reading)."""
    rep = _report(_pair(random_ndcg=0.1, pop_ndcg=0.2, mean_rating=(3.0, 4.0), watch_rate=(0.2, 0.21)), rater="mf")
    text = " ".join(rep.reading())
    for fixed in (
        "barely moves",
        "come mostly from movies the user never rated",
        "classical bias rater",
        "a random slate",
    ):
        assert fixed not in text
    assert "understates" in text and "overstates" not in text


def test_failed_policies_are_listed_in_the_markdown_and_the_json():
    rep = _report(_pair(), failures=[FAILURE])
    md = rep.to_markdown()
    assert "## Failed policies" in md and "| recbole:BPR | build | PolicyError | RecBole could not train BPR." in md
    payload = rep.to_dict()
    assert payload["failed"] == [
        {"name": "recbole:BPR", "stage": "build", "error": "PolicyError", "message": FAILURE.message, "config": None}
    ]
    assert payload["offline_ranking"] == ["pop", "random"]


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
    by_ndcg = sorted(payload["results"], key=lambda r: -r["offline"]["ndcg"])
    by_likes = sorted(payload["results"], key=lambda r: -r["simulated"]["likes_per_user"]["mean"])
    assert payload["offline_ranking"] == [r["policy"] for r in by_ndcg]
    assert payload["simulated_ranking"] == [r["policy"] for r in by_likes]
    assert payload["fidelity"]["rater_on_test"]["n"] > 0
    # every config that produced it is recorded
    assert payload["config"]["policies"] == ["random", "pop", "recbole:BPR"] and payload["config"]["slate_size"] == 10
    # no session option given: the sessions fitted with the choice model are used, and recorded
    assert payload["config"]["session"] is None and payload["config"]["choice"] == "fitted"
    assert set(payload["fidelity"]["session"]) == set(SessionConfig().to_dict())
    assert payload["fidelity"]["choice"]["name"] == "fitted"
    assert payload["fidelity"]["alignment"]["1"]["roc_auc"] > 0.5
    assert all(r["behaviour"]["distances"] and r["replay"]["shown"] > 0 for r in payload["results"])
    assert payload["rater_artifact"]["spec"] == "bias" and payload["rater_artifact"]["artifact_id"] is None
    assert payload["rater_artifact"]["fitted_on_split"] == payload["split_id"]
    assert [r["config"] is None for r in payload["results"]] == [True, True, False]
    assert bpr["config"]["model"] == "BPR" and bpr["config"]["epochs"] == 1
    assert payload["failed"] == []
    for key in ("markdown", "json", "png"):
        assert (out / {"markdown": "gap.md", "json": "gap.json", "png": "gap.png"}[key]).stat().st_size > 0
    assert (out / "models" / "BPR" / "manifest.json").is_file()
    # a second run reuses the saved model (same split and settings)
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["results"][2]["offline"] == bpr["offline"]


def test_a_failing_policy_is_recorded_and_the_others_finish(rec_split_dir, tmp_path, capsys, monkeypatch):
    argv = ["benchmark", "--split", str(rec_split_dir), "--seeds", "0,1", "--days", "3", "--json", "--no-progress"]
    assert main([*argv, "--policies", "random,pop"]) == 0
    alone = json.loads(capsys.readouterr().out)
    real_build = gap_module.build_policy

    def build(name, *args, **kwargs):
        if name == "recbole:BPR":
            raise PolicyError("RecBole could not train BPR: the loss is NaN. Fix: a smaller learning rate.")
        return real_build(name, *args, **kwargs)

    monkeypatch.setattr(gap_module, "build_policy", build)
    out = tmp_path / "gap"
    code = main([*argv, "--policies", "random,recbole:BPR,pop", "--epochs", "1", "--out", str(out)])
    assert code == 1  # the report is written, then the failure is the exit status
    payload = json.loads(capsys.readouterr().out)
    # the finished policies' figures are exactly those of a run without the failing one
    figures = ("policy", "offline", "simulated", "watched_test", "recbole_evaluator")
    assert [{k: r[k] for k in figures} for r in payload["results"]] == [
        {k: r[k] for k in figures} for r in alone["results"]
    ]
    assert payload["failed"] == [
        {
            "name": "recbole:BPR",
            "stage": "build",
            "error": "PolicyError",
            "message": "RecBole could not train BPR: the loss is NaN. Fix: a smaller learning rate.",
            "config": gap_module.policy_config("recbole:BPR", seed=0, epochs=1).to_dict(),
        }
    ]
    assert json.loads((out / "gap.json").read_text())["failed"] == payload["failed"]
    assert "| recbole:BPR | build | PolicyError |" in (out / "gap.md").read_text()
    assert any("1 of 3 policies failed" in s for s in payload["reading"])


def test_the_benchmark_passes_the_session_config_to_the_simulation(rec_split_dir, capsys):
    argv = ["benchmark", "--split", str(rec_split_dir), "--policies", "pop", "--seeds", "0", "--days", "3"]
    argv += ["--json", "--no-progress"]
    assert main(argv) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*argv, "--session-max-pages", "1"]) == 0
    one_page = json.loads(capsys.readouterr().out)
    assert one_page["config"]["session"]["max_pages"] == 1
    pages = [p["results"][0]["simulated"]["pages_per_session"]["mean"] for p in (default, one_page)]
    assert pages[1] == 1.0 < pages[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--policies", "random,popular"], "unknown policy 'popular'"),
        (["--policies", "recbole:LightGNC"], "Did you mean 'LightGCN'"),
        (["--rater", "agents:/nowhere"], "is not a trained persona-agent directory"),
        (["--slate-size", "5"], "--slate-size must be at least 10"),
        (["--seeds", "1,1"], "GapConfig.seeds must be distinct non-negative integers"),
        (["--session-max-pages", "0"], "max_pages"),
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


def test_a_report_where_every_policy_failed_still_saves(tmp_path):
    rep = _report([], failures=[FAILURE])
    paths = rep.save(tmp_path / "failed")
    saved = json.loads(paths["json"].read_text())
    assert saved["results"] == [] and saved["offline_ranking"] == [] and saved["failed"][0]["name"] == "recbole:BPR"
    assert saved["reading"][0] == "0 policies finished (none): there is no ranking to compare."
    assert "## Failed policies" in paths["markdown"].read_text()


def test_gap_config_is_validated_and_round_trips():
    assert GapConfig.from_dict(CONFIG.to_dict()) == CONFIG
    assert GapConfig(policies="random, pop", seeds=[2, 0]).policies == ("random", "pop")
    session = GapConfig(policies=("pop",), session={"max_pages": 3}).session
    assert isinstance(session, SessionConfig) and session.max_pages == 3
    with pytest.raises(ConfigError, match="k must be at most slate_size = 10"):
        GapConfig(policies=("pop",), k=20)
    with pytest.raises(ConfigError, match=r"seeds must be distinct non-negative integers, got \(0, -1\)"):
        GapConfig(policies=("pop",), seeds=(0, -1))
    with pytest.raises(ConfigError, match="days must be a positive integer, got 0"):
        GapConfig(policies=("pop",), days=0)
    with pytest.raises(ConfigError, match="unknown GapConfig field 'day'"):
        GapConfig.from_dict({"day": 3})
