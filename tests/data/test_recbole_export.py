from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data import ProtocolConfig, load_movielens, make_split
from recsim_personas.data.recbole_export import export_recbole, validation_mask, write_training_files
from recsim_personas.errors import ConfigError


def test_atomic_files_have_typed_headers_and_the_right_rows(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    split = make_split(ml, ProtocolConfig(n_users=10, min_ratings=10, max_ratings=30))
    paths = export_recbole(split, tmp_path / "rb")
    inter = pd.read_csv(paths["inter"], sep="\t")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert len(inter) == len(split.train) + len(split.background)  # history, never the test part
    test = pd.read_csv(paths["test.inter"], sep="\t")
    assert len(test) == len(split.test)
    held_out = set(zip(split.test.user_id, split.test.item_id, strict=True))
    assert held_out.isdisjoint(zip(inter["user_id:token"], inter["item_id:token"], strict=True))
    item = pd.read_csv(paths["item"], sep="\t", keep_default_na=False)
    assert list(item.columns) == ["item_id:token", "movie_title:token_seq", "release_year:token", "genre:token_seq"]
    assert len(item) == len(split.items)
    user = pd.read_csv(paths["user"], sep="\t", dtype=str)
    assert user["user_id:token"].astype(int).tolist() == split.user_ids.tolist()
    # every line has exactly as many tabs as the header
    for p in paths.values():
        lines = p.read_text().splitlines()
        assert {line.count("\t") for line in lines} == {lines[0].count("\t")}


def _read(path):
    frame = pd.read_csv(path, sep="\t")
    assert list(frame.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    frame.columns = ["user_id", "item_id", "timestamp"]
    return frame


def _time_ordered(frame):
    return frame[["user_id", "item_id", "timestamp"]].sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")


def test_training_files_of_general_models_are_the_history_and_the_test_part(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    split = make_split(ml, ProtocolConfig(n_users=10, min_ratings=10, max_ratings=30))
    root = write_training_files(split, tmp_path / "data", "rs", sequential=False) / "rs"
    assert sorted(p.name for p in root.iterdir()) == ["rs.test.inter", "rs.train.inter", "rs.valid.inter"]
    train = _read(root / "rs.train.inter")
    pd.testing.assert_frame_equal(train, _time_ordered(split.history()).reset_index(drop=True), check_dtype=False)
    assert _read(root / "rs.valid.inter").empty
    pd.testing.assert_frame_equal(
        _read(root / "rs.test.inter"), _time_ordered(split.test).reset_index(drop=True), check_dtype=False
    )
    seq = write_training_files(split, tmp_path / "seq", "rs", sequential=True) / "rs"
    assert [p.name for p in seq.iterdir()] == ["rs.inter"]  # the history only: RecBole holds out the last items
    pd.testing.assert_frame_equal(_read(seq / "rs.inter"), train)


def test_the_validation_slice_is_each_sampled_user_s_latest_train_ratings(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    split = make_split(ml, ProtocolConfig(n_users=10, min_ratings=10, max_ratings=30))
    root = write_training_files(split, tmp_path, "rs", sequential=False, valid_share=0.25) / "rs"
    train, valid = _read(root / "rs.train.inter"), _read(root / "rs.valid.inter")
    assert len(train) + len(valid) == len(split.history())
    assert set(valid.user_id) == set(split.user_ids)  # every sampled user, no background user
    test_pairs = set(zip(split.test.user_id, split.test.item_id, strict=True))
    assert test_pairs.isdisjoint(zip(valid.user_id, valid.item_id, strict=True))  # never the test part
    for user, part in split.train.groupby("user_id"):
        held = valid[valid.user_id == user]
        assert len(held) == int(np.ceil(0.25 * len(part)))
        kept = train[train.user_id == user]
        assert held.timestamp.min() >= kept.timestamp.max()  # the latest ones
    background = split.background.user_id.unique()
    assert train.user_id.isin(background).sum() == len(split.background)
    with pytest.raises(ConfigError, match="valid_share must be a number in"):
        write_training_files(split, tmp_path / "x", "rs", sequential=False, valid_share=1.5)


def test_a_user_with_one_rating_keeps_it_for_training():
    history = pd.DataFrame({"user_id": [1, 2, 2, 2], "item_id": [5, 6, 7, 8], "timestamp": [1, 1, 2, 3]})
    mask = validation_mask(history, np.array([1, 2]), 0.1)
    assert mask.tolist() == [False, False, False, True]
