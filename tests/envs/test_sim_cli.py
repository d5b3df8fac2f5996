from __future__ import annotations

import argparse
import json

import pytest
from simkit import tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.cli.simulate import cmd_simulate, register_simulate
from recsim_personas.data import ProtocolConfig, prepare_split
from recsim_personas.errors import ArtifactError, ConfigError


def parse(*argv: str) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    common.add_argument("-v", "--verbose", action="count", default=0)
    common.add_argument("--no-progress", action="store_true")
    parser = argparse.ArgumentParser(prog="recsim-personas")
    sub = parser.add_subparsers(dest="command", required=True)
    register_simulate(sub, common)
    return parser.parse_args(["simulate", *argv])


def test_simulate_prints_the_per_day_summary_as_json(capsys, tiny_split_dir):
    args = parse("--split", str(tiny_split_dir), "--days", "4", "--seed", "3", "--slate-size", "5", "--json")
    assert args.func is cmd_simulate and args.rater == "bias" and args.policy == "random"
    assert cmd_simulate(args) == 0
    out, _ = capsys.readouterr()
    payload = json.loads(out)  # exactly one JSON object
    assert [d["day"] for d in payload["per_day"]] == [1, 2, 3, 4]
    assert payload["policy"] == "random" and payload["rater"] == "bias" and payload["users"] == 20
    assert payload["totals"]["sessions"] == sum(d["sessions"] for d in payload["per_day"]) > 0
    assert payload["totals"]["items_shown"] == 5 * payload["totals"]["pages"]
    assert payload["session_config"]["max_pages"] == 10
    assert cmd_simulate(args) == 0  # same seed, same run
    again = json.loads(capsys.readouterr()[0])
    assert again["per_day"] == payload["per_day"]
    args = parse("--split", str(tiny_split_dir), "--days", "4", "--seed", "4", "--slate-size", "5", "--json")
    cmd_simulate(args)
    assert json.loads(capsys.readouterr()[0])["per_day"] != payload["per_day"]


def test_simulate_text_table(capsys, tiny_split_dir):
    args = parse("--split", str(tiny_split_dir), "--days", "2", "--policy", "pop", "--no-progress")
    assert cmd_simulate(args) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("simulated 2 days of 20 users") and "policy pop" in lines[0]
    assert lines[2].startswith("| day | sessions | pages | shown | watched | mean rating |")
    assert lines[4].startswith("| 1 |") and lines[5].startswith("| 2 |") and lines[6].startswith("| total |")
    assert "users stopped returning" in lines[-1]


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        (["--rater", "agents:"], ConfigError, "name the agents directory"),
        (["--rater", "bais"], ConfigError, "unknown rater 'bais'. Did you mean 'bias'"),
        (["--policy", "popular"], ConfigError, "unknown policy 'popular'. Did you mean 'pop'"),
        (["--slate-size", "61"], ConfigError, "--slate-size 61 exceeds the split's 60 items"),
    ],
)
def test_simulate_errors(tiny_split_dir, argv, error, message):
    with pytest.raises(error, match=message):
        cmd_simulate(parse("--split", str(tiny_split_dir), "--days", "1", *argv))


def test_simulate_takes_the_session_config_from_a_file_and_flags(capsys, tiny_split_dir, tmp_path):
    cfg = tmp_path / "session.toml"
    cfg.write_text("max_pages = 3\nstart_min = 1.0\nstart_max = 1.0\n")
    argv = ("--split", str(tiny_split_dir), "--days", "2", "--json", "--no-progress", "--session-config", str(cfg))
    assert cmd_simulate(parse(*argv, "--session-max-pages", "2")) == 0
    payload = json.loads(capsys.readouterr()[0])
    assert payload["session_config"]["max_pages"] == 2 and payload["session_config"]["start_min"] == 1.0
    assert payload["per_day"][0]["sessions"] == 20  # start probability 1: every user comes on day 1
    assert payload["totals"]["pages_per_session"] <= 2
    with pytest.raises(ConfigError, match=r"SessionConfig.max_pages must be an integer >= 1, got 0"):
        cmd_simulate(parse(*argv, "--session-max-pages", "0"))
    cfg.write_text("max_page = 3\n")
    with pytest.raises(ConfigError, match=r"unknown SessionConfig field 'max_page'.*Did you mean 'max_pages'"):
        cmd_simulate(parse(*argv))


def test_simulate_bad_split_and_days(tmp_path, capsys):
    with pytest.raises(ArtifactError, match="is not a split"):
        cmd_simulate(parse("--split", str(tmp_path / "nope")))
    with pytest.raises(SystemExit):
        parse("--split", "x", "--days", "0")
    assert "expected a positive integer, got '0'" in capsys.readouterr()[1]


def test_simulate_on_a_split_of_the_tiny_dataset(capsys, tiny_dataset_dir, tmp_path):
    config = ProtocolConfig(n_users=8, min_ratings=10, max_ratings=30)
    split, _ = prepare_split(config, tmp_path / "split", data_dir=tiny_dataset_dir, download=False)
    assert cmd_simulate(parse("--split", str(split.path), "--days", "3", "--json", "--no-progress")) == 0
    payload = json.loads(capsys.readouterr()[0])
    assert payload["users"] == 8 and payload["split_id"] == split.split_id


@pytest.mark.parametrize("choice", ["handset", "fitted"])
def test_thirty_days_on_ml100k_with_a_random_policy(capsys, ml100k_split, choice):
    argv = ("--split", str(ml100k_split.path), "--json", "--no-progress", "--choice", choice)
    assert cmd_simulate(parse(*argv)) == 0
    payload = json.loads(capsys.readouterr()[0])
    assert payload["days"] == 30 and len(payload["per_day"]) == 30 and payload["users"] == 200
    assert payload["choice"] == choice
    totals = payload["totals"]
    # hand-set: every user starts a session on at least 5% of days; fitted: the daily start rates fitted on the
    # timestamps (0.3-4%), far fewer sessions
    if choice == "handset":
        assert totals["sessions"] > 30 * 200 * 0.05
        assert payload["session_config"]["continue_unit"] == "page"
    else:
        assert 0 < totals["sessions"] < 30 * 200 * 0.05
        assert payload["session_config"]["continue_unit"] == "watch"
    assert 0.05 < totals["watch_rate"] < 0.6
    assert 1 <= totals["pages_per_session"] <= 10 and 3.0 < totals["mean_rating"] < 4.5
    assert totals["early_exits"] + totals["page_limit"] <= totals["sessions"]


def test_simulate_a_synthetic_population_drawn_by_persona_cluster(capsys, tiny_split_dir, tmp_path):
    from recsim_personas.data import load_split
    from recsim_personas.personas.clustering import ClusterResult, save_clusters

    users = load_split(tiny_split_dir).user_ids
    labels = {int(u): int(k % 2) for k, u in enumerate(users)}
    save_clusters(
        ClusterResult(k=2, chosen_by="test", labels=labels, sizes=[10, 10]), tmp_path / "clusters", plot=False
    )
    argv = ("--split", str(tiny_split_dir), "--days", "2", "--synthetic-users", "57", "--json", "--no-progress")
    assert cmd_simulate(parse(*argv, "--clusters", str(tmp_path / "clusters"))) == 0
    payload = json.loads(capsys.readouterr()[0])
    assert payload["users"] == 57 and payload["synthetic"] and payload["totals"]["sessions"] > 0
    with pytest.raises(ConfigError, match="--clusters draws synthetic users' templates; it needs --synthetic-users"):
        cmd_simulate(parse("--split", str(tiny_split_dir), "--clusters", str(tmp_path / "clusters")))
