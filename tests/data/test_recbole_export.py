from __future__ import annotations

import pandas as pd

from recsim_personas.data import ProtocolConfig, load_movielens, make_split
from recsim_personas.data.recbole_export import export_recbole


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
