"""The RecBole adapter: names, training, serving unseen top-k for our ids, save/load, sequential histories."""

from __future__ import annotations

import json
import logging
import random
import re

import numpy as np
import pytest
import torch
from reckit import (  # noqa: F401  (fixtures)
    MODELS,
    other_split_dir_fixture,
    rec_split_dir_fixture,
    rec_world_fixture,
    trained_fixture,
)

from recsim_personas.envs import Population
from recsim_personas.errors import ArtifactError, ConfigError, PolicyError, RecsimPersonasError
from recsim_personas.recommenders import Policy
from recsim_personas.recommenders.policies import SeenAwarePolicy, top_k_unseen
from recsim_personas.recommenders.recbole_config import RecBoleConfig, resolve_model
from recsim_personas.recommenders.recbole_policy import RecBolePolicy, read_model_manifest
from recsim_personas.recommenders.recbole_train import train_recbole


def _obs(world, users=None, history_len=10):
    users = np.arange(world.n_users) if users is None else np.asarray(users)
    return Population(world, seed=0).observe(users, history_len)


def test_model_names_resolve_case_insensitively_and_unknown_names_list_close_matches():
    assert resolve_model("sasrec") == ("SASRec", "sequential")
    assert resolve_model("lightgcn") == ("LightGCN", "general")
    assert resolve_model("BPR") == ("BPR", "general")
    with pytest.raises(ConfigError, match=r"unknown RecBole model 'BRP'.*Did you mean 'BPR'") as info:
        resolve_model("BRP")
    assert "SASRec" in str(info.value) and "LightGCN" in str(info.value)  # lists the known models
    with pytest.raises(ConfigError, match="Did you mean 'LightGCN'"):
        RecBoleConfig(model="LightGNC")
    with pytest.raises(ConfigError, match="unknown RecBole model 'DeepFM'"):  # context-aware, not supported
        resolve_model("DeepFM")


def test_config_validates_and_round_trips():
    config = RecBoleConfig(model="bpr", epochs=3, params={"reg_weight": 0.01})
    assert config.model == "BPR" and config.kind == "general"
    assert RecBoleConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="epochs must be a positive integer, got 0"):
        RecBoleConfig(model="BPR", epochs=0)
    with pytest.raises(ConfigError, match="params sets 'data_path'"):
        RecBoleConfig(model="BPR", params={"data_path": "/elsewhere"})
    with pytest.raises(ConfigError, match="learning_rate"):
        RecBoleConfig(model="BPR", learning_rate=-1.0)
    with pytest.raises(ConfigError, match="unknown RecBoleConfig field 'epoch'"):
        RecBoleConfig.from_dict({"model": "BPR", "epoch": 3})


@pytest.mark.parametrize("model", MODELS)
def test_each_model_serves_distinct_unseen_items_of_our_index_space(trained, rec_world, model):
    policy = trained[model]
    assert isinstance(policy, Policy) and policy.name == f"recbole:{model}"
    obs = _obs(rec_world)
    slates = policy.act_batch(obs)
    assert slates.shape == (rec_world.n_users, 5) and slates.dtype == np.int64
    assert ((slates >= 0) & (slates < rec_world.n_items)).all()
    assert all(len(set(row)) == 5 for row in slates.tolist())
    assert not obs["seen"][np.arange(len(slates))[:, None], slates].any()
    # one observation at a time gives the same slates as the batch
    one = {k: v[3] for k, v in obs.items()}
    np.testing.assert_array_equal(policy.act(one), slates[3])


def test_general_models_map_our_ids_to_recbole_tokens(trained, rec_world):
    """BPR's score of (user, item) is the dot product of their embeddings, looked up by RecBole token."""
    policy = trained["BPR"]
    model, ds = policy.model, policy.dataset
    obs = _obs(rec_world)
    scores = policy.score_batch(obs)
    uid = ds.token2id(ds.uid_field, [str(u) for u in rec_world.user_ids])
    for j in (0, 7, rec_world.n_items - 1):
        token = str(rec_world.item_ids[j])
        if token not in ds.field2token_id[ds.iid_field]:
            assert (scores[:, j] == -1e30).all()  # never trained on: ranked last
            continue
        iid = ds.token2id(ds.iid_field, token)
        with torch.no_grad():
            expect = (model.user_embedding.weight[uid] * model.item_embedding.weight[iid]).sum(dim=1).double().numpy()
        np.testing.assert_allclose(scores[:, j], expect, rtol=1e-5)
    # the slate is the best unseen items in score order
    masked = np.where(obs["seen"].astype(bool), -np.inf, scores)
    best = np.sort(masked, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(np.take_along_axis(masked, policy.act_batch(obs), axis=1), best)


def test_items_watched_during_the_simulation_are_excluded(trained, rec_world):
    policy = trained["LightGCN"]
    obs = _obs(rec_world, [0, 1])
    first = policy.act_batch(obs)
    seen = obs["seen"].copy()
    seen[0, first[0, :2]] = 1  # user 0 watched its two top items
    again = policy.act_batch({**obs, "seen": seen})
    assert not set(again[0].tolist()) & set(first[0, :2].tolist())
    np.testing.assert_array_equal(again[0, :3], first[0, 2:])  # the rest moves up
    np.testing.assert_array_equal(again[1], first[1])


def test_top_k_fills_up_with_seen_items_only_when_nothing_else_is_left():
    scores = np.array([[0.1, 0.9, 0.5, 0.3]])
    seen = np.array([[False, True, True, True]])
    out = top_k_unseen(scores, seen, 2)
    assert out[0, 0] == 0 and out.shape == (1, 2)


def test_sequential_models_read_the_history_and_refuse_users_without_one(trained, rec_world):
    policy = trained["SASRec"]
    assert policy.kind == "sequential" and policy.history_len == 10
    obs = _obs(rec_world, [0])
    base = policy.score_batch(obs)
    other = {k: v.copy() for k, v in obs.items()}
    other["history_items"][0, -1] = (other["history_items"][0, -1] + 11) % rec_world.n_items
    assert not np.allclose(policy.score_batch(other), base)  # the last item changes the scores
    empty = {k: v.copy() for k, v in obs.items()}
    empty["history_items"][:] = -1
    with pytest.raises(RecsimPersonasError, match=r"sequential model and user \d+ has no history"):
        policy.act_batch(empty)


def test_save_and_load_round_trip_and_refuse_other_splits(trained, rec_world, rec_split_dir, other_split_dir, tmp_path):
    for model in ("Pop", "SASRec"):
        policy = trained[model]
        path = policy.save(tmp_path / model)
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["model"] == model and manifest["split_id"] == policy.split_id
        assert manifest["config"] == policy.config.to_dict()
        loaded = RecBolePolicy.load(path, rec_split_dir, slate_size=5)
        obs = _obs(rec_world)
        np.testing.assert_array_equal(loaded.act_batch(obs), policy.act_batch(obs))
        np.testing.assert_allclose(loaded.score_batch(obs), policy.score_batch(obs), rtol=1e-6)
    with pytest.raises(ArtifactError, match=r"was made from another split \([0-9a-f]{12}…, not [0-9a-f]{12}…\)"):
        RecBolePolicy.load(tmp_path / "Pop", other_split_dir)
    (tmp_path / "Pop" / "model.pth").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match=r"model\.pth does not match its manifest"):
        RecBolePolicy.load(tmp_path / "Pop", rec_split_dir)
    with pytest.raises(ArtifactError, match=r"not a saved RecBole policy \(it holds no manifest\.json"):
        RecBolePolicy.load(tmp_path, rec_split_dir)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not a saved RecBole policy; refusing"):
        trained["Pop"].save(tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_training_logs_progress_and_leaves_global_random_state_alone(rec_split_dir, caplog):
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    threads = torch.get_num_threads()
    with caplog.at_level(logging.INFO, logger="recsim_personas.recommenders.recbole_train"):
        policy = train_recbole(rec_split_dir, RecBoleConfig(model="BPR", epochs=2, embedding_size=8), progress=False)
    assert "BPR epoch 1/2: loss" in caplog.text and "BPR epoch 2/2: loss" in caplog.text
    assert policy.train_seconds is not None and policy.train_seconds > 0
    assert random.getstate() == states[0]
    np.testing.assert_array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert torch.get_num_threads() == threads
    # same seed, same model
    again = train_recbole(rec_split_dir, RecBoleConfig(model="BPR", epochs=2, embedding_size=8), progress=False)
    assert torch.equal(again.model.user_embedding.weight, policy.model.user_embedding.weight)


def test_a_model_that_needs_features_is_refused_clearly(rec_split_dir):
    with pytest.raises(ConfigError, match=r"FDSA needs item feature fields.*Fix: pick an interaction-only model"):
        train_recbole(rec_split_dir, RecBoleConfig(model="FDSA", epochs=1), progress=False)
    with pytest.raises(ConfigError, match="KSR needs a knowledge graph"):
        resolve_model("ksr")


@pytest.mark.parametrize("model", ["NeuMF", "FPMC", "HRM", "SASRecCPR"])
def test_models_without_full_sort_or_with_a_pairwise_loss_or_reading_the_user_train_and_serve(
    rec_split_dir, rec_world, model
):
    """NeuMF has no full_sort_predict (scored through predict), FPMC trains only with the BPR loss on sampled
    negatives, HRM (like FPMC) reads the user id of a sequential observation, SASRecCPR reads a target item
    while scoring."""
    params = {"reranker_CAN_NUM": 20} if model == "SASRecCPR" else {}  # RecBole's 100 > the tiny split's items
    config = RecBoleConfig(model=model, epochs=1, embedding_size=8, max_seq_len=10, params=params)
    policy = train_recbole(rec_split_dir, config, slate_size=5, progress=False)
    obs = _obs(rec_world)
    slates = policy.act_batch(obs)
    assert slates.shape == (rec_world.n_users, 5)
    assert not obs["seen"][np.arange(len(slates))[:, None], slates].any()
    if model == "NeuMF":  # the scores are the model's predict() of each (user, item) pair
        ds = policy.dataset
        users = ds.token2id(ds.uid_field, [str(u) for u in rec_world.user_ids[:3]])
        j = int(np.flatnonzero(policy._known)[4])
        items = torch.full((3,), int(policy._rb_item[j]))
        from recbole.data.interaction import Interaction

        with torch.no_grad():
            expect = policy.model.predict(Interaction({ds.uid_field: torch.as_tensor(users), ds.iid_field: items}))
        np.testing.assert_allclose(policy.score_batch(_obs(rec_world, [0, 1, 2]))[:, j], expect.numpy(), rtol=1e-5)
    if model == "FPMC":
        assert policy.model.loss_type == "BPR"


def test_without_epochs_training_stops_early_on_the_validation_slice_and_keeps_the_best_epoch(
    rec_split_dir, caplog, monkeypatch
):
    from recbole.trainer import Trainer

    from recsim_personas.data.protocol import Split

    # RecBole's trainer validates after every epoch; the scores are scripted (best after epoch 2, then worse)
    # and the weights recorded at each validation
    scores, weights, slices = iter([0.1, 0.3, 0.2, 0.2, 0.1, 0.5]), [], []

    def valid_epoch(self, valid_data, show_progress=False):
        weights.append(self.model.user_embedding.weight.detach().clone())
        slices.append(valid_data.dataset.inter_feat)
        score = next(scores)
        return score, {"ndcg@10": score}

    monkeypatch.setattr(Trainer, "_valid_epoch", valid_epoch)
    config = RecBoleConfig(model="BPR", max_epochs=10, stopping_step=2, learning_rate=0.05, embedding_size=8)
    assert config.epochs is None and config.recbole_params("d", "c", False)["epochs"] == 10
    with caplog.at_level(logging.INFO, logger="recsim_personas.recommenders.recbole_train"):
        policy = train_recbole(rec_split_dir, config, slate_size=5, progress=False)
    # epoch 2 is best; epochs 3, 4 and 5 are not better, so the trainer stops after epoch 5 of at most 10
    assert len(weights) == 5 and "BPR epoch 5/10: loss" in caplog.text and "epoch 6/10" not in caplog.text
    assert "BPR: kept epoch 2 (validation NDCG@10 0.3000)" in caplog.text
    assert torch.equal(policy.model.user_embedding.weight, weights[1])
    assert not torch.equal(policy.model.user_embedding.weight, weights[-1])
    assert re.search(r"BPR: expected training time at most [\d.]+ s \(first epoch [\d.]+ s x 10 epochs\)", caplog.text)
    # the validation slice: each sampled user's latest tenth of train ratings (ceil), never the test part
    split = Split.load(rec_split_dir)
    ds = policy.dataset
    users = ds.id2token(ds.uid_field, slices[0][ds.uid_field].numpy()).astype(int)
    items = ds.id2token(ds.iid_field, slices[0][ds.iid_field].numpy()).astype(int)
    assert len(users) == sum(int(np.ceil(0.1 * n)) for n in split.train.groupby("user_id").size())
    assert set(users) == set(split.user_ids.tolist())
    assert set(zip(users, items, strict=True)).isdisjoint(zip(split.test.user_id, split.test.item_id, strict=True))


def test_fixed_epochs_train_exactly_that_many_and_never_validate(rec_split_dir, caplog, monkeypatch):
    from recbole.trainer import Trainer

    validated = []
    monkeypatch.setattr(Trainer, "_valid_epoch", lambda self, *a, **k: validated.append(1))
    with caplog.at_level(logging.INFO, logger="recsim_personas.recommenders.recbole_train"):
        train_recbole(rec_split_dir, RecBoleConfig(model="BPR", epochs=3, embedding_size=8), progress=False)
    assert "BPR epoch 3/3: loss" in caplog.text and "epoch 4/3" not in caplog.text
    assert re.search(r"BPR: expected training time [\d.]+ s \(first epoch [\d.]+ s x 3 epochs\)", caplog.text)
    assert validated == []


def test_recbole_failures_are_policy_errors_naming_the_model_and_the_fix(
    rec_split_dir, trained, rec_world, monkeypatch
):
    from recbole.model.general_recommender.bpr import BPR

    def broken(self, interaction):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(BPR, "calculate_loss", broken)
    with pytest.raises(PolicyError, match=r"recbole:BPR failed while training: RuntimeError: out of memory\. Fix:"):
        train_recbole(rec_split_dir, RecBoleConfig(model="BPR", epochs=1, embedding_size=8), progress=False)
    monkeypatch.setattr(BPR, "full_sort_predict", broken)
    with pytest.raises(PolicyError, match=r"recbole:BPR failed while scoring items: RuntimeError: out of memory"):
        trained["BPR"].act_batch(_obs(rec_world))


def test_the_seen_mask_is_checked_as_in_every_policy(trained, rec_world):
    policy = trained["BPR"]
    assert isinstance(policy, SeenAwarePolicy)
    with pytest.raises(
        ConfigError, match=rf"recbole:BPR policy: obs\['seen'\] must have shape \(N, {rec_world.n_items}\)"
    ):
        policy.act_batch({**_obs(rec_world), "seen": np.zeros((2, 3))})
    with pytest.raises(ConfigError, match="recbole:BPR policy: the observation has no 'seen' mask"):
        policy.act_batch({"user_index": np.arange(2)})


def test_models_saved_in_format_version_1_still_load_and_damaged_manifests_are_refused(
    trained, rec_world, rec_split_dir, tmp_path
):
    path = trained["Pop"].save(tmp_path / "Pop")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "recsim-personas/recbole-policy" and manifest["format_version"] == 2
    assert set(manifest["versions"]) >= {"recbole", "torch", "scipy", "numpy", "recsim_personas"}
    # what version 1 wrote: no created_at, a config without the early-stopping fields
    old = {k: v for k, v in manifest.items() if k != "created_at"}
    old["format_version"] = 1
    old["config"] = {
        k: v for k, v in manifest["config"].items() if k not in ("max_epochs", "stopping_step", "valid_share")
    }
    (path / "manifest.json").write_text(json.dumps(old))
    assert read_model_manifest(path)["config"] == trained["Pop"].config.to_dict()  # normalised on read
    loaded = RecBolePolicy.load(path, rec_split_dir, slate_size=5)
    np.testing.assert_array_equal(loaded.act_batch(_obs(rec_world)), trained["Pop"].act_batch(_obs(rec_world)))
    (path / "manifest.json").write_text('{"format": "recsim-personas/recbole-policy", ')
    with pytest.raises(ArtifactError, match=r"manifest is damaged \(.* at line 1\)\. Fix:"):
        RecBolePolicy.load(path, rec_split_dir)
    (path / "manifest.json").write_text(json.dumps({**old, "config": {"model": "Pop", "epochz": 1}}))
    with pytest.raises(ArtifactError, match=r"RecBole configuration is not readable here .*'epochz'"):
        RecBolePolicy.load(path, rec_split_dir)
    (path / "manifest.json").write_text(json.dumps({**old, "format_version": 3}))
    with pytest.raises(ArtifactError, match="format_version 3 is not supported"):
        RecBolePolicy.load(path, rec_split_dir)


def test_a_pretraining_model_trains_the_epochs_it_is_given(rec_split_dir, caplog):
    # RaCT's trainer runs RecBole's pretrain_epochs (150 by default), not epochs
    with caplog.at_level(logging.INFO, logger="recsim_personas.recommenders.recbole_train"):
        train_recbole(rec_split_dir, RecBoleConfig(model="RaCT", epochs=2, embedding_size=8), progress=False)
    assert "RaCT epoch 2/2: loss" in caplog.text and "RaCT epoch 3/" not in caplog.text
