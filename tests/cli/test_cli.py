from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recsim_personas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def prepare(capsys, out, data_dir, *flags):
    """``data prepare --out OUT --data-dir DIR --no-download FLAGS...``."""
    return run(capsys, "data", "prepare", "--out", str(out), "--data-dir", str(data_dir), "--no-download", *flags)


def test_prepare_info_eval_roundtrip_on_synthetic_data(capsys, tiny_dataset_dir, tmp_path):
    out = tmp_path / "split"
    args = ["--users", "8", "--min-ratings", "10", "--max-ratings", "30"]
    code, stdout, _ = prepare(capsys, out, tiny_dataset_dir, *args, "--json")
    assert code == 0
    payload = json.loads(stdout)  # exactly one JSON object
    assert payload["created"] is True and payload["counts"]["users"] == 8
    code, stdout, _ = prepare(capsys, out, tiny_dataset_dir, *args)
    assert code == 0 and "already up to date" in stdout
    code, stdout, _ = run(capsys, "data", "info", str(out), "--json")
    info = json.loads(stdout)
    assert info["split_id"] == payload["split_id"] and info["counts"]["users"] == 8
    code, stdout, _ = run(capsys, "data", "info", str(out))
    assert code == 0 and "8 of" in stdout
    code, stdout, _ = run(
        capsys,
        "eval",
        "--split",
        str(out),
        "--raters",
        "global,bias",
        "--out",
        str(tmp_path / "rep"),
        "--json",
        "--no-progress",
    )
    assert code == 0
    report = json.loads(stdout)
    assert [r["rater"] for r in report["raters"]] == ["global", "bias"]
    assert (tmp_path / "rep" / "fidelity.md").is_file() and (tmp_path / "rep" / "fidelity.png").is_file()
    code, stdout, _ = run(capsys, "eval", "--split", str(out), "--raters", "global", "--no-progress")
    assert stdout.startswith("| rater |")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "prepare", "--dataset", "ml-100", "--out", "X"], "unknown dataset 'ml-100'. Did you mean 'ml-100k'"),
        (["eval", "--split", "NOPE", "--raters", "bais"], "unknown rater 'bais'. Did you mean 'bias'"),
        (["eval", "--split", "NOPE", "--raters", "bias"], "is not a split"),
        (["data", "info", "NOPE"], "is not a split"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(capsys, argv, message):
    code, stdout, err = run(capsys, *argv)
    assert code == 2
    assert stdout == ""
    assert message in err and err.startswith("error: ") and err.count("\n") == 1


def test_impossible_split_names_the_fix(capsys, tiny_dataset_dir, tmp_path):
    code, _, err = prepare(capsys, tmp_path / "s", tiny_dataset_dir, "--users", "500", "--min-ratings", "10")
    assert code == 2 and "fewer than the 500 requested" in err and "--users" in err
    assert not (tmp_path / "s").exists()


def test_protocol_flags_build_the_config_and_default_to_the_dataclass():
    from recsim_personas.cli import build_parser
    from recsim_personas.data import ProtocolConfig

    parser = build_parser()
    args = parser.parse_args(["data", "prepare", "--out", "X"])
    assert args.protocol_options.given(args) == {}  # no default restated by the command line
    assert args.protocol_options.build(args) == ProtocolConfig()
    flags = ["--dataset", "ml-1m", "--users", "all", "--min-ratings", "20", "--max-ratings", "50"]
    args = parser.parse_args(["data", "prepare", "--out", "X", *flags, "--train-ratio", "0.5", "--seed", "3"])
    assert args.protocol_options.build(args) == ProtocolConfig("ml-1m", None, 20, 50, 0.5, 3)


def test_prepare_help_shows_the_dataclass_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--users", 200), ("--min-ratings", 100), ("--max-ratings", 200), ("--seed", 0)):
        assert f"{flag} N" in text and f"(default: {default})" in text
    assert "'all'" in text and "(default: 0.6)" in text and "(default: ml-100k)" in text


def test_all_users(capsys, tiny_dataset_dir, tmp_path):
    code, stdout, _ = prepare(
        capsys, tmp_path / "s", tiny_dataset_dir, "--users", "all", "--min-ratings", "10", "--json"
    )
    assert code == 0
    payload = json.loads(stdout)
    assert payload["config"]["n_users"] is None
    assert payload["counts"]["users"] == payload["counts"]["eligible_users"] > 0


@pytest.mark.parametrize(("content", "what"), [(b"", "it is empty"), (b"\n \n", "it is empty but for blank lines")])
def test_an_empty_ratings_file_is_named(capsys, tiny_dataset_dir, tmp_path, content, what):
    (tiny_dataset_dir / "ml-100k" / "u.data").write_bytes(content)
    code, _, err = prepare(capsys, tmp_path / "s", tiny_dataset_dir)
    assert code == 2
    assert f"u.data: the file holds no ratings ({what}). Fix: restore u.data" in err
    assert "only 0 users" not in err
    assert not (tmp_path / "s").exists()


def test_users_must_be_positive_or_all(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "prepare", "--out", "X", "--users", "0"])
    assert exc.value.code == 2
    assert "positive integer or 'all'" in capsys.readouterr().err


@pytest.mark.movielens
def test_ml1m_without_ratings_is_explained(capsys, movielens_root, tmp_path):
    code, _, err = run(
        capsys, "data", "prepare", "--dataset", "ml-1m", "--data-dir", str(movielens_root), "--out", str(tmp_path / "s")
    )
    assert code == 2
    assert "ratings.dat" in err and "no rating values" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.movielens
def test_cli_on_real_ml100k(capsys, movielens_root, tmp_path):
    code, stdout, _ = run(
        capsys,
        "data",
        "prepare",
        "--data-dir",
        str(movielens_root),
        "--out",
        str(tmp_path / "s"),
        "--json",
        "--no-progress",
    )
    assert code == 0
    counts = json.loads(stdout)["counts"]
    assert (counts["eligible_users"], counts["users"], counts["train"], counts["test"]) == (216, 200, 17018, 11474)


def test_help_is_fast_and_light():
    code = (
        "import sys, time; t = time.perf_counter();"
        "from recsim_personas.cli import build_parser; build_parser().format_help();"
        "heavy = [m for m in ('torch', 'transformers', 'pandas', 'scipy', 'mesa') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    res = subprocess.run([sys.executable, "-m", "recsim_personas", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "data" in res.stdout and "eval" in res.stdout and "simulate" in res.stdout
