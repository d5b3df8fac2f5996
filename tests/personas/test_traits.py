from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsim_personas.personas.traits import COVERAGE, TRAIT_SENTENCES, compute_traits, genre_share, top_genres


def _shares(rows):
    return pd.DataFrame(
        rows, columns=["Action", "Comedy", "Drama", "Horror"], index=pd.Index([1, 2, 3, 4, 5][: len(rows)])
    )


def test_top_genres_cover_80_percent_largest_first_ties_in_column_order():
    top = top_genres(
        _shares(
            [
                [0.0, 0.0, 1.0, 0.0],  # one genre
                [0.2, 0.5, 0.3, 0.0],  # 0.5 + 0.3 reaches 0.8
                [0.25, 0.25, 0.25, 0.25],  # ties: the column order
                [0.1, 0.7, 0.2, 0.0],
                [0.4, 0.0, 0.4, 0.2],  # tie at the top; 0.4 + 0.4 = 0.8 within the rounding tolerance
            ]
        )
    )
    assert top.to_dict() == {
        1: ("Drama",),
        2: ("Comedy", "Drama"),
        3: ("Action", "Comedy", "Drama", "Horror"),
        4: ("Comedy", "Drama"),
        5: ("Action", "Drama"),
    }
    assert top_genres(_shares([[0.5, 0.3, 0.2, 0.0]]), coverage=0.5).iloc[0] == ("Action",)


def _items():
    return pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "genres": [["Drama"], ["Comedy", "Drama"], ["Horror"], ["unknown"]],
            "hist_avg_rating": [4.0, 3.0, 2.0, np.nan],
        }
    )


def test_genre_share_splits_multi_genre_items():
    train = pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "rating": [4, 4]})
    share = genre_share(train, _items()).loc[1]
    assert share["Drama"] == pytest.approx(0.75) and share["Comedy"] == pytest.approx(0.25)


def test_traits_levels_and_scores():
    # user 1: many ratings, all equal to the crowd, few genres; user 3: few, contrarian, varied
    user1 = [(1, 1, 4), (1, 2, 3)] * 3
    user2 = [(2, 1, 3), (2, 2, 4), (2, 3, 2), (2, 1, 4)]
    user3 = [(3, 3, 5), (3, 2, 1), (3, 4, 5)]
    train = pd.DataFrame([*user1, *user2, *user3], columns=["user_id", "item_id", "rating"])
    frame, cut = compute_traits(train, _items())
    f = frame.set_index("user_id")
    assert f.loc[1, "activity"] == 6 and f.loc[3, "activity"] == 3
    assert f.loc[1, "conformity"] == pytest.approx(0.0)
    assert f.loc[1, "activity_level"] == "high" and f.loc[3, "activity_level"] == "low"
    assert f.loc[1, "conformity_level"] == "high" and f.loc[3, "conformity_level"] == "low"
    assert f.loc[1, "conformity_score"] > f.loc[3, "conformity_score"]
    assert f.loc[3, "diversity"] >= f.loc[1, "diversity"]
    for t in ("activity", "conformity", "diversity"):
        assert f[f"{t}_score"].between(0, 1).all()
        assert set(f[f"{t}_level"]) <= set(TRAIT_SENTENCES[t])
    assert cut.activity[0] <= cut.activity[1]


@pytest.mark.movielens
def test_top_genres_on_ml100k_match_the_world_cover_and_give_the_diversity(ml100k_split):
    shares = genre_share(ml100k_split.train, ml100k_split.items)
    top = top_genres(shares)
    for uid in shares.index:  # the cover envs/factory.py make_world computed inline before this function existed
        share = shares.loc[uid].sort_values(ascending=False, kind="mergesort")
        n_top = int(np.searchsorted(np.cumsum(share.to_numpy()), COVERAGE - 1e-12) + 1)
        assert top[uid] == tuple(str(g) for g in share.index[:n_top] if share[g] > 0)
    frame, _ = compute_traits(ml100k_split.train, ml100k_split.items)
    assert frame.set_index("user_id")["diversity"].to_dict() == top.map(len).to_dict()
    assert frame["diversity"].value_counts().sort_index().to_dict() == {3: 2, 4: 5, 5: 13, 6: 47, 7: 67, 8: 46, 9: 20}


@pytest.mark.movielens
def test_traits_on_ml100k_split_give_balanced_levels(ml100k_split):
    frame, _ = compute_traits(ml100k_split.train, ml100k_split.items)
    assert len(frame) == 200
    for t in ("activity", "conformity", "diversity"):
        counts = frame[f"{t}_level"].value_counts()
        assert set(counts.index) == {"low", "medium", "high"}
        assert counts.min() >= 40  # tertiles: roughly a third each (ties can shift a few)
