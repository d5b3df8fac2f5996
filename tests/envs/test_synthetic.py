"""Synthetic populations: seeded, valid, distinct users; the rater answers for them; environments run on them;
the choice model's lazy fixed logits equal the dense ones; bad arguments are refused."""

from __future__ import annotations

import numpy as np
import pytest
from simkit import tiny_split_dir_fixture, tiny_world_fixture  # noqa: F401  (fixtures)

from recsim_personas.envs import MovieLensEnv, MovieLensVectorEnv, Population, UserTable, make_world
from recsim_personas.envs.synthetic import SyntheticConfig, TemplateRater, synthetic_world
from recsim_personas.errors import ConfigError
from recsim_personas.recommenders import RandomPolicy

N = 500


@pytest.fixture(scope="module")
def synth(tiny_world):
    return synthetic_world(tiny_world, N, seed=3)


@pytest.fixture(scope="module")
def fitted_world(tiny_split_dir):
    return make_world(tiny_split_dir)  # the fitted choice model


def test_same_seed_same_world_other_seed_other_world(tiny_world, synth):
    again = synthetic_world(tiny_world, N, seed=3)
    other = synthetic_world(tiny_world, N, seed=4)
    assert np.array_equal(again.user_ids, synth.user_ids)
    assert np.array_equal(again.trait_scores, synth.trait_scores)
    assert all(np.array_equal(a, b) for a, b in zip(again.history_items, synth.history_items, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(again.history_ratings, synth.history_ratings, strict=True))
    assert np.array_equal(again.rater.template_ids, synth.rater.template_ids)
    assert not np.array_equal(other.trait_scores, synth.trait_scores)


def test_users_are_valid(tiny_world, synth):
    assert synth.n_users == N and synth.n_items == tiny_world.n_items
    assert (np.diff(synth.user_ids) > 0).all() and synth.user_ids[0] > tiny_world.user_ids.max()
    for items, ratings, traits in zip(synth.history_items, synth.history_ratings, synth.traits, strict=True):
        assert items.size > 0 and items.shape == ratings.shape
        assert items.min() >= 0 and items.max() < synth.n_items
        assert np.unique(items).size == items.size, "no item twice in a history"
        assert ratings.min() >= 1 and ratings.max() <= 5
        assert traits.activity == items.size
    assert ((synth.trait_scores >= 0) & (synth.trait_scores <= 1)).all() and synth.trait_scores.shape == (N, 3)
    assert np.allclose(synth.user_genre_share.sum(axis=1), 1.0)
    bits = {g: 1 << k for k, g in enumerate(synth.genres)}
    assert all(
        sum(bits[g] for g in t.top_genres) == b for t, b in zip(synth.traits, synth.user_top_genres, strict=True)
    )
    templates = tiny_world.user_index(synth.rater.template_ids[0])
    assert synth.user_ref_day[0] == tiny_world.user_ref_day[templates]


def test_users_are_distinct_from_their_templates_and_each_other(tiny_world, synth):
    tmpl = np.searchsorted(tiny_world.user_ids, synth.rater.template_ids)
    assert np.unique(tmpl).size == tiny_world.n_users, "500 draws cover the 20 templates"
    differs = [
        not np.array_equal(h, tiny_world.history_items[t]) for h, t in zip(synth.history_items, tmpl, strict=True)
    ]
    assert np.mean(differs) > 0.75  # a 5-item history is kept whole with probability 0.8**5
    keys = {tuple(h.tolist()) for h in synth.history_items}
    assert len(keys) > 0.7 * N
    assert not np.allclose(synth.trait_scores, tiny_world.trait_scores[tmpl])
    assert np.abs(synth.trait_scores - tiny_world.trait_scores[tmpl]).max() < 0.5


def test_keep_one_and_no_jitter_copy_the_template(tiny_world):
    copy = synthetic_world(tiny_world, 30, seed=0, config=SyntheticConfig(keep=1.0, trait_jitter=0.0))
    tmpl = np.searchsorted(tiny_world.user_ids, copy.rater.template_ids)
    for h, r, t in zip(copy.history_items, copy.history_ratings, tmpl, strict=True):
        assert np.array_equal(h, tiny_world.history_items[t]) and np.array_equal(r, tiny_world.history_ratings[t])
    assert np.array_equal(copy.trait_scores, tiny_world.trait_scores[tmpl])
    assert np.array_equal(copy.user_top_genres, tiny_world.user_top_genres[tmpl])


def test_the_rater_answers_for_synthetic_ids_with_the_template(tiny_world, synth):
    assert isinstance(synth.rater, TemplateRater) and synth.rater_name == tiny_world.rater_name
    ids = synth.user_ids[:50]
    items = np.resize(tiny_world.item_ids, 50)
    got = synth.rater.predict(ids, items)
    want = tiny_world.rater.predict(synth.rater.template_ids[:50], items)
    assert got.shape == (50, 5) and np.allclose(got, want)
    real = tiny_world.user_ids[:3]  # other ids pass through
    assert np.allclose(synth.rater.predict(real, items[:3]), tiny_world.rater.predict(real, items[:3]))
    session = synth.rater.session()
    assert np.allclose(session.predict(ids, items), want)
    session.observe(ids[:2], items[:2], np.array([5, 4]))


def test_env_and_vector_env_run_on_a_synthetic_world(synth):
    env = MovieLensEnv(world=synth, slate_size=5)
    policy = RandomPolicy(synth.n_items, 5, seed=0)
    obs, info = env.reset(seed=0)
    assert info["user_id"] in set(synth.user_ids.tolist())
    for _ in range(15):
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        assert obs in env.observation_space
        if terminated or truncated:
            obs, info = env.reset()
    envs = MovieLensVectorEnv(16, world=synth, slate_size=5)
    obs, info = envs.reset(seed=1)
    for _ in range(10):
        obs, rewards, *_, info = envs.step(policy.act_batch(obs))
        assert obs in envs.observation_space and rewards.shape == (16,)
    assert envs.population.state.hist_len.sum() >= sum(len(h) for h in synth.history_items)


def test_a_day_of_a_synthetic_population_with_the_fitted_choice(fitted_world):
    synth = synthetic_world(fitted_world, 300, seed=0)
    assert synth.choice.name == "fitted" and synth.choice.n_users == 300
    pop = Population(synth, seed=0)
    summary = pop.run_days(1, RandomPolicy(synth.n_items, 5, seed=0), progress=False)
    assert pop.day == 1 and isinstance(summary, dict)
    assert pop.watches()["user_id"].size == 0 or set(pop.watches()["user_id"].tolist()) <= set(synth.user_ids.tolist())


def test_lazy_fixed_logits_equal_the_dense_ones(fitted_world):
    synth = synthetic_world(fitted_world, 200, seed=1)
    model = synth.choice.model
    dense, lazy = model.bind(synth, dense=True), model.bind(synth, dense=False)
    assert dense.fixed is not None and dense.fixed.dtype == np.float32 and lazy.fixed is None
    table = UserTable(synth)
    rng = np.random.default_rng(0)
    users = rng.integers(0, synth.n_users, 400)
    items = rng.integers(0, synth.n_items, 400)
    expected = rng.uniform(1, 5, 400)
    p_dense = dense.watch_probability(table, users, items, expected, None)
    p_lazy = lazy.watch_probability(table, users, items, expected, None)
    assert np.allclose(p_dense, p_lazy, atol=1e-6, rtol=0)
    assert ((p_lazy > 0) & (p_lazy < 1)).all()
    # the dense matrix (matrix algebra) equals the per-pair feature computation on every pair
    every_user = np.repeat(np.arange(synth.n_users), synth.n_items)
    every_item = np.tile(np.arange(synth.n_items), synth.n_users)
    per_pair = lazy.fixed_logits(every_user, every_item).reshape(synth.n_users, synth.n_items)
    np.testing.assert_allclose(dense.fixed, per_pair, atol=2e-5, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0}, "n_users must be an integer >= 1, got 0"),
        ({"n_users": 2.5}, "n_users must be an integer >= 1, got 2.5"),
        ({"n_users": True}, "n_users must be an integer >= 1, got True"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"config": {"keep": 0.5}}, "config must be a SyntheticConfig"),
        ({"config": SyntheticConfig(id_start=5)}, r"id_start \(5\) must exceed"),
    ],
)
def test_bad_arguments_name_the_field_and_value(tiny_world, kwargs, message):
    args = {"n_users": 10, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        synthetic_world(tiny_world, **args)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("keep", 0.0, r"keep must be a probability in \(0, 1\], got 0.0"),
        ("keep", 1.5, "keep must be a probability in .*, got 1.5"),
        ("neighbours", 0, "neighbours must be an integer >= 1, got 0"),
        ("trait_jitter", -0.1, "trait_jitter must be a finite number >= 0, got -0.1"),
        ("factor_dim", "8", "factor_dim must be an integer >= 1, got '8'"),
    ],
)
def test_config_names_the_bad_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        SyntheticConfig(**{field: value})


def test_the_env_refuses_unknown_ids_of_a_synthetic_world(synth):
    env = MovieLensEnv(world=synth, slate_size=5)
    env.reset(seed=0, options={"user_id": int(synth.user_ids[7])})
    with pytest.raises(Exception, match="not one of the 500 simulated users"):
        env.reset(options={"user_id": 1})


def _two_clusters(world):
    return {int(u): int(k % 3 == 0) for k, u in enumerate(world.user_ids)}  # cluster 1: every third user


def test_templates_drawn_per_persona_cluster(tiny_world):
    clusters = _two_clusters(tiny_world)
    n = 3000
    synth = synthetic_world(tiny_world, n, seed=5, clusters=clusters)
    of = np.array([clusters[int(t)] for t in synth.rater.template_of(synth.user_ids)])
    real_share = np.mean(list(clusters.values()))
    # the clusters' real shares by default: within 5 binomial standard deviations
    assert abs(of.mean() - real_share) < 5 * np.sqrt(real_share * (1 - real_share) / n)
    only = synthetic_world(tiny_world, 200, seed=5, clusters=clusters, cluster_weights={1: 1.0})
    templates = only.rater.template_of(only.user_ids)
    assert {clusters[int(t)] for t in templates} == {1}
    members = {u for u, c in clusters.items() if c == 1}
    assert len(set(templates.tolist())) > len(members) // 2  # spread over the cluster, not one user
    assert np.array_equal(
        templates,
        synthetic_world(tiny_world, 200, seed=5, clusters=clusters, cluster_weights={1: 1.0}).rater.template_of(
            only.user_ids
        ),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster_weights": {0: 1.0}}, "cluster_weights needs clusters"),
        ({"clusters": "missing-first"}, r"no \(non-negative\) cluster for 1 template users"),
        ({"clusters": "two", "cluster_weights": {7: 1.0}}, r"names clusters \[7\] that no template user is in"),
        ({"clusters": "two", "cluster_weights": {0: 0.0, 1: 0.0}}, "must be finite, >= 0 and not all 0"),
        ({"clusters": "two", "cluster_weights": {0: -1.0, 1: 2.0}}, "must be finite, >= 0 and not all 0"),
    ],
)
def test_bad_cluster_arguments_are_refused(tiny_world, kwargs, message):
    clusters = _two_clusters(tiny_world)
    if kwargs.get("clusters") == "missing-first":
        kwargs["clusters"] = {u: c for u, c in clusters.items() if u != int(tiny_world.user_ids[0])}
    elif kwargs.get("clusters") == "two":
        kwargs["clusters"] = clusters
    with pytest.raises(ConfigError, match=message):
        synthetic_world(tiny_world, 10, seed=0, **kwargs)
