"""Offline metrics: the definitions, the policy checks, and agreement with RecBole's own evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reckit import rec_split_dir_fixture, rec_world_fixture, trained_fixture  # noqa: F401  (fixtures)

from recsim_personas.data.protocol import Split
from recsim_personas.errors import ConfigError
from recsim_personas.recommenders import PopularPolicy, RandomPolicy
from recsim_personas.recommenders.offline import evaluate_offline, ranking_metrics
from recsim_personas.recommenders.recbole_policy import RecBoleConfig, recbole_evaluate, train_recbole


def test_ranking_metrics_by_hand():
    ranked = np.array([[3, 1, 0], [0, 1, 2], [2, 0, 1]])
    positives = np.zeros((3, 5), dtype=bool)
    positives[0, [1, 4]] = True  # hit at rank 2; 2 positives
    positives[1, [3]] = True  # no hit
    positives[2, [2, 0, 1, 4]] = True  # hits at ranks 1, 2, 3; 4 positives (IDCG over k = 3)
    m = ranking_metrics(ranked, positives)
    d = [1 / math.log2(r + 1) for r in (1, 2, 3)]
    np.testing.assert_allclose(m["recall"], [0.5, 0.0, 0.75])
    np.testing.assert_allclose(m["ndcg"], [d[1] / (d[0] + d[1]), 0.0, 1.0])
    np.testing.assert_allclose(m["mrr"], [0.5, 0.0, 1.0])
    with pytest.raises(ConfigError, match="at least one relevant item"):
        ranking_metrics(ranked, np.zeros((3, 5), dtype=bool))


def test_offline_metrics_of_random_and_pop(rec_world, rec_split_dir):
    split = Split.load(rec_split_dir)
    pop = PopularPolicy(rec_world.item_popularity, 10, seed=0)
    rnd = RandomPolicy(rec_world.n_items, 10, seed=0)
    m_pop = evaluate_offline(pop, rec_world, split.test, k=10)
    m_rnd = evaluate_offline(rnd, rec_world, split.test, k=10)
    assert m_pop.users == m_rnd.users == split.test.user_id.nunique()
    for m in (m_pop, m_rnd):
        assert 0 <= m.recall <= 1 and 0 <= m.ndcg <= 1 and 0 <= m.mrr <= 1
    with pytest.raises(ConfigError, match="need ≥ 10"):
        evaluate_offline(RandomPolicy(rec_world.n_items, 5, seed=0), rec_world, split.test, k=10)


class _Cheater:
    """Shows the user's own history items (seen) or an out-of-range index."""

    name, slate_size = "cheater", 5

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def act_batch(self, obs):
        seen = obs["seen"].astype(bool)
        if self.mode == "range":
            out = np.tile(np.arange(5), (len(seen), 1))
            out[:, 0] = seen.shape[1]
            return out
        return np.argsort(~seen, axis=1, kind="stable")[:, :5]  # seen items first


def test_a_policy_showing_seen_or_out_of_range_items_is_stopped(rec_world, rec_split_dir):
    split = Split.load(rec_split_dir)
    with pytest.raises(ConfigError, match=r"policy 'cheater' showed item index \d+ .* already seen"):
        evaluate_offline(_Cheater("seen"), rec_world, split.test, k=5)
    with pytest.raises(ConfigError, match=r"is not an item index in \[0, 60\)"):
        evaluate_offline(_Cheater("range"), rec_world, split.test, k=5)


def test_general_recbole_models_agree_with_recbole_s_evaluator_on_the_tiny_split(trained, rec_world, rec_split_dir):
    split = Split.load(rec_split_dir)
    for model in ("BPR", "LightGCN"):
        policy = trained[model]
        policy.slate_size = 10
        ours = evaluate_offline(policy, rec_world, split.test, k=10)
        theirs = recbole_evaluate(policy, split)
        for metric in ("recall", "ndcg", "mrr"):
            assert getattr(ours, metric) == pytest.approx(theirs[f"{metric}@10"], abs=5e-4), (model, metric)
        policy.slate_size = 5
    with pytest.raises(ConfigError, match="sequential"):
        recbole_evaluate(trained["SASRec"], split)


@pytest.mark.movielens
def test_offline_metrics_agree_with_recbole_on_the_ml100k_split_to_3_decimals(ml100k_split):
    from recsim_personas.envs import make_world

    world = make_world(ml100k_split)
    policy = train_recbole(ml100k_split, RecBoleConfig(model="BPR", epochs=2, learning_rate=5e-3), progress=False)
    ours = evaluate_offline(policy, world, ml100k_split.test, k=10)
    theirs = recbole_evaluate(policy, ml100k_split)
    assert ours.users == 200
    for metric in ("recall", "ndcg", "mrr"):
        # RecBole reports 6 decimals; agreement to 3 decimals is required, we get far closer
        assert getattr(ours, metric) == pytest.approx(theirs[f"{metric}@10"], abs=1e-5), metric
    assert ours.ndcg > 0.05  # better than random (≈ 0.04) after two epochs


class _Untouchable:
    """A rater that fails the test if anything asks it for a rating or a simulation session."""

    name = "untouchable"

    def predict(self, users, items):
        raise AssertionError("the offline evaluation asked the rater for ratings")

    def session(self):
        raise AssertionError("the offline evaluation opened a rater session")


def test_offline_evaluation_reads_the_world_and_never_touches_the_rater(rec_world, rec_split_dir):
    import dataclasses

    from recsim_personas.envs import Population
    from recsim_personas.recommenders.offline import initial_observation

    split = Split.load(rec_split_dir)
    users = np.arange(rec_world.n_users)
    for history_len in (1, 10, 50):  # shorter and longer than the histories (5..40 ratings)
        ours = initial_observation(rec_world, users, history_len)
        fresh = Population(rec_world, seed=0).observe(users, history_len)
        assert ours.keys() == fresh.keys()
        for key in ours:
            assert ours[key].dtype == fresh[key].dtype and np.array_equal(ours[key], fresh[key]), (history_len, key)
    untouchable = dataclasses.replace(rec_world, rater=_Untouchable())
    pop = PopularPolicy(rec_world.item_popularity, 10, seed=0)
    assert evaluate_offline(pop, untouchable, split.test, k=10) == evaluate_offline(pop, rec_world, split.test, k=10)
