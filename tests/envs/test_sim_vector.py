from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode
from simkit import (  # noqa: F401  (fixtures)
    ALWAYS_EXIT,
    NEVER_EXIT,
    WATCH_ALL,
    CountingRater,
    config,
    tiny_split_dir_fixture,
    tiny_world_fixture,
    with_rater,
)

from recsim_personas.envs import MovieLensVectorEnv
from recsim_personas.errors import ConfigError
from recsim_personas.recommenders import RandomPolicy

ENV_ID = "recsim_personas/MovieLens-v0"


def test_make_vec_uses_the_vector_entry_point_and_its_spaces(tiny_world):
    envs = gym.make_vec(ENV_ID, num_envs=4, world=tiny_world, slate_size=5, history_len=7)
    assert isinstance(envs, MovieLensVectorEnv) and envs.num_envs == 4
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, info = envs.reset(seed=0)
    assert obs in envs.observation_space
    assert obs["history_items"].shape == (4, 7) and obs["seen"].shape == (4, 60) and obs["traits"].shape == (4, 3)
    assert info["user_id"].shape == (4,) and len(set(info["user_id"].tolist())) == 4
    actions = envs.action_space.sample()
    assert actions.shape == (4, 5) and actions in envs.action_space
    assert all(len(set(row.tolist())) == 5 for row in actions)
    obs, rewards, terminated, truncated, info = envs.step(actions)
    assert obs in envs.observation_space
    assert rewards.shape == (4,) and rewards.dtype == np.float64
    assert terminated.dtype == bool and truncated.shape == (4,)
    assert info["watched"].shape == (4, 5) and info["_watched"].all()
    assert info["action_mask"].shape == (4, 60) and (info["action_mask"] == 1 - obs["seen"]).all()
    assert (rewards == np.where(info["watched"], info["ratings"], 0).sum(axis=1)).all()


def test_each_step_makes_one_batched_rater_call(tiny_world):
    rater = CountingRater(tiny_world.rater)
    envs = MovieLensVectorEnv(6, world=with_rater(tiny_world, rater), slate_size=5)
    policy = RandomPolicy(tiny_world.n_items, 5, seed=0)
    obs, _ = envs.reset(seed=1)
    assert rater.calls == []
    resetting = np.zeros(6, dtype=bool)
    for step in range(1, 16):
        actions = policy.act_batch(obs)
        unseen = (obs["seen"][np.arange(6)[:, None], actions] == 0) & ~resetting[:, None]
        obs, _, terminated, truncated, info = envs.step(actions)
        assert len(rater.calls) == step, "one predict call per step"
        assert rater.calls[-1] == unseen.sum(), "every running slot's unseen (user, item) pairs in it"
        assert (info["_watched"] == ~resetting).all()
        resetting = terminated | truncated


def test_autoreset_next_step(tiny_world):
    rater = CountingRater(tiny_world.rater)
    cfg = config(max_pages=2, **NEVER_EXIT)
    envs = MovieLensVectorEnv(3, world=with_rater(tiny_world, rater), slate_size=4, session_config=cfg)
    obs, info = envs.reset(seed=0)
    first_users = info["user_id"].copy()
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert not (terminated | truncated).any() and (info["page"] == 1).all()
    _, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert truncated.all() and not terminated.any() and (info["exit_reason"] == "page_limit").all()
    assert (info["user_id"] == first_users).all()  # the final observation still belongs to the old session
    calls = len(rater.calls)
    junk = np.full((3, 4), -1)  # ignored: every slot restarts this step
    obs, rewards, terminated, truncated, info = envs.step(junk)
    assert len(rater.calls) == calls, "no page is played while slots restart"
    assert (rewards == 0).all() and not (terminated | truncated).any()
    assert not info["_watched"].any() and not info["_page"].any() and info["_user_id"].all()
    assert len(set(info["user_id"].tolist())) == 3
    pop = envs.population
    assert all(pop.user(uid).in_session and pop.user(uid).session_pages == 0 for uid in info["user_id"])
    assert obs["user_index"].tolist() == [pop.world.user_index(u) for u in info["user_id"]]
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert (info["page"] == 1).all() and info["_page"].all()


def test_autoreset_of_some_slots_only(tiny_world):
    cfg = config(**ALWAYS_EXIT)  # every session ends after one page
    envs = MovieLensVectorEnv(4, world=tiny_world, slate_size=4, session_config=cfg)
    envs.reset(seed=0)
    _, _, terminated, _, _ = envs.step(envs.action_space.sample())
    assert terminated.all()
    envs._autoreset[:2] = False  # pretend slots 0 and 1 still run (their users are idle, so restart them)
    for slot in (0, 1):
        envs.population.start_session(int(envs._slot_user[slot]))
    actions = envs.action_space.sample()
    actions[2:] = 0  # duplicates in restarting rows are ignored
    _, rewards, terminated, _, info = envs.step(actions)
    assert info["_watched"].tolist() == [True, True, False, False]
    assert terminated.tolist() == [True, True, False, False] and (rewards[2:] == 0).all()


def test_slots_never_share_a_user(tiny_world):
    envs = MovieLensVectorEnv(15, world=tiny_world, slate_size=5, session_config=config(max_pages=2))
    policy = RandomPolicy(tiny_world.n_items, 5, seed=0)
    obs, info = envs.reset(seed=0)
    for _ in range(40):
        obs, _, terminated, truncated, info = envs.step(policy.act_batch(obs))
        live = info["user_id"][~(terminated | truncated)]
        assert len(set(live.tolist())) == live.size, "a user is in at most one running session"
        assert all(envs.population.user(uid).in_session for uid in live)
        # (a slot that just ended still shows its user's final observation; that user may already have come
        # back in another slot if a day passed while that slot waited for its next session)


def _vector_rollout(envs, seed):
    policy = RandomPolicy(envs.world.n_items, envs.slate_size, seed=0)
    obs, info = envs.reset(seed=seed)
    out = [(obs, info)]
    for _ in range(25):
        out.append(envs.step(policy.act_batch(obs)))
        obs = out[-1][0]
    return out


def test_vector_determinism(tiny_world):
    envs = MovieLensVectorEnv(4, world=tiny_world, slate_size=5)
    first = _vector_rollout(envs, 3)
    assert data_equivalence(first, _vector_rollout(envs, 3), exact=True)
    assert data_equivalence(first, _vector_rollout(MovieLensVectorEnv(4, world=tiny_world, slate_size=5), 3))
    assert not data_equivalence(first, _vector_rollout(envs, 4))


def test_reset_options_choose_the_users(tiny_world):
    envs = MovieLensVectorEnv(2, world=tiny_world, slate_size=5)
    ids = [int(tiny_world.user_ids[4]), int(tiny_world.user_ids[1])]
    obs, info = envs.reset(seed=0, options={"user_ids": ids})
    assert info["user_id"].tolist() == ids and obs["user_index"].tolist() == [4, 1]
    with pytest.raises(ConfigError, match="must hold 2 distinct user ids"):
        envs.reset(options={"user_ids": [ids[0], ids[0]]})
    with pytest.raises(ConfigError, match="Did you mean 'user_ids'"):
        envs.reset(options={"user_id": ids[0]})


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (np.zeros((3, 5), dtype=np.int64), r"actions must have shape \(2, 5\), got an array of shape \(3, 5\)"),
        (np.array([[0, 1, 2, 3, 4], [5, 6, 5, 8, 9]]), r"actions\[1\] shows item index 5 more than once"),
        (np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 99]]), r"actions\[1, 4\] = 99 is not an item index"),
        (np.zeros((2, 5)), "actions must hold integer item indices, got dtype float64"),
    ],
)
def test_vector_invalid_actions(tiny_world, actions, message):
    envs = MovieLensVectorEnv(2, world=tiny_world, slate_size=5)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        envs.step(actions)


def test_more_slots_than_users_is_refused(tiny_world):
    with pytest.raises(ConfigError, match=r"num_envs \(21\) exceeds the number of simulated users \(20\)"):
        MovieLensVectorEnv(21, world=tiny_world)
    with pytest.raises(ConfigError, match="num_envs must be a positive integer"):
        MovieLensVectorEnv(0, world=tiny_world)
