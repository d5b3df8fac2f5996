from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datakit import synthetic_ratings, write_ml100k

from recsim_personas.data import ProtocolConfig, Split, load_movielens, load_split, make_split, prepare_split
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


@pytest.fixture
def saved(tiny_dataset_dir, tmp_path) -> Path:
    """A split saved in a directory of its own (tests copy it before damaging it)."""
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    return make_split(ml, ProtocolConfig(**SMALL)).save(tmp_path / "s").path


def copy_of(saved: Path, name: str) -> Path:
    return Path(shutil.copytree(saved, saved.parent / name))


def refusal(path: Path) -> str:
    with pytest.raises(ArtifactError) as info:
        Split.load(path)
    msg = str(info.value)
    assert "Fix: " in msg, msg
    return msg


def test_split_id_names_config_source_and_files(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    core = {k: manifest[k] for k in ("config", "source", "files")}
    assert manifest["split_id"] == hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()
    assert manifest["format"] == "recsim-personas/split" and manifest["format_version"] == 1
    assert sorted(manifest["files"]) == [
        "background.parquet",
        "items.parquet",
        "recbole/recbole.inter",
        "recbole/recbole.item",
        "recbole/recbole.test.inter",
        "recbole/recbole.user",
        "test.parquet",
        "train.parquet",
        "users.parquet",
    ]
    assert {"pandas", "pyarrow", "recsim_personas"} <= set(manifest["versions"])


def test_a_split_written_by_the_previous_version_loads_with_its_split_id(saved):
    # the manifest exactly as the per-module writer of earlier versions wrote it
    m = json.loads((saved / "manifest.json").read_text())
    old = copy_of(saved, "old")
    legacy = {"format": m["format"], "format_version": 1, "config": m["config"], "source": m["source"]}
    legacy |= {"counts": m["counts"], "created_at": "2025-01-01T00:00:00+00:00"}
    legacy |= {"versions": {"recsim_personas": "0.1.0", "pandas": "2.2.0", "numpy": "2.0.0", "pyarrow": "15.0.0"}}
    legacy |= {"files": m["files"], "split_id": m["split_id"]}
    (old / "manifest.json").write_text(json.dumps(legacy, indent=2) + "\n")
    assert Split.load(old).split_id == m["split_id"]
    del legacy["format_version"]  # a manifest without a version is version 1
    (old / "manifest.json").write_text(json.dumps(legacy))
    assert Split.load(old).split_id == m["split_id"]


def test_tampered_or_incomplete_split_is_refused(saved, tmp_path):
    bad = copy_of(saved, "tampered")
    test = pd.read_parquet(bad / "test.parquet")
    test.loc[0, "rating"] = 1 if test.loc[0, "rating"] != 1 else 2
    test.to_parquet(bad / "test.parquet", index=False)
    assert "test.parquet does not match its manifest" in refusal(bad)
    gone = copy_of(saved, "incomplete")
    (gone / "train.parquet").unlink()
    assert "train.parquet is missing" in refusal(gone)
    edited = copy_of(saved, "edited")
    m = json.loads((edited / "manifest.json").read_text())
    m["config"]["seed"] = 99
    (edited / "manifest.json").write_text(json.dumps(m))
    assert "was edited" in refusal(edited)
    assert "is not a split" in refusal(tmp_path / "nowhere")
    assert "is not a split" in refusal(tmp_path)


DAMAGE = {
    "bad JSON": (lambda text, m: text[: len(text) // 2], "the manifest is damaged (Unterminated string"),
    "not an object": (lambda text, m: json.dumps([m]), "a JSON list, not an object"),
    "empty": (lambda text, m: "", "damaged"),
    "no config": (lambda text, m: json.dumps({k: v for k, v in m.items() if k != "config"}), "no 'config' entry"),
    "no source": (lambda text, m: json.dumps({k: v for k, v in m.items() if k != "source"}), "no 'source' entry"),
    "no files": (lambda text, m: json.dumps({k: v for k, v in m.items() if k != "files"}), "no 'files' entry"),
    "no counts": (lambda text, m: json.dumps({k: v for k, v in m.items() if k != "counts"}), "no 'counts' entry"),
    "no split_id": (lambda text, m: json.dumps({k: v for k, v in m.items() if k != "split_id"}), "'split_id'"),
    "source not an object": (lambda text, m: json.dumps({**m, "source": "ml-100k"}), "'source' entry is a JSON str"),
    "files unlisted": (lambda text, m: json.dumps({**m, "files": {}}), "does not list train.parquet, test.parquet"),
    "wrong format": (lambda text, m: json.dumps({**m, "format": "recsim-personas/personas"}), "format is"),
    "future version": (lambda text, m: json.dumps({**m, "format_version": 9}), "format_version 9"),
    "not UTF-8": (lambda text, m: b"\xff\xfe{}", "not UTF-8"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_manifest_is_a_clear_artifact_error(saved, damage):
    change, expected = DAMAGE[damage]
    broken = copy_of(saved, "broken")
    text = (broken / "manifest.json").read_text()
    new = change(text, json.loads(text))
    mf = broken / "manifest.json"
    mf.write_bytes(new) if isinstance(new, bytes) else mf.write_text(new)
    msg = refusal(broken)
    assert expected in msg
    assert str(broken) in msg


def test_a_foreign_protocol_config_in_the_manifest_is_an_artifact_error(saved):
    # a well-formed manifest (its split_id matches) whose config this version does not know
    from recsim_personas.data.split import split_id

    future = copy_of(saved, "future")
    m = json.loads((future / "manifest.json").read_text())
    m["config"]["holdout"] = "leave-one-out"
    m["split_id"] = split_id(m)
    (future / "manifest.json").write_text(json.dumps(m))
    assert "holdout" in refusal(future)


def test_load_split_takes_a_directory_or_a_split(saved):
    split = load_split(saved)
    assert isinstance(split, Split) and split.path == saved
    assert load_split(str(saved)).split_id == split.split_id
    assert load_split(split) is split
    with pytest.raises(ConfigError, match=r"split directory or a Split, got int: 3.*Fix:"):
        load_split(3)
    with pytest.raises(ArtifactError, match="is not a split"):
        load_split(saved / "nope")


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

    def identity() -> list[tuple[int, bytes]]:  # a rewrite (atomic: new files) changes the inodes
        return [(os.stat(out / n).st_ino, (out / n).read_bytes()) for n in ("manifest.json", "train.parquet")]

    before = identity()
    again, created = prepare_split(cfg, out, data_dir=tiny_dataset_dir, download=False)
    assert not created and again.split_id == first.split_id
    assert identity() == before
    other = ProtocolConfig(**{**SMALL, "seed": 5})
    with pytest.raises(ArtifactError, match="--overwrite"):
        prepare_split(other, out, data_dir=tiny_dataset_dir, download=False)
    assert identity() == before  # untouched
    replaced, created = prepare_split(other, out, data_dir=tiny_dataset_dir, download=False, overwrite=True)
    assert created and replaced.config.seed == 5
    assert Split.load(out).split_id == replaced.split_id != first.split_id
    # a directory that is not a split is never replaced, not even with overwrite
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a split"):
        prepare_split(cfg, precious, data_dir=tiny_dataset_dir, download=False, overwrite=True)
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
    assert (precious / "notes.txt").read_text() == "keep me"


KILLED_PREPARE = """
import sys
import recsim_personas.data.recbole_export as recbole_export
from recsim_personas.data import ProtocolConfig, prepare_split

def stall(split, out_dir, *args, **kwargs):  # the split is half written: its tables, no RecBole export
    print(out_dir.parent, flush=True)
    sys.stdin.read()  # until killed

recbole_export.export_recbole = stall
prepare_split(ProtocolConfig(n_users=10, min_ratings=10, max_ratings=30, seed=int(sys.argv[3])), sys.argv[1],
              data_dir=sys.argv[2], download=False, overwrite=True)
"""


def start_prepare(out: Path, data_dir: Path, seed: int) -> tuple[subprocess.Popen[str], Path]:
    """A `prepare_split` in a child process, stopped half-way; returns it and its temporary split directory."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_PREPARE), str(out), str(data_dir), str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    line = proc.stdout.readline().strip()  # blocks until the child is half-way
    assert line, f"prepare exited early with status {proc.wait()}"
    return proc, Path(line)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # SIGKILL: no cleanup handler runs
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


@pytest.mark.parametrize("existing", [False, True], ids=["first-run", "rerun-of-a-made-split"])
def test_a_killed_prepare_leaves_nothing_a_rerun_does_not_remove(tiny_dataset_dir, tmp_path, existing):
    out = tmp_path / "s"
    cfg = ProtocolConfig(**SMALL)
    if existing:
        made, _ = prepare_split(cfg, out, data_dir=tiny_dataset_dir, download=False)
    proc, tmp = start_prepare(out, tiny_dataset_dir, seed=7 if existing else 0)
    assert tmp.parent == tmp_path and (tmp / "train.parquet").is_file()
    stop(proc)
    assert tmp.exists()  # the killed run's leftover

    split, created = prepare_split(cfg, out, data_dir=tiny_dataset_dir, download=False)
    assert created is not existing
    assert not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "s"]
    assert Split.load(out).split_id == split.split_id
    if existing:
        assert split.split_id == made.split_id  # the finished split survived the killed overwrite attempt


def test_a_rerun_never_removes_a_running_prepares_work(tiny_dataset_dir, tmp_path):
    out = tmp_path / "s"
    proc, tmp = start_prepare(out, tiny_dataset_dir, seed=0)
    try:
        split, created = prepare_split(ProtocolConfig(**SMALL), out, data_dir=tiny_dataset_dir, download=False)
        assert created and Split.load(out).split_id == split.split_id
        assert (tmp / "train.parquet").is_file() and proc.poll() is None
    finally:
        stop(proc)


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
