"""Persona-LoRA training and mixed-adapter inference on a tiny world with the real MiniLM (small ranks)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("peft") is None:  # pragma: no cover - peft is a declared dependency
    if os.environ.get("CI") == "true" or os.environ.get("RECSIM_PERSONAS_REQUIRE_DATA") == "1":
        pytest.fail("peft is not installed; CI must install it")
    pytest.skip("peft is not installed", allow_module_level=True)

import safetensors.torch  # noqa: E402
from agentkit import BACKBONE, CONFIG, World, make_world, requests  # noqa: E402

from recsim_personas.agents import training  # noqa: E402
from recsim_personas.agents.backbone_config import BackboneConfig  # noqa: E402
from recsim_personas.agents.fidelity import evaluate_fidelity  # noqa: E402
from recsim_personas.agents.inference import batched_logits  # noqa: E402
from recsim_personas.agents.persona_agents import PersonaAgents  # noqa: E402
from recsim_personas.agents.prior import AnchorPrior, out_of_fold_log_probs  # noqa: E402
from recsim_personas.agents.prompt import PromptBuilder, PromptConfig, PromptTooLongError  # noqa: E402
from recsim_personas.agents.rater import Rater, check_distribution  # noqa: E402
from recsim_personas.agents.train_config import LoraTrainConfig  # noqa: E402
from recsim_personas.agents.training import train_agents  # noqa: E402
from recsim_personas.errors import ArtifactError, ConfigError, UnknownUserError  # noqa: E402


@pytest.fixture(scope="module")
def agents(world: World, trained: Path) -> PersonaAgents:
    return PersonaAgents.load(trained, world.split, world.pset, world.index, batch_size=4)


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------
def test_train_config_validation_defaults_and_round_trip():
    assert LoraTrainConfig().resolved("causal").rank == 256 and LoraTrainConfig().resolved("causal").alpha == 32
    assert LoraTrainConfig().resolved("encoder").rank == 16
    assert LoraTrainConfig().resolved("encoder").template == "compact"
    cfg = LoraTrainConfig(variant="single", memories=0, anchor="none", rank=4)
    assert LoraTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="'persona'"):
        LoraTrainConfig(variant="personas")
    with pytest.raises(ConfigError, match="anchor"):
        LoraTrainConfig(anchor="item")
    with pytest.raises(ConfigError, match=r"LoraTrainConfig\.rank"):
        LoraTrainConfig(rank=0)
    with pytest.raises(ConfigError, match=r"LoraTrainConfig\.memories"):
        LoraTrainConfig(memories=-1)
    with pytest.raises(ConfigError, match="unknown LoRA training config fields"):
        LoraTrainConfig.from_dict({"rnak": 3})


# ---------------------------------------------------------------------------------------------------------
# training artifact
# ---------------------------------------------------------------------------------------------------------
def test_one_adapter_per_persona_is_saved_in_peft_format_with_a_manifest(world, trained):
    manifest = json.loads((trained / "manifest.json").read_text())
    names = {f"persona_{c}" for c in set(world.clusters.labels.values())}
    assert set(manifest["adapters"]) == names
    for name in names:
        assert (trained / "adapters" / name / "adapter_model.safetensors").is_file()
        cfg = json.loads((trained / "adapters" / name / "adapter_config.json").read_text())
        assert cfg["r"] == 2 and "rating_head" in cfg["modules_to_save"]
    assert manifest["split_id"] == world.split.split_id
    assert manifest["cluster_map"] == {str(u): f"persona_{c}" for u, c in sorted(world.clusters.labels.items())}
    assert manifest["backbone"] == BACKBONE.to_dict() and manifest["train_config"]["rank"] == 2
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])
    assert not (trained / "checkpoints").exists()
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert {e["adapter"] for e in log if "epoch" in e and "valid_nll" in e} == names


def test_loaded_agents_hold_every_adapter_in_one_peft_model(agents, world):
    assert set(agents.model.peft_config) == {f"persona_{c}" for c in set(world.clusters.labels.values())}
    assert isinstance(agents, Rater) and agents.anchored and agents.memories == 1
    assert not agents.model.training


def test_prior_is_stored_and_equals_a_deterministic_refit(world, trained):
    stored = AnchorPrior.load(trained / "prior")
    refit = AnchorPrior.fit(world.split.history())
    u, i = requests(world)
    np.testing.assert_array_equal(stored.log_probs(u, i), refit.log_probs(u, i))
    assert np.isfinite(stored.log_probs(u, i)).all()


@pytest.mark.parametrize("kind", ["mf", "knn", "blend"])
def test_every_prior_kind_round_trips_through_its_files(world, tmp_path, kind):
    prior = AnchorPrior.fit(world.split.history(), kind)
    files = prior.save(tmp_path)
    assert set(files) == {"rater.json", "rater.npz"}
    loaded = AnchorPrior.load(tmp_path)
    u, i = requests(world)
    assert loaded.name == kind
    np.testing.assert_array_equal(loaded.log_probs(u, i), prior.log_probs(u, i))
    assert not np.allclose(loaded.log_probs(u, i), AnchorPrior.fit(world.split.history()).log_probs(u, i))


def test_a_prior_in_the_earlier_parquet_layout_still_loads(world, tmp_path):
    rater = AnchorPrior.fit(world.split.history(), "bias").rater
    meta = {"rater": "bias", "mu": rater.mu_, "sigma": rater.sigma, "calibration_share": rater.calibration_share}
    meta |= {"reg_user": rater.reg_user, "reg_item": rater.reg_item, "n_sweeps": rater.n_sweeps}
    (tmp_path / "prior.json").write_text(json.dumps(meta))
    for name, bias in (("user_bias", rater.user_bias_), ("item_bias", rater.item_bias_)):
        pd.DataFrame({"id": bias.index.to_numpy(), "bias": bias.to_numpy()}).to_parquet(tmp_path / f"{name}.parquet")
    u, i = requests(world)
    np.testing.assert_array_equal(AnchorPrior.load(tmp_path).log_probs(u, i), np.log(rater.predict(u, i)))


def test_training_examples_are_anchored_on_a_prior_that_has_not_seen_them(world):
    split = world.split
    oof = out_of_fold_log_probs(split, "bias", folds=3, seed=0)
    train = split.train
    assert len(oof) == len(train) and set(oof["fold"]) == {0, 1, 2}
    assert oof.index.equals(pd.MultiIndex.from_frame(train[["user_id", "item_id"]].reset_index(drop=True)))
    cols = [f"lp{k}" for k in range(1, 6)]
    # fold 1's examples: the prior refitted on the history without exactly those ratings
    held = oof["fold"].to_numpy() == 1
    rest = pd.concat([train.reset_index(drop=True)[~held], split.background], ignore_index=True)
    u, i = train["user_id"].to_numpy()[held], train["item_id"].to_numpy()[held]
    np.testing.assert_allclose(oof.loc[held, cols].to_numpy(), AnchorPrior.fit(rest).log_probs(u, i))
    # ... which differs from the in-sample prior (folds=1: the prior fitted on the whole history)
    insample = out_of_fold_log_probs(split, "bias", folds=1, seed=0)
    np.testing.assert_allclose(insample.loc[held, cols].to_numpy(), AnchorPrior.fit(split.history()).log_probs(u, i))
    assert not np.allclose(insample[cols].to_numpy(), oof[cols].to_numpy())
    # the same seed deals the same folds
    assert out_of_fold_log_probs(split, "bias", folds=3, seed=0)["fold"].equals(oof["fold"])
    with pytest.raises(ConfigError, match="prior_folds"):
        LoraTrainConfig(prior_folds=0)


def test_mixed_precision_training_keeps_float32_adapters(world, tmp_path):
    cfg = dataclasses.replace(CONFIG, precision="bfloat16", max_train=8, max_valid=4, prior_folds=2)
    result = train_agents(world.split, world.pset, world.clusters, world.index, BACKBONE, cfg, tmp_path / "bf16")
    assert result.manifest["train_config"]["precision"] == "bfloat16"
    for name, meta in result.manifest["adapters"].items():
        assert np.isfinite(meta["best_valid_nll"])
        state = safetensors.torch.load_file(str(tmp_path / "bf16" / "adapters" / name / "adapter_model.safetensors"))
        assert {t.dtype for t in state.values()} == {torch.float32}
    with pytest.raises(ConfigError, match="'bfloat16'"):
        LoraTrainConfig(precision="bf16")


# ---------------------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------------------
def test_mixed_persona_batch_equals_each_adapter_alone(agents, world):
    # make the adapters clearly different, so a routing mistake would show
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in agents.model.named_parameters():
            if ".lora_B." in name or ".modules_to_save." in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    u, i = requests(world)
    names = [agents.adapter_of(x) for x in u]
    assert len(set(names)) == 2 and names[0] != names[1]  # interleaved personas in one batch
    mixed = agents.logits(u, i, anchored=False)
    rows, _ = agents.prompts(u, i)
    alone = np.empty_like(mixed)
    for name in set(names):
        sel = [k for k, n in enumerate(names) if n == name]
        agents.model.set_adapter(name)
        alone[sel] = batched_logits(agents.model, agents.backbone, [rows[k] for k in sel], None, 64).double().numpy()
    np.testing.assert_allclose(mixed, alone, atol=1e-4)
    forced = batched_logits(agents.model, agents.backbone, rows, [names[0]] * len(rows), 64).double().numpy()
    assert np.abs(forced - mixed).max() > 1e-3


def test_anchoring_adds_exactly_the_prior_log_probs(agents, world):
    u, i = requests(world)
    anchored = agents.logits(u, i)
    raw = agents.logits(u, i, anchored=False)
    np.testing.assert_allclose(anchored - raw, agents.prior.log_probs(u, i), atol=1e-12, rtol=0)
    dist = check_distribution(agents.predict(u, i), len(u))
    np.testing.assert_allclose(dist, torch.softmax(torch.as_tensor(anchored), -1).numpy(), atol=1e-12)


def test_persona_part_is_tokenized_once_per_user(agents, world):
    u, i = requests(world)
    agents.builder._user.clear()
    calls = []
    original = agents.builder.personas.persona

    def counting(user_id):
        calls.append(int(user_id))
        return original(user_id)

    agents.builder.personas = type("P", (), {"persona": staticmethod(counting)})()
    try:
        agents.predict(np.concatenate([u, u]), np.concatenate([i, i]))
    finally:
        agents.builder.personas = world.pset
    assert sorted(calls) == sorted(set(int(x) for x in u))


def test_agents_follow_the_rater_contract_in_the_fidelity_evaluation(agents, world):
    agents.memories = 0
    try:
        report = evaluate_fidelity([agents], world.split.test.iloc[:10])
    finally:
        agents.memories = 1
    assert report.rows[0].rater == agents.name and np.isfinite(report.rows[0].rmse_expected)


def test_open_finds_the_personas_and_memories_the_agents_were_trained_on(world, trained, tmp_path):
    u, i = requests(world, 4)
    opened = PersonaAgents.open(trained, world.split)
    assert opened.index is not None and opened.memories == 1
    fresh = PersonaAgents.load(trained, world.split, world.pset, world.index)  # the fixture's adapters were perturbed
    np.testing.assert_allclose(opened.logits(u, i), fresh.logits(u, i), atol=1e-6)
    with pytest.raises(ArtifactError, match="personas=DIR"):
        PersonaAgents.open(trained, world.split, personas=tmp_path / "elsewhere")


def test_user_without_a_persona_is_a_clear_error(agents, world):
    with pytest.raises(UnknownUserError, match="user_id 999 has no persona adapter"):
        agents.predict(np.array([999]), np.array([1]))


def test_prompt_that_cannot_fit_is_a_clear_error(agents, world):
    builder = agents.builder
    agents.builder = PromptBuilder(builder.tok, world.pset, world.split.catalog().describe, PromptConfig(max_length=64))
    try:
        u, i = requests(world, 2)
        with pytest.raises(PromptTooLongError, match="max_length is 64"):
            agents.predict(u, i)
    finally:
        agents.builder = builder


# ---------------------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------------------
def test_other_base_model_is_refused(world, trained, tmp_path):
    with pytest.raises(ArtifactError, match="base model"):
        PersonaAgents.load(trained, world.split, world.pset, world.index, backbone=BackboneConfig(kind="encoder"))
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["base_fingerprint"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not the one the adapters were trained on"):
        PersonaAgents.load(copy, world.split, world.pset, world.index)


def test_missing_adapter_is_named(world, trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "adapters" / "persona_1" / "adapter_model.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"'persona_1'.*missing.*agents train"):
        PersonaAgents.load(copy, world.split, world.pset, world.index)


def test_unfinished_or_foreign_artifacts_are_refused(world, trained, tmp_path):
    with pytest.raises(ArtifactError, match="not a trained persona-agent directory"):
        PersonaAgents.load(tmp_path / "nothing", world.split, world.pset, world.index)
    other = LoraTrainConfig(rank=4, alpha=4, max_train=16, max_valid=8, batch_size=8)
    with pytest.raises(ArtifactError, match=r"different train_config.*--overwrite"):
        train_agents(world.split, world.pset, world.clusters, world.index, BACKBONE, other, trained, progress=False)


# ---------------------------------------------------------------------------------------------------------
# resuming
# ---------------------------------------------------------------------------------------------------------
def test_rerun_skips_finished_adapters(world, trained, tmp_path, monkeypatch):
    result = train_agents(world.split, world.pset, world.clusters, world.index, BACKBONE, CONFIG, trained)
    assert {a.status for a in result.adapters} == {"skipped"}
    # an interrupted run: persona_0 saved, persona_1 not, no manifest yet
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "manifest.json").unlink()
    shutil.rmtree(copy / "adapters" / "persona_1")
    calls = []
    real = training._train_one

    def spy(model, backbone, builder, prior, name, *args, **kwargs):
        calls.append(name)
        return real(model, backbone, builder, prior, name, *args, **kwargs)

    monkeypatch.setattr(training, "_train_one", spy)
    result = train_agents(world.split, world.pset, world.clusters, world.index, BACKBONE, CONFIG, copy)
    assert calls == ["persona_1"]
    assert {a.name: a.status for a in result.adapters} == {"persona_0": "skipped", "persona_1": "trained"}
    PersonaAgents.load(copy, world.split, world.pset, world.index)  # complete and consistent again


RESUME_CONFIG = LoraTrainConfig(
    variant="single",
    memories=0,
    anchor="none",
    rank=2,
    alpha=4,
    max_train=8,
    max_valid=4,
    epochs=2,
    patience=2,
    batch_size=2,
)
"""Two epochs of 4 steps of one adapter (learning rate: the encoder default, dropout on)."""


def _interrupt_after_first_epoch(world, out, monkeypatch):
    """Train RESUME_CONFIG into ``out`` and kill the run right after epoch 1's checkpoint is written."""
    real = training.save_checkpoint

    def crash_after_first_epoch(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_agents(world.split, world.pset, None, None, BACKBONE, RESUME_CONFIG, out, progress=False)
    monkeypatch.setattr(training, "save_checkpoint", real)
    assert json.loads((out / "checkpoints" / "single" / "state.json").read_text())["epoch"] == 1


def _epochs(out):
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if '"epoch": ' in x]


def _weights(out):
    return safetensors.torch.load_file(str(out / "adapters" / "single" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    train_agents(world.split, world.pset, None, None, BACKBONE, RESUME_CONFIG, out, progress=False)
    return out


def test_interrupted_training_resumes_exactly(world, uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "single"
    _interrupt_after_first_epoch(world, out, monkeypatch)
    result = train_agents(world.split, world.pset, None, None, BACKBONE, RESUME_CONFIG, out, progress=False)
    # killed after epoch 1's checkpoint, before its log line: the rerun trains epoch 2 only
    assert [e["epoch"] for e in _epochs(out)] == [2] and result.adapters[0].epochs == 2
    # the same loss curve and the same final weights as a run that was never interrupted
    resumed, straight = _epochs(out)[-1], _epochs(uninterrupted)[-1]
    assert straight["epoch"] == 2
    assert resumed["train_nll"] == pytest.approx(straight["train_nll"], rel=1e-6, abs=0)
    assert resumed["valid_nll"] == pytest.approx(straight["valid_nll"], rel=1e-6, abs=0)
    a, b = _weights(out), _weights(uninterrupted)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    assert set(json.loads((out / "manifest.json").read_text())["cluster_map"].values()) == {"single"}


def test_a_checkpoint_without_optimizer_state_resumes_with_fresh_moments(
    world, uninterrupted, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "single"
    _interrupt_after_first_epoch(world, out, monkeypatch)
    ckpt = out / "checkpoints" / "single"
    (ckpt / "optimizer.safetensors").unlink()  # the layout of checkpoints written by earlier versions
    state = json.loads((ckpt / "state.json").read_text())
    del state["optimizer"]
    (ckpt / "state.json").write_text(json.dumps(state))
    with caplog.at_level("WARNING"):
        train_agents(world.split, world.pset, None, None, BACKBONE, RESUME_CONFIG, out, progress=False)
    assert "fresh AdamW moments" in caplog.text and [e["epoch"] for e in _epochs(out)] == [2]
    # without the optimiser's moments epoch 2 takes other steps: the state restored above is what makes it exact
    resumed, straight = _epochs(out)[-1], _epochs(uninterrupted)[-1]
    assert resumed["train_nll"] != pytest.approx(straight["train_nll"], rel=1e-6, abs=0)
    assert resumed["valid_nll"] != pytest.approx(straight["valid_nll"], rel=1e-6, abs=0)


# ---------------------------------------------------------------------------------------------------------
# the agents as the simulated users' rater (`agents:DIR`)
# ---------------------------------------------------------------------------------------------------------
def test_environment_and_simulate_cli_take_agents_dir(world, trained, capsys):
    import json

    import gymnasium as gym

    import recsim_personas  # noqa: F401  (registers the environment id)
    from recsim_personas.cli import main

    env = gym.make("recsim_personas/MovieLens-v0", split=str(world.split.path), rater=f"agents:{trained}", slate_size=5)
    rater = env.unwrapped.world.rater
    assert isinstance(rater, PersonaAgents) and rater.variant == "persona" and rater.index is not None
    env.reset(seed=0)
    *_, info = env.step(np.arange(5, dtype=np.int64))
    # the watched items' expected ratings are the agents' own expected ratings for this user
    uid = info["user_id"]
    unseen = info["expected_ratings"] > 0
    want = rater.predict(np.full(int(unseen.sum()), uid), info["item_ids"][unseen]) @ np.arange(1, 6)
    np.testing.assert_allclose(info["expected_ratings"][unseen], want, atol=1e-9)
    env.close()

    argv = ["simulate", "--split", str(world.split.path), "--rater", f"agents:{trained}", "--days", "1"]
    assert main([*argv, "--slate-size", "5", "--json", "--no-progress"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["rater"] == rater.name and payload["per_day"][0]["day"] == 1


def test_agents_dir_errors_name_the_fix(world, trained, tmp_path, capsys):
    from recsim_personas.cli import main

    base = ["simulate", "--split", str(world.split.path), "--days", "1"]
    assert main([*base, "--rater", f"agents:{tmp_path / 'nowhere'}"]) == 2
    assert "is not a trained persona-agent directory" in capsys.readouterr().err
    assert main([*base, "--rater", "agents:"]) == 2
    assert "name the agents directory" in capsys.readouterr().err
    other = make_world(tmp_path / "other", n_users=6)  # another split: the agents must be refused
    assert main(["simulate", "--split", str(other.split.path), "--rater", f"agents:{trained}", "--days", "1"]) == 2
    assert "made from another split" in capsys.readouterr().err
    with pytest.raises(ArtifactError, match="made from another persona set"):
        PersonaAgents.load(trained, world.split, other.pset, world.index)


def test_watches_become_memories_of_their_session_only(world, trained):
    from recsim_personas.agents.persona_agents import OBSERVED_REASON
    from recsim_personas.agents.rater import StatefulRater, open_session

    agents = PersonaAgents.load(trained, world.split, world.pset, world.index, memories=50)  # > any user's memories
    assert isinstance(agents, StatefulRater)
    test = world.split.test
    u = int(test.user_id.iloc[0])
    watched, target = (int(i) for i in test.item_id[test.user_id == u].to_numpy()[:2])
    users, targets = np.array([u]), np.array([target])
    before = agents.retrieve(users, targets)[0]
    assert watched not in {h.item_id for h in before}

    session, other_session = open_session(agents), open_session(agents)
    session.observe(users, np.array([watched]), np.array([5]))
    hits = [h for h in agents.retrieve(users, targets, session.observed)[0] if h.item_id == watched]
    assert len(hits) == 1 and hits[0].rating == 5 and hits[0].reason == OBSERVED_REASON.format(rating=5)
    never = agents.retrieve(users, np.array([watched]), session.observed)[0]
    assert watched not in {h.item_id for h in never}  # never the target
    other = int(test.user_id[test.user_id != u].iloc[0])
    assert watched not in {h.item_id for h in agents.retrieve(np.array([other]), targets, session.observed)[0]}
    # the shared agents and the other session know nothing of it
    assert agents.retrieve(users, targets)[0] == before
    assert agents.retrieve(users, targets, other_session.observed)[0] == before
    np.testing.assert_array_equal(other_session.predict(users, targets), agents.predict(users, targets))
