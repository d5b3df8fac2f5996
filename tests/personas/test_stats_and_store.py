from __future__ import annotations

import json

import pandas as pd
import pytest

from recsim_personas.data import ProtocolConfig, load_movielens, make_split
from recsim_personas.errors import ArtifactError, UnknownUserError
from recsim_personas.personas.distill import distill_personas
from recsim_personas.personas.stats_distiller import StatsDistiller, reason_for, tastes_of
from recsim_personas.personas.store import MAX_MS_WORDS, load_persona_set


@pytest.fixture
def split(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    return make_split(ml, ProtocolConfig(n_users=8, min_ratings=10, max_ratings=40)).save(tmp_path / "split")


def test_stats_distiller_covers_every_interaction_deterministically(split, tmp_path):
    a, created = distill_personas(split, tmp_path / "a", StatsDistiller())
    b, _ = distill_personas(split, tmp_path / "b", StatsDistiller())
    assert created
    assert sorted(a.personas) == split.user_ids.tolist()
    assert len(a.memories) == len(split.train)
    assert not a.memories.duplicated(["user_id", "item_id"]).any()
    assert a.personas == b.personas
    pd.testing.assert_frame_equal(a.memories, b.memories)
    for p in a.personas.values():
        assert all(getattr(p, s) for s in ("activity", "conformity", "diversity", "description"))
        assert p.words <= MAX_MS_WORDS
        assert p.ms_text().startswith("Activity: ")
    row = a.memories.iloc[0]
    assert row["reason"].startswith("I rated movie ") and f"as {row['rating']}" in row["reason"]


def test_reasons_are_grounded_in_the_movie_and_the_tastes(split):
    items = split.items
    train = split.train.merge(items, on="item_id")
    uid = train["user_id"].iloc[0]
    rated = train[train["user_id"] == uid]
    t = tastes_of(rated)
    r = rated.iloc[0]
    text = reason_for(r, t)
    assert text.startswith(f"I rated movie {r['title'].split(' (')[0]}")
    assert f"{r['hist_avg_rating']:.2f}" in text  # compared with the historical average
    assert any(g in text for g in r["genres"] if g != "unknown") or "kind I enjoy" in text


def test_rerun_is_a_no_op_and_other_split_is_refused(split, tmp_path, tiny_dataset_dir):
    out = tmp_path / "p"
    distill_personas(split, out, StatsDistiller())
    mtime = (out / "personas.jsonl").stat().st_mtime_ns
    _, created = distill_personas(split, out, StatsDistiller())
    assert not created and (out / "personas.jsonl").stat().st_mtime_ns == mtime
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    other = make_split(ml, ProtocolConfig(n_users=8, min_ratings=10, max_ratings=40, seed=9)).save(tmp_path / "other")
    with pytest.raises(ArtifactError, match="--overwrite"):
        distill_personas(other, out, StatsDistiller())
    with pytest.raises(ArtifactError, match="was made from another split"):
        load_persona_set(out, split_id=other.split_id)
    replaced, created = distill_personas(other, out, StatsDistiller(), overwrite=True)
    assert created and replaced.split_id == other.split_id
    with pytest.raises(UnknownUserError, match="has no persona"):
        replaced.persona(-1)


def test_tampered_or_unfinished_persona_sets_are_refused(split, tmp_path):
    out = tmp_path / "p"
    distill_personas(split, out, StatsDistiller())
    lines = (out / "personas.jsonl").read_text().splitlines()
    (out / "personas.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        load_persona_set(out)
    (out / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="not a finished persona set"):
        load_persona_set(out)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "x.txt").write_text("keep")
    with pytest.raises(ArtifactError, match="not a persona directory"):
        distill_personas(split, precious, StatsDistiller())


def test_cli_distill_stats(split, tmp_path, capsys):
    from recsim_personas.cli import main

    assert (
        main(
            ["personas", "distill", "--split", str(split.path), "--out", str(tmp_path / "p"), "--json", "--no-progress"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["personas"] == 8 and out["counts"]["memories"] == len(split.train)


@pytest.mark.movielens
def test_stats_distillation_of_the_ml100k_split(ml100k_personas):
    pset = ml100k_personas
    assert len(pset.personas) == 200
    assert len(pset.memories) == 17018
    assert max(p.words for p in pset.personas.values()) <= MAX_MS_WORDS
    toy = pset.memories[pset.memories["item_id"] == 1]
    assert toy["reason"].str.contains("Toy Story").all()
