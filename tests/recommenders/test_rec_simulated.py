"""Simulated metrics over seeds with the population machinery, and their confidence intervals."""

from __future__ import annotations

import numpy as np
import pytest
from reckit import rec_split_dir_fixture, rec_world_fixture, trained_fixture  # noqa: F401  (fixtures)
from scipy import stats

from recsim_personas.envs import Population
from recsim_personas.errors import ConfigError
from recsim_personas.recommenders import PopularPolicy, RandomPolicy
from recsim_personas.recommenders.simulated import SIM_METRICS, evaluate_policy, interval

ENV = "recsim_personas/MovieLens-v1"


def test_interval_is_a_student_t_interval():
    values = [1.0, 2.0, 4.0]
    iv = interval(values, 0.9)
    half = stats.t.ppf(0.95, 2) * np.std(values, ddof=1) / np.sqrt(3)
    assert iv.mean == pytest.approx(7 / 3)
    assert (iv.low, iv.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert interval([0.5]).low == interval([0.5]).high == 0.5
    assert interval([0.9, 1.0, 1.0], bounds=(0.0, 1.0)).high == 1.0  # a share's interval stays in [0, 1]


def test_evaluate_policy_reports_every_metric_over_the_seeds(rec_world):
    policy = PopularPolicy(rec_world.item_popularity, 5, seed=0)
    res = evaluate_policy(ENV, policy, [0, 1, 2], days=4, world=rec_world, progress=False)
    assert res.policy == "pop" and res.seeds == (0, 1, 2) and res.users == rec_world.n_users
    assert set(res.metrics) == set(SIM_METRICS)
    for name, iv in res.metrics.items():
        assert len(iv.per_seed) == 3 and iv.low <= iv.mean <= iv.high, name
    for t, watched, like_rate in zip(res.totals, res.watched, res.metrics["like_rate"].per_seed, strict=True):
        # the watched triples are exactly what the DataCollector counted
        assert len(watched["item_id"]) == t["items_watched"]
        assert (watched["rating"] >= 4).sum() == t["likes"]
        assert like_rate == pytest.approx(t["likes"] / t["items_watched"])
    # the same runs by hand with the population machinery, counting the shown items ourselves
    t0 = res.totals[0]
    pop_seq, _ = np.random.SeedSequence(0).spawn(2)
    population = Population(rec_world, rng=np.random.default_rng(pop_seq))
    shown = np.zeros(rec_world.n_items, dtype=np.int64)
    by_hand_policy = PopularPolicy(rec_world.item_popularity, 5, seed=0)

    class Counting:
        slate_size = 5

        def act_batch(self, obs):
            slates = by_hand_policy.act_batch(obs)
            np.add.at(shown, slates.ravel(), 1)
            return slates

    by_hand = population.run_days(4, Counting(), history_len=20, progress=False)
    assert by_hand["totals"] == t0
    assert res.metrics["coverage"].per_seed[0] == pytest.approx((shown > 0).mean())
    assert res.metrics["shown_popularity"].per_seed[0] == pytest.approx(shown @ rec_world.item_popularity / shown.sum())
    again = evaluate_policy(ENV, policy, [0, 1, 2], days=4, world=rec_world, progress=False)
    assert again.totals == res.totals  # seeded
    # random slates cover more of the catalogue, with less popular movies, than the most popular ones
    rnd = evaluate_policy(ENV, RandomPolicy(rec_world.n_items, 5), [0, 1, 2], days=4, world=rec_world, progress=False)
    assert rnd.metrics["coverage"].mean > res.metrics["coverage"].mean
    assert rnd.metrics["shown_popularity"].mean < res.metrics["shown_popularity"].mean


def test_policies_differ_in_simulation(rec_world, trained):
    rnd = evaluate_policy(ENV, RandomPolicy(rec_world.n_items, 5), [0, 1], days=3, world=rec_world, progress=False)
    seq = evaluate_policy(ENV, trained["SASRec"], [0, 1], days=3, world=rec_world, progress=False)
    assert rnd.totals != seq.totals
    assert seq.policy == "recbole:SASRec"


def test_bad_inputs_are_refused(rec_world):
    policy = RandomPolicy(rec_world.n_items, 5, seed=0)
    with pytest.raises(ConfigError, match=r"unknown environment id 'recsim_personas/MovieLens-v9'.*MovieLens-v1"):
        evaluate_policy("recsim_personas/MovieLens-v9", policy, [0], days=1, world=rec_world)
    with pytest.raises(ConfigError, match="seeds must be a non-empty list"):
        evaluate_policy(ENV, policy, [], days=1, world=rec_world)
    with pytest.raises(ConfigError, match="days must be a positive integer"):
        evaluate_policy(ENV, policy, [0], days=0, world=rec_world)

    class SeenFirst:
        name, slate_size = "seen-first", 5

        def act_batch(self, obs):
            return np.argsort(~obs["seen"].astype(bool), axis=1, kind="stable")[:, :5]

    with pytest.raises(ConfigError, match="policy 'seen-first' showed item index"):
        evaluate_policy(ENV, SeenFirst(), [0], days=2, world=rec_world, progress=False)


def test_evaluate_policy_builds_the_world_from_a_split_directory(rec_split_dir):
    from recsim_personas.data.protocol import Split

    policy = PopularPolicy.from_history(Split.load(rec_split_dir).history(), np.arange(1, 61), 5)
    res = evaluate_policy(ENV, policy, [0], days=2, split=str(rec_split_dir), rater="bias", progress=False)
    assert res.users == 20 and res.totals[0]["days"] == 2


@pytest.mark.parametrize("model", ["BPR", "SASRec"])
def test_recbole_policies_drive_the_vector_env_in_batches(trained, rec_world, model):
    import gymnasium as gym

    policy = trained[model]
    envs = gym.make_vec(ENV, num_envs=4, world=rec_world, slate_size=5, history_len=10)
    obs, _ = envs.reset(seed=0)
    for _ in range(6):
        actions = policy.act_batch(obs)
        assert actions.shape == (4, 5)
        assert not obs["seen"][np.arange(4)[:, None], actions].any()
        obs, *_ = envs.step(actions)
    envs.close()
