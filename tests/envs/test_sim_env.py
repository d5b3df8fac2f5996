from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env, data_equivalence
from simkit import (  # noqa: F401  (fixtures)
    ALWAYS_EXIT,
    NEVER_EXIT,
    WATCH_ALL,
    BrokenRater,
    CountingRater,
    config,
    rollout,
    tiny_split_dir_fixture,
    tiny_world_fixture,
    with_rater,
)

import recsim_personas
from recsim_personas.data import Split
from recsim_personas.envs import MovieLensEnv, SlateSpace
from recsim_personas.errors import ConfigError, RaterOutputError, UnknownUserError

ENV_ID = "recsim_personas/MovieLens-v0"


@pytest.mark.parametrize("env_id", recsim_personas.ENV_IDS)
def test_check_env_on_every_registered_id(env_id, tiny_world):
    spec = gym.spec(env_id)
    assert isinstance(spec.entry_point, str) and isinstance(spec.vector_entry_point, str)
    env = gym.make(env_id, world=tiny_world)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version")
        check_env(env)


def test_make_loads_the_split_once(tiny_split_dir, monkeypatch):
    loads = []
    original = Split.load.__func__

    def counting_load(cls, path):
        loads.append(path)
        return original(cls, path)

    monkeypatch.setattr(Split, "load", classmethod(counting_load))
    env = gym.make(ENV_ID, split=str(tiny_split_dir), slate_size=5)
    for seed in (None, 1, None, 2):
        env.reset(seed=seed)
    env.step(env.action_space.sample())
    assert len(loads) == 1
    assert env.unwrapped.item_ids.tolist() == list(range(1, 61))
    assert env.unwrapped.world.rater_name == "bias"


def test_same_seed_same_trajectory_other_seed_differs(tiny_world):
    env = gym.make(ENV_ID, world=tiny_world, slate_size=5)
    first, again, other = rollout(env, 7, 40), rollout(env, 7, 40), rollout(env, 8, 40)
    assert data_equivalence(first, again, exact=True)
    assert not data_equivalence(first, other)
    fresh = gym.make(ENV_ID, world=tiny_world, slate_size=5)  # another instance, same seed: same rollout
    assert data_equivalence(first, rollout(fresh, 7, 40), exact=True)


def test_reset_chooses_the_user_with_options(tiny_world):
    env = MovieLensEnv(world=tiny_world, slate_size=5)
    uid = int(tiny_world.user_ids[3])
    obs, info = env.reset(seed=0, options={"user_id": uid})
    assert info["user_id"] == uid and int(obs["user_index"]) == 3
    assert obs in env.observation_space
    obs, info = env.reset(options={"user_id": np.int64(tiny_world.user_ids[5])})
    assert info["user_id"] == int(tiny_world.user_ids[5])
    obs, info = env.reset(options={"user_id": uid})  # the same user again, session restarts
    assert info["user_id"] == uid and env.population.users[3].session_pages == 0
    assert env.population.day_stats.abandoned >= 2


@pytest.mark.parametrize("bad", [9999, -1, "7x", 2.5, True])
def test_unknown_user_is_refused_with_valid_ids(tiny_world, bad):
    env = MovieLensEnv(world=tiny_world, slate_size=5)
    with pytest.raises(UnknownUserError) as err:
        env.reset(seed=0, options={"user_id": bad})
    message = str(err.value)
    assert repr(bad) in message and str(int(tiny_world.user_ids[0])) in message
    with pytest.raises(ConfigError, match=r"unknown reset option 'user'\. Did you mean 'user_id'"):
        env.reset(options={"user": 1})


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.array([0, 1, 2, 3]), r"action must have shape \(5,\), got an array of shape \(4,\)"),
        (np.array([[0, 1, 2, 3, 4]]), r"action must have shape \(5,\)"),
        (np.array([0.0, 1.0, 2.0, 3.0, 4.0]), "action must hold integer item indices, got dtype float64"),
        (np.array([0, 1, 2, 3, 60]), r"action\[4\] = 60 is not an item index in \[0, 60\)"),
        (np.array([-3, 1, 2, 3, 4]), r"action\[0\] = -3 is not an item index"),
        (np.array([0, 1, 2, 1, 4]), r"action shows item index 1 more than once \(positions \[1, 3\]\)"),
    ],
)
def test_invalid_actions_raise_naming_the_value(tiny_world, action, message):
    env = MovieLensEnv(world=tiny_world, slate_size=5)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)
    assert not env.action_space.contains(action)


def test_action_space_samples_distinct_items(tiny_world):
    space = SlateSpace(tiny_world.n_items, 10, seed=0)
    for _ in range(50):
        sample = space.sample()
        assert len(set(sample.tolist())) == 10 and sample in space
    assert not space.contains(np.array([1, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
    with pytest.raises(NotImplementedError, match="RandomPolicy"):
        space.sample(mask=np.ones(60, np.int8))


@pytest.mark.parametrize("kind", ["sum", "shape"])
def test_malformed_rater_output_raises(tiny_world, kind):
    env = MovieLensEnv(world=with_rater(tiny_world, BrokenRater(kind)), slate_size=5)
    _obs, info = env.reset(seed=0)
    slate = np.flatnonzero(info["action_mask"])[:5]
    with pytest.raises(RaterOutputError, match="rater 'broken' returned"):
        env.step(slate)


def test_reward_modes_match_the_info(tiny_world):
    results = {}
    for mode in ("rating", "likes", "watches"):
        env = MovieLensEnv(world=tiny_world, slate_size=10, reward=mode, session_config=config(**NEVER_EXIT))
        obs, info = env.reset(seed=5)
        rewards, infos = [], []
        for _ in range(4):
            slate = np.flatnonzero(obs["seen"] == 0)[:10]
            obs, reward, _terminated, _truncated, info = env.step(slate)
            rewards.append(reward)
            infos.append(info)
        results[mode] = (rewards, infos)
    _, infos = results["rating"]
    assert sum(i["watched"].sum() for i in infos) > 0
    for mode, (rewards, mode_infos) in results.items():
        for reward, info, ref in zip(rewards, mode_infos, infos, strict=True):
            assert data_equivalence(info, ref)  # the reward mode changes nothing but the reward
            if mode == "rating":
                assert reward == info["ratings"][info["watched"]].sum()
            elif mode == "likes":
                assert reward == (info["watched"] & (info["ratings"] >= 4)).sum()
            else:
                assert reward == info["watched"].sum()
    with pytest.raises(ConfigError, match=r"unknown reward 'like'\. Did you mean 'likes'"):
        MovieLensEnv(world=tiny_world, reward="like")


def test_truncated_at_the_page_limit_terminated_on_exit(tiny_world):
    env = MovieLensEnv(world=tiny_world, slate_size=5, session_config=config(max_pages=3, **NEVER_EXIT))
    env.reset(seed=0)
    for page in (1, 2, 3):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert info["page"] == page and not terminated
        assert truncated == (page == 3)
    assert info["exit_reason"] == "page_limit"
    with pytest.raises(ResetNeeded, match="session is over"):
        env.step(env.action_space.sample())
    env = MovieLensEnv(world=tiny_world, slate_size=5, session_config=config(max_pages=3, **ALWAYS_EXIT))
    env.reset(seed=0)
    _obs, _reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert terminated and not truncated and info["exit_reason"] == "exit" and info["page"] == 1
    with pytest.raises(ResetNeeded, match="call reset"):
        MovieLensEnv(world=tiny_world, slate_size=5).step(np.arange(5))


def test_a_watched_item_is_masked_afterwards_and_counted_once(tiny_world):
    rater = CountingRater(tiny_world.rater)
    env = MovieLensEnv(
        world=with_rater(tiny_world, rater), slate_size=4, session_config=config(**WATCH_ALL, **NEVER_EXIT)
    )
    obs, info = env.reset(seed=0)
    user = env.population.users[int(obs["user_index"])]
    n_before = len(user.history_items)
    slate = np.flatnonzero(info["action_mask"])[:4]
    assert (obs["seen"][slate] == 0).all()
    obs, reward, _, _, info = env.step(slate)
    assert info["watched"].all() and reward == info["ratings"].sum() > 0
    assert (info["action_mask"][slate] == 0).all() and (obs["seen"][slate] == 1).all()
    assert obs["history_items"][-4:].tolist() == slate.tolist()
    assert obs["history_ratings"][-4:].tolist() == info["ratings"].tolist()
    assert info["item_ids"].tolist() == tiny_world.item_ids[slate].tolist()
    obs, reward, _terminated, _truncated, info = env.step(slate)  # shown again: ignored
    assert not info["watched"].any() and reward == 0.0 and (info["ratings"] == 0).all()
    assert len(user.history_items) == n_before + 4 and rater.calls == [4]


def test_population_persists_across_episodes_until_a_seeded_reset(tiny_world):
    env = MovieLensEnv(world=tiny_world, slate_size=4, session_config=config(**WATCH_ALL, **ALWAYS_EXIT))
    _obs, info = env.reset(seed=0)
    population = env.population
    uid = info["user_id"]
    env.step(np.flatnonzero(info["action_mask"])[:4])
    user = population.user(uid)
    watched = len(user.history_items)
    env.reset()
    assert env.population is population and len(population.user(uid).history_items) == watched
    env.reset(seed=0)
    assert env.population is not population
    assert len(env.population.user(uid).history_items) == watched - 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slate_size": 0}, "slate_size must be a positive integer, got 0"),
        ({"slate_size": 61}, r"slate_size \(61\) cannot exceed the number of items \(60\)"),
        ({"history_len": True}, "history_len must be a positive integer, got True"),
        ({"render_mode": "human"}, "render_mode 'human' is not supported"),
        ({"session_config": {"max_pages": 3}}, "session_config must be a SessionConfig"),
    ],
)
def test_bad_arguments_are_refused(tiny_world, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MovieLensEnv(world=tiny_world, **kwargs)
    with pytest.raises(ConfigError, match="no split given"):
        gym.make(ENV_ID)


def test_on_the_real_ml100k_split(ml100k_split):
    env = gym.make(ENV_ID, split=ml100k_split)
    world = env.unwrapped.world
    assert world.n_users == 200 and world.n_items == 1682
    assert (env.unwrapped.item_ids == np.arange(1, 1683)).all()  # index j is item id j + 1 on ML-100K
    assert world.split_id == ml100k_split.split_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    envs = gym.make_vec(ENV_ID, num_envs=16, world=world)
    obs, _ = envs.reset(seed=0)
    obs, rewards, *_ = envs.step(envs.action_space.sample())
    assert obs in envs.observation_space and rewards.shape == (16,)


def _trace(env, policy, seed, steps, record):
    """Play ``steps`` pages of ``env`` with ``policy`` (resetting after each session) and append to ``record``."""
    obs, info = env.reset(seed=seed)
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
        record.append((info["user_id"], reward, info["expected_ratings"].round(12).tolist(), info["watched"].tolist()))
        if terminated or truncated:
            obs, info = env.reset()
        yield


@pytest.mark.parametrize("shared", [False, True])
def test_two_environments_on_one_world_keep_their_watches_apart(tiny_world, shared):
    from simkit import RememberingRater

    from recsim_personas.recommenders import RandomPolicy

    world = with_rater(tiny_world, RememberingRater(tiny_world.rater, shared=shared))
    cfg = config(**WATCH_ALL)

    def pair():
        make = lambda: MovieLensEnv(world=world, session_config=cfg, slate_size=5)  # noqa: E731
        return make(), make(), RandomPolicy(world.n_items, 5, seed=1), RandomPolicy(world.n_items, 5, seed=2)

    a, b, pa, pb = pair()
    inter_a, inter_b = [], []
    for _ in zip(_trace(a, pa, 10, 60, inter_a), _trace(b, pb, 20, 60, inter_b), strict=True):
        pass  # interleaved: a page of a, a page of b, ...
    a, b, pa, pb = pair()
    seq_a, seq_b = [], []
    for _ in _trace(a, pa, 10, 60, seq_a):
        pass
    for _ in _trace(b, pb, 20, 60, seq_b):
        pass  # one after the other
    assert sum(w for _, _, _, watched in seq_a for w in watched) > 10  # the rater really was told of watches
    if shared:  # the control: a rater that keeps one state for everyone leaks, and the comparison sees it
        assert (inter_a, inter_b) != (seq_a, seq_b)
    else:
        assert inter_a == seq_a and inter_b == seq_b
