"""The ``recsim-personas ope`` command on the tiny fixture split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.cli import build_parser
from recsim_personas.cli.ope import cmd_ope, register_ope
from recsim_personas.errors import ArtifactError, ConfigError

SMALL = ("--pages", "80", "--seeds", "0", "--num-envs", "6", "--slate-size", "5", "--factor-dim", "6", "--no-progress")


def parse(*argv: str) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    common.add_argument("-v", "--verbose", action="count", default=0)
    common.add_argument("--no-progress", action="store_true")
    parser = argparse.ArgumentParser(prog="recsim-personas")
    sub = parser.add_subparsers(dest="command", required=True)
    register_ope(sub, common)
    return parser.parse_args(["ope", *argv])


def test_ope_prints_one_json_report_and_writes_the_files(capsys, tiny_split_dir, tmp_path):
    out = tmp_path / "ope"
    args = parse(
        "--split", str(tiny_split_dir), "--choice", "handset", "--targets", "greedy:affinity,pl:affinity@0.5",
        "--estimators", "ips,iips,dr", "--out", str(out), "--json", *SMALL,
    )  # fmt: skip
    assert args.func is cmd_ope and args.rater == "bias"
    assert cmd_ope(args) == 0
    payload = json.loads(capsys.readouterr()[0])  # exactly one JSON object
    assert payload["config"]["targets"] == ["greedy:affinity", "pl:affinity@0.5"]
    assert payload["config"]["estimators"] == ["ips", "iips", "dr"] and payload["world"]["choice"] == "handset"
    targets = payload["summary"]["targets"]
    assert set(targets["greedy:affinity"]["estimators"]) == {"ips", "iips", "dr"}
    assert any("DR is within 10% relative RMSE" in f for f in payload["findings"])
    assert {Path(p).name for p in payload["files"].values()} == {"report.json", "report.md", "report.png"}
    assert (out / "seeds" / "seed-0.json").is_file()
    # run again: the seed's results are reused (same figures); other settings are refused
    assert cmd_ope(args) == 0
    assert json.loads(capsys.readouterr()[0])["per_seed"] == payload["per_seed"]
    with pytest.raises(ArtifactError, match="was computed with other settings"):
        cmd_ope(parse("--split", str(tiny_split_dir), "--choice", "handset", "--out", str(out), *SMALL))


def test_ope_text_output_and_subcommand_registered(capsys, tiny_split_dir):
    assert "ope" in build_parser().format_help()
    args = parse("--split", str(tiny_split_dir), "--choice", "handset", "--targets", "greedy:pop", *SMALL)
    assert cmd_ope(args) == 0
    out = capsys.readouterr()[0]
    assert out.startswith("# Off-policy evaluation of slate recommenders against the simulator")
    assert "| `greedy:pop` | IIPS |" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--behaviour", "greedy:pop"], "must be a stochastic policy"),
        (["--targets", "pl:popularity"], "unknown base score 'popularity'"),
        (["--save-logs"], "--save-logs needs --out DIR"),
        (["--num-envs", "50"], r"num_envs \(50\) exceeds the world's 20 users"),
    ],
)
def test_ope_errors(tiny_split_dir, argv, message):
    with pytest.raises(ConfigError, match=message):
        cmd_ope(parse("--split", str(tiny_split_dir), "--choice", "handset", *SMALL, *argv))
