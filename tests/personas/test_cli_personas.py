from __future__ import annotations

import json

import pytest

from recsim_personas.cli import main
from recsim_personas.data import ProtocolConfig, load_movielens, make_split


@pytest.fixture
def split(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    return make_split(ml, ProtocolConfig(n_users=12, min_ratings=10, max_ratings=40)).save(tmp_path / "split")


def run(capsys, *argv):
    code = main([*argv, "--json", "--no-progress"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def test_distill_cluster_index_with_the_local_embedder(split, tmp_path, capsys):
    p = tmp_path / "personas"
    code, out, _ = run(capsys, "personas", "distill", "--split", str(split.path), "--out", str(p))
    assert code == 0 and out["counts"]["personas"] == 12
    code, out, _ = run(capsys, "personas", "cluster", "--personas", str(p), "--k-max", "5")
    assert code == 0 and 2 <= out["k"] <= 5 and sum(out["sizes"]) == 12
    assert (p / "clusters" / "elbow.png").is_file()
    code, out, _ = run(capsys, "personas", "cluster", "--personas", str(p), "--k", "3")
    assert code == 0 and out["k"] == 3
    code, out, _ = run(capsys, "personas", "index", "--personas", str(p), "--split", str(split.path))
    assert code == 0 and out["memories"] == len(split.train) and out["dim"] == 384
    from recsim_personas.personas.memory import MemoryIndex

    index = MemoryIndex.load(p / "memory")
    uid = int(split.train.user_id.iloc[0])
    item = int(split.test[split.test.user_id == uid].item_id.iloc[0])
    assert len(index.retrieve(uid, item, k=2)) == 2


def test_cluster_and_index_refuse_bad_input(split, tmp_path, capsys, tiny_dataset_dir):
    code, _, err = run(capsys, "personas", "cluster", "--personas", str(tmp_path / "nothing"))
    assert code == 2 and "not a finished persona set" in err
    p = tmp_path / "personas"
    run(capsys, "personas", "distill", "--split", str(split.path), "--out", str(p))
    code, _, err = run(capsys, "personas", "cluster", "--personas", str(p), "--k", "zero")
    assert code == 2 and "--k must be 'auto' or a positive integer" in err
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    other = make_split(ml, ProtocolConfig(n_users=12, min_ratings=10, max_ratings=40, seed=4)).save(tmp_path / "o")
    code, _, err = run(capsys, "personas", "index", "--personas", str(p), "--split", str(other.path))
    assert code == 2 and "were made from split" in err
