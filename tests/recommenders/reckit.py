"""Fixtures shared by the recommender tests (imported by the ``test_rec_*`` modules).

The tiny split is the synthetic ML-100K-format data of the root ``tiny_dataset_dir`` fixture (30 users with
5..40 ratings over 60 items; 20 sampled, 10 background). RecBole models are trained on it once per session
with one or two epochs, so the suite stays fast; the real-data tests use the ``ml100k_split`` fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from datakit import synthetic_ratings, write_ml100k

from recsim_personas.data import ProtocolConfig, prepare_split
from recsim_personas.envs import World, make_world

TINY_CONFIG = ProtocolConfig(n_users=20, min_ratings=5, max_ratings=40, seed=0)
MODELS = ("Pop", "BPR", "LightGCN", "SASRec")


@pytest.fixture(scope="session", name="rec_split_dir")
def rec_split_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recdata")
    per_user = [5 + (u * 7) % 36 for u in range(30)]
    write_ml100k(root, synthetic_ratings(30, 60, per_user), n_items=60, n_users=30)
    split, _ = prepare_split(TINY_CONFIG, root / "split", data_dir=root, download=False)
    return split.path


@pytest.fixture(scope="session", name="other_split_dir")
def other_split_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same data, another user sample: a different split id."""
    root = tmp_path_factory.mktemp("recdata2")
    per_user = [5 + (u * 7) % 36 for u in range(30)]
    write_ml100k(root, synthetic_ratings(30, 60, per_user), n_items=60, n_users=30)
    config = ProtocolConfig(n_users=20, min_ratings=5, max_ratings=40, seed=1)
    split, _ = prepare_split(config, root / "split", data_dir=root, download=False)
    return split.path


@pytest.fixture(scope="session", name="rec_world")
def rec_world_fixture(rec_split_dir: Path) -> World:
    return make_world(rec_split_dir)


@pytest.fixture(scope="session", name="trained")
def trained_fixture(rec_split_dir: Path) -> dict:
    """Pop, BPR, LightGCN and SASRec trained on the tiny split (1–2 epochs), as policies with slate size 5."""
    from recsim_personas.recommenders import RecBoleConfig, train_recbole

    out = {}
    for model in MODELS:
        epochs = 2 if model in ("BPR", "LightGCN") else 1
        config = RecBoleConfig(model=model, epochs=epochs, embedding_size=16, max_seq_len=10, learning_rate=0.01)
        out[model] = train_recbole(rec_split_dir, config, slate_size=5, progress=False)
    return out
