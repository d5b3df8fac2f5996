from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from datakit import synthetic_ratings, write_ml100k

from recsim_personas.data import ProtocolConfig, Split, load_movielens, make_split, prepare_split
from recsim_personas.data.protocol import eligible_users, temporal_split
from recsim_personas.errors import ArtifactError, ConfigError

SMALL = dict(n_users=10, min_ratings=10, max_ratings=30)


def test_config_validation_names_field_and_value():
    with pytest.raises(ConfigError, match=r"train_ratio.*1\.5"):
        ProtocolConfig(train_ratio=1.5)
    with pytest.raises(ConfigError, match=r"max_ratings \(5\).*min_ratings \(10\)"):
        ProtocolConfig(min_ratings=10, max_ratings=5)
    with pytest.raises(ConfigError, match="ml-100k"):
        ProtocolConfig(dataset="ml100k")
    with pytest.raises(ConfigError, match="n_users"):
        ProtocolConfig(n_users=0)
    assert ProtocolConfig.from_dict(ProtocolConfig().to_dict()) == ProtocolConfig()
    with pytest.raises(ConfigError, match="unknown protocol config fields"):
        ProtocolConfig.from_dict({"dataset": "ml-100k", "n_user": 3})


def test_eligibility_is_inclusive():
    ratings = pd.DataFrame({"user_id": [1] * 3 + [2] * 5 + [3] * 6, "item_id": range(14)})
    assert eligible_users(ratings, 3, 5).tolist() == [1, 2]
    assert eligible_users(ratings, 5, 6).tolist() == [2, 3]


def test_temporal_split_is_stable_under_file_order_and_ties():
    # user 1 rates 5 items, three of them in the same second
    ratings = pd.DataFrame(
        {
            "user_id": [1] * 5,
            "item_id": [50, 10, 30, 20, 40],
            "rating": [1, 2, 3, 4, 5],
            "timestamp": [100, 200, 200, 200, 300],
        }
    )
    train, test = temporal_split(ratings, 0.6)
    assert train["item_id"].tolist() == [50, 10, 20]  # oldest first, ties by item id
    assert test["item_id"].tolist() == [30, 40]
    shuffled = ratings.sample(frac=1.0, random_state=3)
    train2, test2 = temporal_split(shuffled, 0.6)
    pd.testing.assert_frame_equal(train, train2)
    pd.testing.assert_frame_equal(test, test2)


def test_make_split_follows_the_protocol(tiny_dataset_dir):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    split = make_split(ml, ProtocolConfig(**SMALL, seed=1))
    counts = ml.ratings.groupby("user_id").size()
    assert len(split.user_ids) == 10
    assert counts[split.user_ids].between(10, 30).all()
    for uid in split.user_ids:
        tr = split.train[split.train.user_id == uid]
        te = split.test[split.test.user_id == uid]
        assert len(tr) == int(np.floor(counts[uid] * 0.6))
        assert len(tr) + len(te) == counts[uid]
        assert tr["timestamp"].max() <= te["timestamp"].min()
    # background = everyone else, complete
    assert set(split.background.user_id).isdisjoint(split.user_ids)
    assert len(split.train) + len(split.test) + len(split.background) == len(ml.ratings)
    # same seed -> same users, another seed -> another sample
    again = make_split(ml, ProtocolConfig(**SMALL, seed=1))
    assert again.user_ids.tolist() == split.user_ids.tolist()
    other = make_split(ml, ProtocolConfig(**SMALL, seed=2))
    assert other.user_ids.tolist() != split.user_ids.tolist()


def test_historical_average_excludes_test_ratings(tmp_path):
    # item 1 is rated 5 by the sampled users in their test part and 1 by everybody in train/background
    rows = []
    for u in range(1, 4):
        rows += [(u, i, 3, 1000 + i) for i in range(2, 12)]  # 10 older ratings of other items
        rows.append((u, 1, 5, 5000))  # newest rating -> test
    rows += [(4, 1, 1, 10), (4, 2, 3, 11)]  # a background user
    write_ml100k(tmp_path, rows, n_items=12, n_users=4)
    ml = load_movielens("ml-100k", tmp_path, download=False)
    split = make_split(ml, ProtocolConfig(n_users=3, min_ratings=5, max_ratings=20))
    assert set(split.test[split.test.item_id == 1].user_id) == {1, 2, 3}
    item1 = split.items.set_index("item_id").loc[1]
    assert item1["hist_avg_rating"] == pytest.approx(1.0)  # the three 5s are test ratings: excluded
    assert item1["hist_n_ratings"] == 1
    assert "historical average rating of 1.00" in split.catalog().describe(1)


def test_too_few_eligible_users_is_a_clear_error(tiny_dataset_dir):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    with pytest.raises(ConfigError, match=r"only \d+ users .* fewer than the 500 requested.*--users"):
        make_split(ml, ProtocolConfig(n_users=500, min_ratings=10, max_ratings=30))


def test_save_load_roundtrip_and_verification(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    split = make_split(ml, ProtocolConfig(**SMALL)).save(tmp_path / "s")
    loaded = Split.load(tmp_path / "s")
    assert loaded.split_id == split.split_id
    pd.testing.assert_frame_equal(loaded.train, split.train)
    pd.testing.assert_frame_equal(loaded.test, split.test)
    assert loaded.items["genres"].map(type).eq(list).all()
    loaded.check_source(ml)  # same data: fine
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["counts"]["train"] == len(split.train)
    assert set(manifest["files"]) >= {"train.parquet", "test.parquet", "items.parquet", "recbole/recbole.inter"}
    assert manifest["source"]["hash"] == ml.source_hash


def test_tampered_or_incomplete_split_is_refused(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    make_split(ml, ProtocolConfig(**SMALL)).save(tmp_path / "s")
    bad = tmp_path / "tampered"
    shutil.copytree(tmp_path / "s", bad)
    test = pd.read_parquet(bad / "test.parquet")
    test.loc[0, "rating"] = 1 if test.loc[0, "rating"] != 1 else 2
    test.to_parquet(bad / "test.parquet", index=False)
    with pytest.raises(ArtifactError, match=r"test\.parquet does not match its manifest"):
        Split.load(bad)
    gone = tmp_path / "incomplete"
    shutil.copytree(tmp_path / "s", gone)
    (gone / "train.parquet").unlink()
    with pytest.raises(ArtifactError, match=r"incomplete: train\.parquet"):
        Split.load(gone)
    edited = tmp_path / "edited"
    shutil.copytree(tmp_path / "s", edited)
    m = json.loads((edited / "manifest.json").read_text())
    m["config"]["seed"] = 99
    (edited / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="edited"):
        Split.load(edited)
    with pytest.raises(ArtifactError, match="not a split"):
        Split.load(tmp_path)


def test_split_from_other_data_is_refused(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    split = make_split(ml, ProtocolConfig(**SMALL)).save(tmp_path / "s")
    other_dir = tmp_path / "other"
    write_ml100k(other_dir, synthetic_ratings(30, 60, [20] * 30, seed=7), n_items=60, n_users=30)
    other = load_movielens("ml-100k", other_dir, download=False)
    with pytest.raises(ArtifactError, match="was made from ml-100k data with hash"):
        split.check_source(other)


def test_prepare_is_idempotent_and_never_clobbers(tiny_dataset_dir, tmp_path):
    out = tmp_path / "s"
    cfg = ProtocolConfig(**SMALL)
    first, created = prepare_split(cfg, out, data_dir=tiny_dataset_dir, download=False)
    assert created
    mtime = (out / "train.parquet").stat().st_mtime_ns
    again, created = prepare_split(cfg, out, data_dir=tiny_dataset_dir, download=False)
    assert not created and again.split_id == first.split_id
    assert (out / "train.parquet").stat().st_mtime_ns == mtime
    other = ProtocolConfig(**{**SMALL, "seed": 5})
    with pytest.raises(ArtifactError, match="--overwrite"):
        prepare_split(other, out, data_dir=tiny_dataset_dir, download=False)
    assert Split.load(out).split_id == first.split_id  # untouched
    replaced, created = prepare_split(other, out, data_dir=tiny_dataset_dir, download=False, overwrite=True)
    assert created and replaced.config.seed == 5
    # a directory that is not a split is never replaced, not even with overwrite
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a split"):
        prepare_split(cfg, precious, data_dir=tiny_dataset_dir, download=False, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_failed_save_leaves_nothing(tiny_dataset_dir, tmp_path, monkeypatch):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    split = make_split(ml, ProtocolConfig(**SMALL))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("recsim_personas.data.recbole_export.export_recbole", boom)
    with pytest.raises(RuntimeError):
        split.save(tmp_path / "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k"]  # no split, no temp leftovers


@pytest.mark.movielens
def test_ml100k_protocol_counts(ml100k_split):
    c = ml100k_split.manifest["counts"]
    assert c["eligible_users"] == 216
    assert c["users"] == 200
    assert c["train"] == 17018 and c["test"] == 11474
    assert c["train"] + c["test"] + c["background"] == 100_000
    assert ml100k_split.users["n_ratings"].between(100, 200).all()
    # every test rating is newer than (or as old as) all of the user's train ratings
    last_train = ml100k_split.train.groupby("user_id")["timestamp"].max()
    first_test = ml100k_split.test.groupby("user_id")["timestamp"].min()
    assert (last_train <= first_test).all()
