"""USER-LLM user encoder: event buckets on known answers, histories, causality and padding invariance of the
encoder and the Perceiver resampler, pretraining (loss goes down, exact resume), the artifact and the next-item
evaluation's plumbing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.agents.userllm import pretrain as pretrain_module
from recsim_personas.agents.userllm.config import PretrainConfig, ResamplerConfig, UserEncoderConfig
from recsim_personas.agents.userllm.encoder import NextEventModel, PerceiverResampler
from recsim_personas.agents.userllm.events import (
    ItemTable,
    gap_buckets,
    histories,
    n_year_buckets,
    year_buckets,
)
from recsim_personas.agents.userllm.pretrain import (
    PretrainedEncoder,
    as_tensors,
    length_batches,
    next_item_metrics,
    pretrain_encoder,
)
from recsim_personas.data import load_split
from recsim_personas.errors import ArtifactError, ConfigError

SMALL = UserEncoderConfig(d_model=16, field_dim=8, n_layers=1, n_heads=2, ffn_mult=2, dropout=0.1, max_len=12)
FAST = PretrainConfig(epochs=3, batch_size=8, lr=1e-2, warmup_steps=1, patience=5, validation_share=0.2)


def test_gap_buckets_on_known_gaps():
    day = 86_400
    users = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    ts = np.cumsum([0, 30, 300, 7_200, 2 * day, 400 * day, 0, 59])
    ts[6:] = [10, 69]  # user 1 starts over
    assert gap_buckets(users, ts).tolist() == [0, 1, 2, 4, 5, 8, 0, 1]


def test_year_buckets():
    years = np.array([np.nan, 1900, 1904, 1905, 1995, 2050, 1850])
    assert year_buckets(years, 5).tolist() == [0, 1, 1, 2, 20, 26, 1]
    assert n_year_buckets(5) == 27
    assert year_buckets(years, 5).max() < n_year_buckets(5)


def _items(n: int = 6, n_genres: int = 3) -> ItemTable:
    genres = np.zeros((n, n_genres), dtype=np.float32)
    genres[np.arange(n), np.arange(n) % n_genres] = 1.0
    return ItemTable(
        item_ids=np.arange(10, 10 + n, dtype=np.int64),
        genres=genres,
        year_bucket=np.arange(n, dtype=np.int64) % 5,
        genre_names=tuple(f"g{k}" for k in range(n_genres)),
    )


def test_histories_keep_the_latest_events_with_their_real_gaps():
    frame = pd.DataFrame(
        {
            "user_id": [7, 7, 7, 7, 3],
            "item_id": [10, 11, 12, 13, 15],
            "rating": [1, 2, 3, 4, 5],
            "timestamp": [0, 100, 5_000, 5_030, 9],
        }
    )
    h = histories(frame.sample(frac=1.0, random_state=0), _items(), max_len=3)
    assert h.user_ids.tolist() == [3, 7]
    assert h.lengths.tolist() == [1, 3]
    assert h.items.tolist() == [[5, -1, -1], [1, 2, 3]]
    assert h.ratings.tolist() == [[5, 0, 0], [2, 3, 4]]
    # user 7's first kept event (item 11) came 100 s after a dropped one: bucket 2, not 0
    assert h.gaps.tolist() == [[0, 0, 0], [2, 4, 1]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="timestamp"), "missing column"),
        (lambda f: f.assign(rating=[1, 6]), "rating 6 is not one of 1-5"),
        (lambda f: f.assign(item_id=[10, 99]), "item_id 99 is not one of the split's 6 items"),
    ],
)
def test_histories_name_bad_input(change, message):
    frame = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 11], "rating": [3, 4], "timestamp": [0, 1]})
    with pytest.raises(ConfigError, match=message):
        histories(change(frame), _items(), max_len=4, where="ratings.parquet")


def test_configs_name_the_bad_field():
    with pytest.raises(ConfigError, match=r"UserEncoderConfig\.d_model .* divisible by n_heads"):
        UserEncoderConfig(d_model=10, n_heads=4)
    with pytest.raises(ConfigError, match=r"PretrainConfig.lr must be a number in \(0"):
        PretrainConfig(lr=0.0)
    with pytest.raises(ConfigError, match=r"ResamplerConfig\.n_latents must be an integer >= 1"):
        ResamplerConfig(n_latents=0)
    assert PretrainConfig.from_dict(FAST.to_dict()) == FAST


def _model(seed: int = 0) -> NextEventModel:
    torch.manual_seed(seed)  # tests may seed torch's global generator; the library never does
    return NextEventModel(SMALL, _items()).eval()


def _batch(items, ratings, gaps, lengths):
    return (
        torch.tensor(items, dtype=torch.long),
        torch.tensor(ratings, dtype=torch.long),
        torch.tensor(gaps, dtype=torch.long),
        torch.tensor(lengths, dtype=torch.long),
    )


def test_encoder_is_causal_and_ignores_padding():
    model = _model()
    base = _batch([[0, 1, 2, 3]], [[5, 4, 3, 2]], [[0, 1, 2, 3]], [4])
    later_changed = _batch([[0, 1, 2, 5]], [[5, 4, 3, 1]], [[0, 1, 2, 7]], [4])
    with torch.no_grad():
        a, _ = model.encoder(*base)
        b, _ = model.encoder(*later_changed)
        assert torch.allclose(a[0, :3], b[0, :3], atol=1e-6)  # positions 0..2 never read event 3
        assert not torch.allclose(a[0, 3], b[0, 3], atol=1e-4)
        # the same 2-event history alone and padded beside a longer one
        alone, _ = model.encoder(*_batch([[0, 1]], [[5, 4]], [[0, 1]], [2]))
        padded, valid = model.encoder(
            *_batch([[0, 1, -1, -1], [2, 3, 4, 5]], [[5, 4, 0, 0], [1, 2, 3, 4]], [[0, 1, 0, 0], [0, 1, 1, 1]], [2, 4])
        )
    assert valid.tolist() == [[True, True, False, False], [True] * 4]
    assert torch.allclose(alone[0], padded[0, :2], atol=1e-5)


def test_resampler_gives_fixed_tokens_whatever_the_length_and_padding():
    torch.manual_seed(0)
    resampler = PerceiverResampler(16, ResamplerConfig(n_latents=3, n_layers=2, n_heads=2)).eval()
    events = torch.randn(1, 5, 16)
    valid = torch.tensor([[True, True, True, False, False]])
    with torch.no_grad():
        full = resampler(events, valid)
        trimmed = resampler(events[:, :3], valid[:, :3])
        other = resampler(events[:, :1].expand(1, 5, 16).clone(), valid)
        empty = resampler(events, torch.zeros_like(valid))
        long = resampler(torch.randn(2, 40, 16), torch.ones(2, 40, dtype=torch.bool))
    assert full.shape == (1, 3, 16) and long.shape == (2, 3, 16)
    assert torch.allclose(full, trimmed, atol=1e-5)  # padded events are not read
    assert not torch.allclose(full, other, atol=1e-3)  # real events are
    assert torch.isfinite(empty).all()


def test_length_batches_cover_every_row_once_and_group_similar_lengths():
    lengths = np.array([1, 9, 2, 8, 3, 7, 4, 6])
    rows = np.arange(100, 108)
    batches = length_batches(lengths, rows, 2, seed=[1, 0])
    assert sorted(np.concatenate(batches).tolist()) == rows.tolist()
    spans = [np.ptp(lengths[b - 100]) for b in batches]
    assert max(spans) <= 1
    assert [b.tolist() for b in batches] == [b.tolist() for b in length_batches(lengths, rows, 2, seed=[1, 0])]


@pytest.fixture(scope="module", name="split")
def split_fixture(tiny_split_dir):
    return load_split(tiny_split_dir)


@pytest.fixture(scope="module", name="pretrained")
def pretrained_fixture(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "encoder"
    return pretrain_encoder(split, out, encoder_config=SMALL, config=FAST, progress=False)


def test_pretraining_lowers_the_loss_and_saves_a_loadable_encoder(split, pretrained):
    curve = pretrained.report["curve"]
    assert len(curve) == 3
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    out = pretrained.path
    assert sorted(p.name for p in out.iterdir()) == ["encoder.json", "encoder.safetensors", "manifest.json"]
    loaded = PretrainedEncoder.load(out, split_id=split.manifest["split_id"])
    h = loaded.histories(split.train)
    with torch.no_grad():
        a = pretrained.model.next_item_logits(*as_tensors(h))
        b = loaded.model.next_item_logits(*as_tensors(h))
    assert torch.equal(a, b)
    test = pretrained.report["test"]
    assert set(test) == {"recall@10", "ndcg@10", "mrr@10", "users"} and test["users"] > 0


def _interrupt_in_second_epoch(split, out, monkeypatch) -> None:
    """Start pretraining into ``out`` and stop it (KeyboardInterrupt) during the second epoch's validation."""
    real = pretrain_module._mean_loss
    calls = {"n": 0}

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "_mean_loss", interrupt)
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(split, out, encoder_config=SMALL, config=FAST, progress=False, evaluate=False)


def test_interrupted_pretraining_resumes_exactly(split, pretrained, tmp_path, monkeypatch):
    out = tmp_path / "encoder"
    _interrupt_in_second_epoch(split, out, monkeypatch)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert not (out / "manifest.json").exists()
    monkeypatch.undo()
    resumed = pretrain_encoder(split, out, encoder_config=SMALL, config=FAST, progress=False, evaluate=False)
    assert resumed.report["curve"] == pretrained.report["curve"]
    for name, tensor in pretrained.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_artifact_refusals(split, pretrained, tmp_path):
    with pytest.raises(ArtifactError, match="already holds a finished user encoder"):
        pretrain_encoder(split, pretrained.path, encoder_config=SMALL, config=FAST, progress=False)
    with pytest.raises(ArtifactError, match="split"):
        PretrainedEncoder.load(pretrained.path, split_id="another-split")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="is not a user encoder run"):
        pretrain_encoder(split, foreign, encoder_config=SMALL, config=FAST, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in pretrained.path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    data = bytearray((copy / "encoder.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "encoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"encoder\.safetensors"):
        PretrainedEncoder.load(copy)


def test_next_item_metrics_rank_unseen_movies_against_the_test_part(split, pretrained, monkeypatch):
    """Scores that put each user's test movies first (and its train movies above everything) score perfectly:
    the train movies are masked and the test movies are the positives."""
    items = pretrained.items

    def oracle(encoder, hist):
        scores = np.zeros((len(hist), items.n_items), dtype=np.float32)
        row = {u: r for r, u in enumerate(hist.user_ids.tolist())}
        for frame, value in ((split.test, 1.0), (split.train, 5.0)):
            users = [row[u] for u in frame["user_id"].tolist() if u in row]
            keep = frame["user_id"].isin(row).to_numpy()
            scores[users, items.rows(frame["item_id"].to_numpy()[keep])] = value
        return scores

    monkeypatch.setattr(pretrain_module, "next_item_scores", oracle)
    metrics = next_item_metrics(pretrained, split, k=10)
    assert metrics["ndcg@10"] == pytest.approx(1.0)
    assert metrics["mrr@10"] == pytest.approx(1.0)
    per_user = split.test.groupby("user_id").size()
    assert metrics["recall@10"] == pytest.approx(float((np.minimum(per_user, 10) / per_user).mean()))


def test_cli_pretrains_reports_and_refuses_to_clobber(tiny_split_dir, tmp_path, capsys):
    from recsim_personas.cli import main

    out = tmp_path / "enc"
    flags = ["--d-model", "16", "--field-dim", "8", "--n-layers", "1", "--n-heads", "2", "--max-len", "12"]
    argv = ["userllm", "pretrain", "--split", str(tiny_split_dir), "--out", str(out), "--epochs", "2", *flags]
    assert main([*argv, "--json", "--no-progress", "--threads", "1"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["report"]["epochs_run"] == 2 and payload["report"]["test"]["users"] > 0
    assert PretrainedEncoder.load(out).encoder_config.d_model == 16
    assert main([*argv, "--no-progress"]) == 2
    assert "already holds a finished user encoder" in capsys.readouterr().err


def test_a_run_resumes_with_another_number_of_epochs_but_not_other_settings(split, pretrained, tmp_path, monkeypatch):
    out = tmp_path / "encoder"
    _interrupt_in_second_epoch(split, out, monkeypatch)
    monkeypatch.undo()
    other = PretrainConfig(**{**FAST.to_dict(), "lr": 0.5})
    with pytest.raises(ArtifactError, match="unfinished user encoder run with other settings"):
        pretrain_encoder(split, out, encoder_config=SMALL, config=other, progress=False)
    shorter = PretrainConfig(**{**FAST.to_dict(), "epochs": 1})  # cut short after the finished epoch
    done = pretrain_encoder(split, out, encoder_config=SMALL, config=shorter, progress=False, evaluate=False)
    assert done.report["epochs_run"] == 1
    assert done.report["curve"] == pretrained.report["curve"][:1]
