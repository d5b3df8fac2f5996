"""USER-LLM agents: the layer-by-layer backbone equals the backbone, an untrained agent is its prior, the cached
and fast paths equal the full forward, the strategies train what they name, training resumes exactly, the
artifact round-trips, and a simulation's session follows its own watches only."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.agents.model_loading import load_encoder
from recsim_personas.agents.userllm import train as train_module
from recsim_personas.agents.userllm.agent import UserLLMAgent
from recsim_personas.agents.userllm.config import (
    PretrainConfig,
    UserEncoderConfig,
    UserLLMConfig,
    UserLLMTrainConfig,
)
from recsim_personas.agents.userllm.encoder import UserEncoder
from recsim_personas.agents.userllm.events import ItemTable
from recsim_personas.agents.userllm.model import UserLLM
from recsim_personas.agents.userllm.pretrain import as_tensors, pretrain_encoder
from recsim_personas.agents.userllm.train import make_chunks, prefixes, prepare_backbone, train_userllm
from recsim_personas.data import load_split
from recsim_personas.errors import ArtifactError, ConfigError, UnknownUserError

SMALL = UserEncoderConfig(d_model=16, field_dim=8, n_layers=1, n_heads=2, ffn_mult=2, max_len=12)
FAST = UserLLMTrainConfig(epochs=2, batch_size=4, targets_per_cut=4, min_prefix=3, anchor="bias", prior_folds=2)


@pytest.fixture(scope="module", name="backbone")
def backbone_fixture():
    return load_encoder()


def _items(n: int = 8) -> ItemTable:
    return ItemTable(
        item_ids=np.arange(n, dtype=np.int64),
        genres=np.eye(n, 3, dtype=np.float32),
        year_bucket=np.zeros(n, dtype=np.int64),
        genre_names=("a", "b", "c"),
    )


def _model(backbone, config: UserLLMConfig, *, scramble: bool = True) -> UserLLM:
    torch.manual_seed(0)  # tests may seed torch's global generator; the library never does
    model = UserLLM(config, UserEncoder(SMALL, _items()), backbone[0]).eval()
    if scramble:  # gates and head away from 0, so the user tokens matter
        for block in model.blocks.values():
            torch.nn.init.normal_(block.gate)
        torch.nn.init.normal_(model.rating_head.weight)
    return model


def _inputs(backbone, model):
    text = backbone[1](["Toy Story (1995), a film about toys", "GoldenEye"], padding=True, return_tensors="pt")
    hist = (
        torch.tensor([[1, 2, 3], [4, -1, -1]]),
        torch.tensor([[3, 4, 5], [1, 0, 0]]),
        torch.tensor([[0, 1, 1], [0, 0, 0]]),
        torch.tensor([3, 1]),
    )
    return text["input_ids"], text["attention_mask"], model.user_tokens(*hist)


def test_layer_by_layer_backbone_is_the_backbone(backbone):
    model = _model(backbone, UserLLMConfig())
    ids, mask, _ = _inputs(backbone, model)
    with torch.no_grad():
        assert torch.equal(model.text_states(ids, mask, depth=6), backbone[0](input_ids=ids, attention_mask=mask)[0])


@pytest.mark.parametrize("layers", [(6,), (2,), (0, 3)])
def test_cached_and_fast_paths_equal_the_full_forward(backbone, layers):
    model = _model(backbone, UserLLMConfig(cross_layers=layers))
    ids, mask, tokens = _inputs(backbone, model)
    with torch.no_grad():
        full = model(ids, mask, tokens)
        # the movie part below the lowest block, computed once, then the rest
        assert torch.allclose(model.forward_from(model.text_states(ids, mask), mask, tokens), full, atol=1e-5)
        if model.top_only:
            fast = model.top_logits(
                model.movie_cache(model.text_states(ids, mask, depth=6), mask), model.user_cache(tokens)
            )
            assert torch.allclose(fast, full, atol=1e-4)
        other = model(ids, mask, tokens.flip(0))
    assert not torch.allclose(other, full, atol=1e-3)  # the user tokens matter


def test_gates_at_zero_leave_the_backbone_alone_and_soft_prompt_reads_the_tokens(backbone):
    model = _model(backbone, UserLLMConfig(cross_layers=(3,)), scramble=False)
    torch.nn.init.normal_(model.rating_head.weight)
    ids, mask, tokens = _inputs(backbone, model)
    with torch.no_grad():
        assert torch.allclose(model(ids, mask, tokens), model(ids, mask, tokens.flip(0)), atol=1e-6)
    soft = _model(backbone, UserLLMConfig(integration="soft_prompt"))
    ids, mask, tokens = _inputs(backbone, soft)
    with torch.no_grad():
        assert not torch.allclose(soft(ids, mask, tokens), soft(ids, mask, tokens.flip(0)), atol=1e-4)
    with pytest.raises(ConfigError, match="start=0"):
        soft.forward_from(ids, mask, tokens, start=2)
    with pytest.raises(ConfigError, match="go beyond the backbone's 6 layers"):
        UserLLM(UserLLMConfig(cross_layers=(7,)), UserEncoder(SMALL, _items()), backbone[0])


@pytest.mark.parametrize(
    ("strategy", "trains", "frozen"),
    [
        ("proj", ["resampler.", "projection.", "blocks.", "rating_head."], ["user_encoder.", "backbone."]),
        ("enc", ["user_encoder.", "resampler.", "blocks."], ["backbone."]),
        ("full", ["user_encoder.", "backbone.", "blocks."], []),
    ],
)
def test_strategies_train_what_they_name(backbone, strategy, trains, frozen):
    model = UserLLM(UserLLMConfig(), UserEncoder(SMALL, _items()), load_encoder()[0])
    prepare_backbone(model, UserLLMTrainConfig(strategy=strategy))
    named = dict(model.named_parameters())
    for prefix in trains:
        assert all(p.requires_grad for n, p in named.items() if n.startswith(prefix)), prefix
    for prefix in frozen:
        assert not any(p.requires_grad for n, p in named.items() if n.startswith(prefix)), prefix


def test_lora_strategy_adds_trainable_adapters_to_a_frozen_backbone(backbone):
    model = UserLLM(UserLLMConfig(), UserEncoder(SMALL, _items()), load_encoder()[0])
    prepare_backbone(model, UserLLMTrainConfig(strategy="lora", lora_r=2))
    named = dict(model.named_parameters())
    lora = [n for n in named if n.startswith("backbone.") and "lora_" in n]
    assert lora and all(named[n].requires_grad for n in lora)
    assert not any(p.requires_grad for n, p in named.items() if n.startswith("backbone.") and "lora_" not in n)


def test_chunks_and_prefixes():
    chunks = make_chunks(np.array([3, 10, 7]), np.array([0, 1, 2]), min_prefix=3, size=4)
    assert chunks.rows.tolist() == [1, 1, 2]
    assert list(zip(chunks.starts.tolist(), chunks.ends.tolist(), strict=True)) == [(3, 7), (7, 10), (3, 7)]
    from recsim_personas.agents.userllm.events import Histories

    full = Histories(
        user_ids=np.array([5, 6]),
        items=np.array([[0, 1, 2, 3, 4], [5, 6, -1, -1, -1]]),
        ratings=np.array([[1, 2, 3, 4, 5], [5, 4, 0, 0, 0]]),
        gaps=np.array([[0, 1, 1, 1, 1], [0, 2, 0, 0, 0]]),
        lengths=np.array([5, 2]),
    )
    p = prefixes(full, np.array([0, 1]), np.array([4, 1]), max_len=2)
    assert p.items.tolist() == [[2, 3], [5, -1]] and p.lengths.tolist() == [2, 1]
    assert p.ratings.tolist() == [[3, 4], [5, 0]]


@pytest.fixture(scope="module", name="split")
def split_fixture(tiny_split_dir):
    return load_split(tiny_split_dir)


@pytest.fixture(scope="module", name="encoder")
def encoder_fixture(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "encoder"
    return pretrain_encoder(split, out, encoder_config=SMALL, config=PretrainConfig(epochs=1), progress=False)


@pytest.fixture(scope="module", name="agent")
def agent_fixture(split, encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("agent") / "agent"
    return train_userllm(split, encoder, out, train=FAST, progress=False)


def test_an_untrained_agent_is_its_prior(split, encoder, agent):
    model = UserLLM(agent.model.config, encoder.model.encoder, load_encoder()[0]).eval()
    fresh = UserLLMAgent(
        model, agent.items, agent.text_ids, agent.text_mask, agent.histories, agent.prior, FAST, agent.split_id
    )
    users, items = split.test["user_id"].to_numpy(), split.test["item_id"].to_numpy()
    np.testing.assert_allclose(fresh.predict(users, items), agent.prior.rater.predict(users, items), atol=1e-9)


def test_trained_agent_saves_reloads_and_refuses(split, encoder, agent):
    report = agent.report
    assert report["epochs_run"] == 2 and len(report["curve"]) == 2 and report["train_ratings"] > 0
    path = agent.path
    assert sorted(p.name for p in path.iterdir()) == ["agent.json", "agent.safetensors", "manifest.json", "prior"]
    from safetensors import safe_open

    with safe_open(str(path / "agent.safetensors"), "pt") as f:
        names = f.keys()
    stored = {k.removeprefix("model.").split(".")[0] for k in names if k.startswith("model.")}
    assert stored == {"user_encoder", "resampler", "projection", "blocks", "rating_head"}  # no backbone weight
    loaded = UserLLMAgent.load(path, split_id=split.manifest["split_id"])
    users, items = split.test["user_id"].to_numpy(), split.test["item_id"].to_numpy()
    dist = agent.predict(users, items)
    np.testing.assert_allclose(loaded.predict(users, items), dist, atol=1e-6)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    # the movie cache came from the artifact, and equals the one the backbone computes
    stored = loaded._movies
    assert stored is not None and set(stored) == {"pooled", "queries", "weights", "mask"}
    loaded._movies = None
    for key, value in loaded.movie_states().items():
        torch.testing.assert_close(stored[key], value, atol=1e-5, rtol=1e-5)
    with pytest.raises(ArtifactError, match="split"):
        UserLLMAgent.load(path, split_id="another")
    with pytest.raises(UnknownUserError, match="user 999999 has no history"):
        agent.predict(np.array([999999]), items[:1])
    with pytest.raises(ArtifactError, match="already holds a finished USER-LLM agent"):
        train_userllm(split, encoder, path, train=FAST, progress=False)


def test_interrupted_training_resumes_exactly(split, encoder, agent, tmp_path, monkeypatch):
    out = tmp_path / "agent"
    real = train_module.save_epoch

    def stop_after_first_epoch(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_epoch", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_userllm(split, encoder, out, train=FAST, progress=False)
    assert (out / "checkpoint" / "state.json").is_file() and not (out / "manifest.json").exists()
    monkeypatch.setattr(train_module, "save_epoch", real)
    resumed = train_userllm(split, encoder, out, train=FAST, progress=False)
    # as the uninterrupted run, up to the order of multi-threaded float sums (1e-9 here)
    for got, want in zip(resumed.report["curve"], agent.report["curve"], strict=True):
        assert got == pytest.approx(want, rel=1e-6)
    users, items = split.test["user_id"].to_numpy(), split.test["item_id"].to_numpy()
    np.testing.assert_allclose(resumed.predict(users, items), agent.predict(users, items), atol=1e-5)


def test_a_session_follows_its_own_watches_only(split, agent):
    agent = copy.deepcopy(agent)
    with torch.no_grad():  # gates and head away from their small trained values, so a history change shows
        for block in agent.model.blocks.values():
            block.gate.fill_(1.0)
        torch.manual_seed(0)
        torch.nn.init.normal_(agent.model.rating_head.weight)
    users = split.test["user_id"].to_numpy()[:20]
    items = split.test["item_id"].to_numpy()[:20]
    before = agent.predict(users, items)
    one, two = agent.session(), agent.session()
    np.testing.assert_allclose(one.predict(users, items), before, atol=1e-9)
    watcher = int(users[0])
    one.observe(np.array([watcher, watcher]), items[:2], np.array([5, 1]))
    others = users != watcher
    np.testing.assert_allclose(one.predict(users[others], items[others]), before[others], atol=1e-9)
    assert one._dirty == set(agent.user_rows(np.array([watcher])).tolist())  # recomputed only when asked about
    after = one.predict(users, items)
    assert not one._dirty
    changed = ~np.isclose(after, before, atol=1e-9).all(axis=1)
    assert changed[users == watcher].all() and not changed[users != watcher].any()
    np.testing.assert_allclose(two.predict(users, items), before, atol=1e-9)
    np.testing.assert_allclose(agent.predict(users, items), before, atol=1e-9)
    # the session's history is the logged one with the watches appended (latest max_len kept)
    row = agent.user_rows(np.array([watcher]))
    h = one.histories_of(row)
    n = int(agent.histories.lengths[row[0]])
    expected = [*agent.histories.items[row[0], :n].tolist(), *agent.items.rows(items[:2]).tolist()][-SMALL.max_len :]
    assert h.items[0, : h.lengths[0]].tolist() == expected
    tokens = agent.tokens_of(h)
    with torch.no_grad():
        direct = agent.model.user_tokens(*as_tensors(h))
    assert torch.allclose(tokens, direct, atol=1e-5)


def test_cli_trains_an_agent_and_scores_it_on_the_test_part(tiny_split_dir, encoder, tmp_path, capsys):
    import json

    from recsim_personas.cli import main

    out = tmp_path / "agent"
    argv = ["userllm", "train", "--split", str(tiny_split_dir), "--encoder", str(encoder.path), "--out", str(out)]
    flags = ["--epochs", "1", "--batch-size", "4", "--targets-per-cut", "4", "--min-prefix", "3", "--prior-folds", "2"]
    assert main([*argv, *flags, "--strategy", "proj", "--json", "--no-progress"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["report"]["epochs_run"] == 1 and payload["test"]["n"] > 0
    assert UserLLMAgent.load(out).train_config.strategy == "proj"
    assert main([*argv, *flags, "--strategy", "proj", "--no-progress"]) == 2
    assert "already holds a finished USER-LLM agent" in capsys.readouterr().err
    assert main([*argv, "--strategy", "projection", "--no-progress"]) == 2
    assert "Did you mean 'proj'" in capsys.readouterr().err


def test_a_session_growing_histories_step_by_step_equals_encoding_them_whole(split, agent):
    agent = copy.deepcopy(agent)
    with torch.no_grad():
        for block in agent.model.blocks.values():
            block.gate.fill_(1.0)
    session = agent.session()
    users = np.unique(split.test["user_id"].to_numpy())[:3]
    items = split.test["item_id"].to_numpy()[:6]
    asked = np.repeat(users, len(items))
    movies = np.tile(items, len(users))
    rows = agent.user_rows(users)
    rng = np.random.default_rng(0)
    # enough rounds that every history slides past the encoder's max_len window (re-encoded whole from then on)
    for step in range(SMALL.max_len + 2):
        watchers = users[: 1 + step % 3].repeat(1 + step % 2)  # 1-3 users, once or twice each
        session.observe(watchers, rng.choice(items, len(watchers)), rng.integers(1, 6, len(watchers)))
        got = session.predict(asked, movies)
        whole = agent.user_state(agent.tokens_of(session.histories_of(rows)))
        want = agent.predict_rows(asked, movies, whole, np.repeat(np.arange(len(users)), len(items)))
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert (session.histories_of(rows).lengths == SMALL.max_len).all()


def test_precision_is_measured_and_bfloat16_round_trips_exactly(split, agent, tmp_path):
    agent = copy.deepcopy(agent)
    users, items = split.test["user_id"].to_numpy(), split.test["item_id"].to_numpy()
    want = agent.predict(users, items)
    verdict = agent.choose_precision("auto", requests=64, cache_dir=tmp_path)
    assert verdict is not None and agent.dtype == verdict.dtype and agent.precision is verdict
    assert verdict.max_abs_diff is not None and verdict.max_abs_diff < 0.05  # a tiny agent: bfloat16 rounding only
    agent.to_dtype("bfloat16")
    assert (
        next(agent.model.parameters()).dtype == torch.bfloat16
        and agent.movie_states()["queries"].dtype == torch.bfloat16
    )
    low = agent.predict(users, items)
    levels = np.arange(1, 6)
    assert np.abs(low @ levels - want @ levels).max() < 0.05 and not np.allclose(low, want, atol=1e-9)
    agent.to_dtype("float32")
    np.testing.assert_array_equal(agent.predict(users, items), want)  # the float32 originals restored exactly
    again = agent.choose_precision("auto", requests=64, cache_dir=tmp_path)  # the cached verdict, not re-measured
    assert again.to_dict() == verdict.to_dict()
    with pytest.raises(ConfigError, match="inference dtype"):
        agent.choose_precision("float16")


def test_expected_rating_error_on_known_answers_and_the_mse_term_trains(split, encoder, tmp_path):
    from recsim_personas.agents.userllm.train import expected_error

    logits = torch.log(torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]]) + 1e-12)
    # expected ratings 3.5 and 1.0 against 5 and 2
    torch.testing.assert_close(
        expected_error(logits, torch.tensor([4, 1])), torch.tensor([2.25, 1.0]), atol=1e-6, rtol=0
    )
    with pytest.raises(ConfigError, match="rating_mse_weight"):
        UserLLMTrainConfig(rating_mse_weight=-1.0)
    train = UserLLMTrainConfig(**{**FAST.to_dict(), "strategy": "proj", "epochs": 1, "rating_mse_weight": 1.0})
    agent = train_userllm(split, encoder, tmp_path / "agent", train=train, progress=False)
    (epoch,) = agent.report["curve"]
    assert epoch["valid_rmse"] > 0 and epoch["train_loss"] > 0
    assert agent.train_config.rating_mse_weight == 1.0


def test_temporal_prior_knows_other_users_and_only_the_own_past(monkeypatch):
    import pandas as pd

    from recsim_personas.agents import prior as prior_module

    rng = np.random.default_rng(0)
    n_users, per_user = 6, 9
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users), per_user),
            "item_id": np.tile(np.arange(per_user), n_users),
            "rating": rng.integers(1, 6, n_users * per_user),
            "timestamp": rng.permutation(n_users * per_user) * 10,  # time order unrelated to row order
        }
    ).sample(frac=1.0, random_state=1)

    class Recording:
        """A prior whose 'log-probs' say what it was fitted on: the user's latest known timestamp, the ratings
        known of other users, and the user's known ratings."""

        def __init__(self, known):
            self.known = known

        def log_probs(self, users, items):
            rows = []
            for u in users:
                own = self.known[self.known.user_id == u]
                rows.append([own.timestamp.max() if len(own) else -1, (self.known.user_id != u).sum(), len(own), 0, 0])
            return np.asarray(rows, dtype=np.float64)

    monkeypatch.setattr(prior_module.AnchorPrior, "fit", classmethod(lambda cls, known, kind: Recording(known)))
    out = prior_module.ratings_temporal_log_probs(frame, "bias", folds=3, seed=0)
    for j, row in enumerate(frame.itertuples()):
        own = frame[frame.user_id == row.user_id].sort_values("timestamp")
        k = int(np.searchsorted(own.timestamp.to_numpy(), row.timestamp)) * 3 // per_user  # its time block
        earlier = own.iloc[: k * per_user // 3]
        assert out[j, 2] == len(earlier)  # exactly the own ratings of the earlier blocks
        assert out[j, 0] == (earlier.timestamp.max() if len(earlier) else -1) and out[j, 0] < row.timestamp
        # every other user is known, except the blocks k, k+1, ... of the one other user of its group (6 users in 3
        # groups: two per group)
        assert out[j, 1] == len(frame) - per_user - (per_user - len(earlier))
    with pytest.raises(ConfigError, match="prior_folds_by"):
        UserLLMTrainConfig(prior_folds_by="temporal")
