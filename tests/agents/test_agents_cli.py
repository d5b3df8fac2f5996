"""`recsim-personas agents train` / `agents eval` on the tiny world (real MiniLM, rank 2, a few examples)."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("peft")


from recsim_personas.cli import main


def run(capsys, *argv):
    code = main([*argv, "--json", "--no-progress"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def test_train_then_eval_with_json_output(world, capsys):
    split, personas = str(world.split.path), str(world.pset.path)
    out = world.root / "cli-single"
    train = [
        *("agents", "train", "--split", split, "--personas", personas, "--backbone", "encoder"),
        *("--variant", "single", "--memories", "0", "--anchor", "bias", "--max-train", "8", "--max-valid", "4"),
        *("--rank", "2", "--max-length", "128", "--out", str(out)),
    ]
    code, payload, err = run(capsys, *train)
    assert code == 0, err
    assert payload["variant"] == "single" and payload["anchor"] == "bias" and payload["memories"] == 0
    assert [(a["name"], a["status"], a["n_train"]) for a in payload["adapters"]] == [("single", "trained", 8)]
    assert (out / "adapters" / "single" / "adapter_model.safetensors").is_file()
    code, payload, _ = run(capsys, *train)  # the same command again: nothing to do
    assert code == 0 and payload["adapters"][0]["status"] == "skipped"

    code, payload, err = run(
        capsys,
        *("agents", "eval", "--split", split, "--personas", personas, "--agents", str(out), "--memories", "1"),
        *("--raters", "bias", "--max-test", "10", "--out", str(world.root / "cli-report")),
    )
    assert code == 0, err
    labels = [e["label"] for e in payload["entries"]]
    assert labels == ["bias", "encoder single-LoRA mem0 anchored", "encoder single-LoRA mem1 anchored"]
    assert payload["n_test"] == 10 and all(e["urr"] == 0.0 for e in payload["entries"])
    assert all(0 < e["overall"]["rmse_expected"] < 4 for e in payload["entries"])
    assert set(payload["personas"]) == {"0", "1"} and sum(payload["personas"].values()) == 10
    assert set(payload["entries"][1]["per_persona"]) == {"0", "1"}
    for suffix in ("md", "json", "png"):
        assert (world.root / "cli-report" / f"agents_fidelity.{suffix}").is_file()

    twin = world.root / "cli-single-copy"
    shutil.copytree(out, twin)
    code, payload, err = run(
        capsys,
        *("agents", "eval", "--split", split, "--personas", personas, "--agents", str(out), str(twin)),
        *("--raters", "", "--max-test", "5"),
    )
    assert code == 0, err
    assert [e["label"] for e in payload["entries"]] == [
        "encoder single-LoRA mem0 anchored [cli-single]",
        "encoder single-LoRA mem0 anchored [cli-single-copy]",
    ]


def test_bad_input_is_one_error_line(world, capsys, tmp_path):
    split, personas = str(world.split.path), str(world.pset.path)
    code, _, err = run(capsys, "agents", "eval", "--split", split, "--personas", personas, "--agents", str(tmp_path))
    assert code == 2 and err.startswith("error: ") and "not a trained persona-agent directory" in err
    code, _, err = run(capsys, "agents", "train", "--split", split, "--personas", str(tmp_path / "none"))
    assert code == 2 and "not a finished persona set" in err
    # a value the config refuses: one error line naming the field and the value, before any work is done
    code, _, err = run(capsys, "agents", "train", "--split", split, "--personas", personas, "--memories", "-1")
    assert code == 2 and "LoraTrainConfig.memories must be a non-negative integer, got -1" in err


def test_train_options_are_generated_from_the_config_dataclasses():
    import dataclasses

    from recsim_personas.agents.backbone_config import BackboneConfig
    from recsim_personas.agents.train_config import LoraTrainConfig
    from recsim_personas.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["agents", "train", "--split", "S", "--personas", "P"])
    # no flag given: every value is the dataclass default (nothing re-declared on the command line)
    assert args.train_options.build(args) == LoraTrainConfig()
    assert args.backbone_options.build(args) == BackboneConfig()
    assert set(args.train_options.flags) == {f.name for f in dataclasses.fields(LoraTrainConfig)}
    given = ["--lr", "0.01", "--backbone", "causal", "--prior-folds", "3", "--anchor", "knn", "--template", "paper"]
    args = parser.parse_args(["agents", "train", "--split", "S", "--personas", "P", *given])
    cfg, backbone = args.train_options.build(args), args.backbone_options.build(args)
    assert (cfg.lr, cfg.prior_folds, cfg.anchor, cfg.template, backbone.kind) == (0.01, 3, "knn", "paper", "causal")
    # an unset learning rate resolves to the backbone's default in one place: LoraTrainConfig.resolved
    assert LoraTrainConfig().resolved("causal").lr == 2e-4 and LoraTrainConfig().resolved("encoder").lr == 1e-3
