from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recsim_personas.agents.rater import sample_ratings
from recsim_personas.envs.session import (
    SessionConfig,
    continue_probability,
    page_satisfaction,
    rate,
    return_propensity,
    reward,
    start_probability,
    update_satisfaction,
    watch_probability,
)
from recsim_personas.errors import ConfigError


def test_config_defaults_round_trip_through_json():
    cfg = SessionConfig()
    again = SessionConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert SessionConfig(max_pages=3).to_dict()["max_pages"] == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"start_min": -0.1}, "start_min must be in [0, 1], got -0.1"),
        ({"start_min": 0.6, "start_max": 0.5}, "start_min (0.6) must be <= start_max (0.5)"),
        ({"watch_slope": 0.0}, "watch_slope must be > 0, got 0.0"),
        ({"rating_mode": "sampled"}, "Did you mean 'sample'"),
        ({"max_pages": 0}, "max_pages must be an integer >= 1, got 0"),
        ({"max_pages": 2.5}, "max_pages must be an integer >= 1, got 2.5"),
        ({"churn_decay": 0.0}, "churn_decay must be in (0, 1], got 0.0"),
        ({"like_threshold": 6}, "like_threshold must be an integer in 1..5, got 6"),
        ({"satisfaction_memory": 1.0}, "satisfaction_memory must be in [0, 1), got 1.0"),
        ({"conformity_weight": math.nan}, "conformity_weight must be a finite number, got nan"),
        ({"fatigue": -1.0}, "fatigue must be >= 0 with fatigue_curve='linear', got -1.0"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(overrides, message):
    with pytest.raises(ConfigError) as err:
        SessionConfig(**overrides)
    assert message in str(err.value)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="max_page"):
        SessionConfig.from_dict({"max_page": 3})


def test_watch_probability_follows_expected_rating_conformity_and_diversity():
    cfg = SessionConfig(conformity_weight=0.5, novelty_bonus=0.25, taste_penalty=0.75)
    e = np.array([2.0, 3.0, 4.0, 5.0])
    p = watch_probability(e, np.full(4, 3.5), np.zeros(4, bool), np.zeros(4, bool), 0.0, 0.5, cfg)
    assert np.all(np.diff(p) > 0)
    assert p[2] == pytest.approx(0.5)  # E == watch_threshold (4.0), nobody conforms, in taste
    # a conformist user is pulled towards the historical average, an independent one is not
    low, high = np.array([2.0]), np.array([5.0])
    args = (np.zeros(1, bool), np.zeros(1, bool))
    conformist = [watch_probability(np.array([4.0]), h, *args, 1.0, 0.5, cfg)[0] for h in (low, high)]
    independent = [watch_probability(np.array([4.0]), h, *args, 0.0, 0.5, cfg)[0] for h in (low, high)]
    assert conformist[0] < independent[0] == independent[1] < conformist[1]
    # an off-taste item: less appealing to a narrow user, more to a diverse one
    base = watch_probability(np.array([4.0]), high, np.zeros(1, bool), np.zeros(1, bool), 0.0, 0.0, cfg)[0]
    narrow = watch_probability(np.array([4.0]), high, np.ones(1, bool), np.zeros(1, bool), 0.0, 0.0, cfg)[0]
    wide = watch_probability(np.array([4.0]), high, np.ones(1, bool), np.zeros(1, bool), 0.0, 1.0, cfg)[0]
    assert narrow < base < wide
    # seen items are never watched
    seen = watch_probability(
        np.array([5.0, 5.0]), np.full(2, 5.0), np.zeros(2, bool), np.array([True, False]), 0, 0, cfg
    )
    assert seen[0] == 0.0 and seen[1] > 0.9


def test_rating_modes():
    dist = np.array([[0.0, 0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    assert rate(dist, "expected", np.random.default_rng(0)).tolist() == [4, 2, 5]  # 4.0, 1.5 -> 2 (half to even)
    assert rate(dist, "mode", np.random.default_rng(0)).tolist() == [5, 1, 5]
    sampled = rate(dist, "sample", np.random.default_rng(3))
    assert sampled.tolist() == sample_ratings(dist, np.random.default_rng(3)).tolist()
    assert sampled[2] == 5 and sampled[1] in (1, 2)
    with pytest.raises(ConfigError, match="Did you mean 'mode'"):
        rate(dist, "mod", np.random.default_rng(0))


def test_page_satisfaction_and_continuing():
    cfg = SessionConfig(empty_page_satisfaction=-1.0)
    watched = np.array([[False, False], [True, True], [True, False]])
    ratings = np.array([[0, 0], [5, 5], [2, 0]])
    assert page_satisfaction(watched, ratings, cfg).tolist() == [-1.0, 1.0, -0.5]
    assert update_satisfaction(np.array([1.0]), np.array([-1.0]), SessionConfig(satisfaction_memory=0.25)) == [-0.5]
    pages = np.arange(1, 6)
    p = continue_probability(np.zeros(5), pages, np.full(5, 0.5), cfg)
    assert np.all(np.diff(p) < 0)  # fatigue
    s = continue_probability(np.array([-1.0, 0.0, 1.0]), np.ones(3), np.full(3, 0.5), cfg)
    assert np.all(np.diff(s) > 0)  # satisfaction
    a = continue_probability(np.zeros(3), np.ones(3), np.array([0.0, 0.5, 1.0]), cfg)
    assert np.all(np.diff(a) > 0)  # activity
    assert a[1] == pytest.approx(1 / (1 + math.exp(-cfg.continue_bias)))


def test_return_and_start_probability():
    cfg = SessionConfig(churn_patience=2, churn_decay=0.5, churn_floor=0.2, start_min=0.1, start_max=0.5)
    assert return_propensity(np.array([0, 1, 2, 3, 9]), cfg).tolist() == [1.0, 1.0, 0.5, 0.25, 0.2]
    p = start_probability(np.array([0.0, 1.0, 1.0]), np.array([1.0, 1.0, 0.5]), cfg)
    assert p.tolist() == pytest.approx([0.1, 0.5, 0.25])


def test_reward_modes():
    watched = np.array([[True, True, False], [False, False, False]])
    ratings = np.array([[5, 3, 0], [0, 0, 0]])
    assert reward(watched, ratings, "rating").tolist() == [8.0, 0.0]
    assert reward(watched, ratings, "likes").tolist() == [1.0, 0.0]
    assert reward(watched, ratings, "likes", like_threshold=3).tolist() == [2.0, 0.0]
    assert reward(watched, ratings, "watches").tolist() == [2.0, 0.0]
    with pytest.raises(ConfigError, match="Did you mean 'likes'"):
        reward(watched, ratings, "like")
