from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from simkit import tiny_split_dir_fixture, tiny_world_fixture  # noqa: F401  (fixtures)

from recsim_personas.data import Split
from recsim_personas.envs import MovieLensEnv, MovieLensVectorEnv
from recsim_personas.errors import ConfigError
from recsim_personas.recommenders import Policy, PopularPolicy, RandomPolicy, make_policy


def _obs(seen: np.ndarray) -> dict[str, np.ndarray]:
    return {"seen": seen.astype(np.int8)}


def _random_seen(n: int, n_items: int, share: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, n_items)) < share


@pytest.mark.parametrize("share", [0.0, 0.5, 0.9, 0.97])
def test_random_policy_gives_distinct_unseen_items_deterministically(share):
    seen = _random_seen(64, 300, share, seed=1)
    slates = RandomPolicy(300, 8, seed=5).act_batch(_obs(seen))
    assert slates.shape == (64, 8) and slates.dtype == np.int64
    assert all(len(set(row.tolist())) == 8 for row in slates)
    shown_seen = seen[np.arange(64)[:, None], slates]
    unseen = (~seen).sum(axis=1)
    assert not shown_seen[unseen >= 8].any()
    assert (shown_seen.sum(axis=1) == np.maximum(0, 8 - unseen)).all()  # short rows: every unseen item + fill
    again = RandomPolicy(300, 8, seed=5).act_batch(_obs(seen))
    assert (slates == again).all()
    assert (slates != RandomPolicy(300, 8, seed=6).act_batch(_obs(seen))).any()


def test_random_policy_is_uniform_over_unseen_items():
    seen = np.zeros((1, 20), dtype=bool)
    seen[0, :10] = True
    policy = RandomPolicy(20, 3, seed=0)
    counts = np.bincount(np.concatenate([policy.act(_obs(seen[0])) for _ in range(3000)]), minlength=20)
    assert counts[:10].sum() == 0
    assert counts[10:].min() > 800 and counts[10:].max() < 1000  # 900 expected each


def test_policies_fill_up_with_seen_items_when_almost_everything_was_seen():
    seen = np.ones((2, 30), dtype=bool)
    seen[0, [3, 17]] = False
    seen[1, :] = False
    for policy in (RandomPolicy(30, 5, seed=0), PopularPolicy(np.arange(30.0), 5, seed=0)):
        slates = policy.act_batch(_obs(seen))
        assert set(slates[0].tolist()) >= {3, 17} and len(set(slates[0].tolist())) == 5
        assert len(set(slates[1].tolist())) == 5


def test_popular_policy_ranks_by_popularity_and_skips_seen():
    popularity = np.array([5, 50, 10, 50, 0, 30], dtype=float)
    policy = PopularPolicy(popularity, 3, seed=0)
    assert policy.order[:2].tolist() in ([1, 3], [3, 1]) and policy.order[2:].tolist() == [5, 2, 0, 4]
    seen = np.zeros((2, 6), dtype=bool)
    seen[1, [1, 5]] = True
    slates = policy.act_batch(_obs(seen))
    assert sorted(slates[0].tolist()) == [1, 3, 5] and slates[0][2] == 5
    assert slates[1].tolist() == [3, 2, 0]
    ties = {tuple(PopularPolicy(popularity, 2, seed=s).order[:2].tolist()) for s in range(10)}
    assert ties == {(1, 3), (3, 1)}  # the seed breaks ties


def test_popularity_from_history(tiny_split_dir, tiny_world):
    split = Split.load(tiny_split_dir)
    policy = PopularPolicy.from_history(split.history(), tiny_world.item_ids, 5)
    counts = split.history().item_id.value_counts()
    assert policy.popularity.tolist() == [counts.get(i, 0) for i in tiny_world.item_ids]
    assert (policy.popularity == tiny_world.item_popularity).all()
    df = pd.DataFrame({"item_id": [2, 2, 2, 9]})
    assert PopularPolicy.from_history(df, np.arange(1, 11), 2, seed=0).act(_obs(np.zeros(10))).tolist()[0] == 1


def _check_slate(mask: np.ndarray, slate: np.ndarray) -> None:
    """Only unseen items (mask 1), unless fewer than a slate's worth are left: then all of them, plus fill."""
    shown_unseen = int(mask[slate].sum())
    assert shown_unseen == min(len(slate), int(mask.sum())), (shown_unseen, int(mask.sum()))


def test_policies_in_the_environments_never_show_seen_items(tiny_world):
    policies = (RandomPolicy(tiny_world.n_items, 6, seed=0), PopularPolicy(tiny_world.item_popularity, 6, seed=0))
    for policy in policies:
        assert isinstance(policy, Policy)
        env = MovieLensEnv(world=tiny_world, slate_size=6)
        obs, info = env.reset(seed=0)
        for _ in range(30):
            slate = policy.act(obs)
            _check_slate(info["action_mask"], slate)
            obs, _, terminated, truncated, info = env.step(slate)
            if terminated or truncated:
                obs, info = env.reset()
        envs = MovieLensVectorEnv(5, world=tiny_world, slate_size=6)
        obs, info = envs.reset(seed=0)
        for _ in range(10):
            slates = policy.act_batch(obs)
            for mask, slate in zip(info["action_mask"], slates, strict=True):
                _check_slate(mask, slate)
            obs, _, _, _, info = envs.step(slates)


def test_make_policy():
    assert make_policy("random", n_items=10, slate_size=3, seed=0).name == "random"
    assert make_policy("pop", n_items=3, slate_size=2, popularity=np.ones(3)).name == "pop"
    with pytest.raises(ConfigError, match=r"unknown policy 'popular'\. Did you mean 'pop'"):
        make_policy("popular", n_items=10, slate_size=3)
    with pytest.raises(ConfigError, match="needs popularity"):
        make_policy("pop", n_items=10, slate_size=3)
    with pytest.raises(ConfigError, match=r"slate_size \(11\) cannot exceed n_items \(10\)"):
        RandomPolicy(10, 11)
    with pytest.raises(ConfigError, match=r"obs\['seen'\] must have shape \(N, 10\)"):
        RandomPolicy(10, 3).act_batch({"seen": np.zeros((2, 9))})
