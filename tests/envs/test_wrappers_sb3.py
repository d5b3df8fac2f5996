"""The action wrappers: hand-made mappings with known answers, the checkers, and SB3 / sb3-contrib training runs."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.utils.env_checker import data_equivalence
from simkit import NEVER_EXIT, WATCH_ALL, config, tiny_split_dir_fixture, tiny_world_fixture  # noqa: F401

import recsim_personas
from recsim_personas.envs import (
    DedupSlateVectorWrapper,
    DedupSlateWrapper,
    ScoreSlateVectorWrapper,
    ScoreSlateWrapper,
    SequentialSlateWrapper,
)
from recsim_personas.envs.wrappers import allowed_items, dedup_slates, score_slates
from recsim_personas.errors import ConfigError, InvalidActionError

torch = pytest.importorskip("torch")
sb3 = pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")
from sb3_contrib import MaskablePPO  # noqa: E402
from stable_baselines3 import A2C, PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env as sb3_check_env  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

ENV_ID = recsim_personas.ENV_IDS[0]
K = 5
STEPS = 2000
# popularity 5, 9, 9, 1, 0, 7, 3, 9 → by popularity, ties by index: 1, 2, 7, 5, 0, 6, 3, 4
POPULARITY_ORDER = np.array([1, 2, 7, 5, 0, 6, 3, 4])


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The SB3 runs are tiny; one thread avoids oversubscribing the shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env(world, **kwargs) -> gym.Env:
    return gym.make(ENV_ID, world=world, slate_size=K, **kwargs)


WRAPPERS = {
    "score": lambda env: ScoreSlateWrapper(env),
    "preference": lambda env: ScoreSlateWrapper(env, embedding_dim=4),
    "dedup": lambda env: DedupSlateWrapper(env),
    "sequential": lambda env: SequentialSlateWrapper(env),
}


class CountSteps(gym.Wrapper):
    """Counts the steps of the environment it wraps."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        return self.env.step(action)


# --------------------------------------------------------------------------------- the mappings
def test_score_slates_top_k_unseen_with_ties_and_short_rows():
    scores = np.array([[0.1, 0.5, 0.5, -1.0, 0.9]] * 2)
    unseen = np.array([[True, True, True, True, False], [False, False, False, True, False]])
    slates = score_slates(scores, unseen, 3)
    assert slates.dtype == np.int64
    # row 0: item 4 is seen; the tie 1/2 goes to the lower index
    assert slates[0].tolist() == [1, 2, 0]
    # row 1: the one unseen item first, then the best-scored seen ones
    assert slates[1].tolist() == [3, 4, 1]


def test_dedup_slates_replace_repeats_and_seen_items_from_popularity():
    unseen = np.ones((1, 8), dtype=bool)
    unseen[0, [1, 4]] = False
    slates, replaced = dedup_slates(np.array([[3, 3, 4, 2, 0]]), unseen, "popularity", POPULARITY_ORDER)
    # slot 1 repeats 3, slot 2 shows seen item 4; the most popular unseen unused items are 7, then 5
    assert slates.tolist() == [[3, 7, 5, 2, 0]]
    assert replaced.tolist() == [[False, True, True, False, False]]


def test_dedup_slates_index_fallback_takes_the_next_index_cyclically():
    unseen = np.ones((2, 8), dtype=bool)
    unseen[:, [1, 4]] = False
    slates, replaced = dedup_slates(np.array([[3, 3, 4, 2, 0], [7, 7, 6, 5, 2]]), unseen, "index", POPULARITY_ORDER)
    assert slates[0].tolist() == [3, 5, 6, 2, 0]  # after 3: 4 is seen → 5; after 4: 5 is used → 6
    assert slates[1].tolist() == [7, 0, 6, 5, 2]  # after 7, cyclically: 0
    assert replaced.sum(axis=1).tolist() == [2, 1]


def test_dedup_slates_fill_short_rows_with_seen_items_and_keep_valid_slates():
    unseen = np.zeros((1, 8), dtype=bool)
    unseen[0, 2] = True
    slates, _ = dedup_slates(np.array([[2, 2, 2]]), unseen, "popularity", POPULARITY_ORDER)
    assert slates.tolist() == [[2, 1, 7]]
    rng = np.random.default_rng(0)
    unseen = rng.random((200, 30)) < rng.random((200, 1))
    actions = rng.integers(0, 30, size=(200, 6))
    for fallback in ("popularity", "index"):
        slates, replaced = dedup_slates(actions, unseen, fallback, rng.permutation(30))
        assert all(len(set(row.tolist())) == 6 for row in slates)
        shown_seen = ~np.take_along_axis(unseen, slates, axis=1)
        n_unseen = unseen.sum(axis=1)
        assert not shown_seen[n_unseen >= 6].any()
        assert (shown_seen.sum(axis=1) == np.maximum(0, 6 - n_unseen)).all()
        keepable = np.take_along_axis(unseen, actions, axis=1)
        first = np.array([[row.tolist().index(v) == s for s, v in enumerate(row)] for row in actions])
        assert (slates[keepable & first] == actions[keepable & first]).all()  # kept slots are untouched
        assert (replaced == (slates != actions)).all()


def test_allowed_items_is_never_all_false():
    unseen = np.array([[True, False, False, False]])
    used = np.array([[True, False, True, False]])
    assert allowed_items(unseen, used).tolist() == [[False, True, False, True]]
    used = np.array([[False, True, False, False]])
    assert allowed_items(unseen, used).tolist() == [[True, False, False, False]]


# --------------------------------------------------------------------------------- the single wrappers
def test_score_wrapper_shows_the_best_scored_unseen_items(tiny_world):
    env = ScoreSlateWrapper(_env(tiny_world))
    assert env.action_space == gym.spaces.Box(-1, 1, (tiny_world.n_items,), np.float32)
    _, info = env.reset(seed=0)
    unseen = info["action_mask"].astype(bool)
    assert (~unseen).sum() >= 2  # the user has seen items, so the test can see them skipped
    action = np.linspace(1, -1, tiny_world.n_items, dtype=np.float32)  # lower index = better
    _, _, _, _, info = env.step(action)
    assert info["slate"].tolist() == np.flatnonzero(unseen)[:K].tolist()
    assert info["item_ids"].tolist() == tiny_world.item_ids[info["slate"]].tolist()
    seen_now = ~info["action_mask"].astype(bool)
    best_seen = np.flatnonzero(seen_now)[:K]
    action = np.full(tiny_world.n_items, -1.0, dtype=np.float32)
    action[best_seen] = 1.0  # the agent prefers items the user has seen: they are skipped
    assert env.scores(action).tolist() == action.tolist()
    slate = env.action(action)
    assert not set(slate.tolist()) & set(best_seen.tolist())
    assert slate.tolist() == np.flatnonzero(~seen_now)[:K].tolist()  # the rest tie at -1: lowest indices
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(InvalidActionError, match="finite"):
        env.step(np.full(tiny_world.n_items, np.nan, dtype=np.float32))


def test_score_wrapper_preference_vector_scores_with_item_embeddings(tiny_world):
    n = tiny_world.n_items
    emb = np.stack([-np.arange(n), np.arange(n)], axis=1).astype(np.float32) / n
    env = ScoreSlateWrapper(_env(tiny_world), item_embeddings=emb)
    assert env.action_space.shape == (2,)
    _, info = env.reset(seed=0)
    unseen = np.flatnonzero(info["action_mask"])
    action = np.array([0.0, 1.0], dtype=np.float32)  # prefers high indices
    assert np.allclose(env.scores(action), emb @ action)
    _, _, _, _, info = env.step(action)
    assert info["slate"].tolist() == unseen[::-1][:K].tolist()
    factors = ScoreSlateWrapper(_env(tiny_world), embedding_dim=4)
    assert factors.action_space == gym.spaces.Box(-1, 1, (4,), np.float32)
    assert factors.item_embeddings.shape == (n, 4)


def test_dedup_wrapper_replaces_repeats_and_seen_items_by_popularity(tiny_world):
    env = DedupSlateWrapper(_env(tiny_world))
    assert env.action_space == gym.spaces.MultiDiscrete([tiny_world.n_items] * K)
    _, info = env.reset(seed=0)
    unseen = info["action_mask"].astype(bool)
    seen_item, fresh = int(np.flatnonzero(~unseen)[0]), int(np.flatnonzero(unseen)[-1])
    order = np.argsort(-tiny_world.item_popularity, kind="stable")
    popular_unseen = [int(j) for j in order if unseen[j] and j != fresh]
    _, _, _, _, info = env.step(np.array([fresh, fresh, seen_item, fresh, seen_item]))
    assert info["slate"].tolist() == [fresh, *popular_unseen[:4]]
    assert info["replaced"].tolist() == [False, True, True, True, True] and info["n_replaced"] == 4
    _, _, _, _, info = env.step(np.flatnonzero(info["action_mask"])[:K])  # a valid slate is shown as it is
    assert info["n_replaced"] == 0
    with pytest.raises(InvalidActionError, match="not an item index"):
        env.step(np.array([0, 1, 2, 3, tiny_world.n_items]))


def test_sequential_wrapper_builds_the_page_one_masked_item_at_a_time(tiny_world):
    session = config(**WATCH_ALL, **NEVER_EXIT)
    counter = CountSteps(_env(tiny_world, session_config=session))
    env = SequentialSlateWrapper(counter)
    twin = _env(tiny_world, session_config=session)
    assert env.action_space == gym.spaces.Discrete(tiny_world.n_items)
    obs, info = env.reset(seed=3)
    twin_obs, twin_info = twin.reset(seed=3)
    unseen = twin_info["action_mask"].astype(bool)
    mask = env.action_masks()
    assert mask.dtype == bool and (mask == unseen).all() and (info["action_mask"] == mask).all()
    assert not obs["slate"].any() and obs in env.observation_space

    first = int(np.flatnonzero(unseen)[0])
    obs, reward, terminated, truncated, info = env.step(first)
    assert (reward, terminated, truncated, counter.steps) == (0.0, False, False, 0)
    assert np.flatnonzero(obs["slate"]).tolist() == [first] and not env.action_masks()[first]
    assert (env.action_masks() == (unseen & (np.arange(len(unseen)) != first))).all()
    assert (info["action_mask"] == env.action_masks()).all() and info["slot"] == 0

    seen_item = int(np.flatnonzero(~unseen)[0])
    for masked in (first, seen_item):  # already picked, seen: resolved to allowed items
        _, reward, _, _, info = env.step(masked)
        assert info["replaced"] and info["item"] != masked and unseen[info["item"]] and reward == 0.0
    assert counter.steps == 0
    for _ in range(K - 4):
        env.step(int(np.flatnonzero(env.action_masks())[0]))
    obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(env.action_masks())[0]))
    assert counter.steps == 1 and info["slot"] == K - 1
    slate = info["slate"]
    assert len(set(slate.tolist())) == K and unseen[slate].all() and slate[0] == first
    twin_obs, twin_reward, twin_terminated, twin_truncated, twin_info = twin.step(slate)
    assert reward == twin_reward > 0 and (terminated, truncated) == (twin_terminated, twin_truncated)
    assert data_equivalence({k: v for k, v in obs.items() if k != "slate"}, twin_obs)
    assert not obs["slate"].any()  # a new page starts
    assert (env.action_masks() == twin_info["action_mask"].astype(bool)).all()


def test_sequential_wrapper_can_refuse_masked_actions(tiny_world):
    env = SequentialSlateWrapper(_env(tiny_world), masked_action="raise")
    _, info = env.reset(seed=0)
    seen_item = int(np.flatnonzero(info["action_mask"] == 0)[0])
    with pytest.raises(InvalidActionError, match=f"item index {seen_item} was seen"):
        env.step(seen_item)
    item = int(np.flatnonzero(info["action_mask"])[0])
    env.step(np.int64(item))
    with pytest.raises(InvalidActionError, match="already on this page"):
        env.step(np.array(item))
    with pytest.raises(InvalidActionError, match="not an item index"):
        env.step(tiny_world.n_items)


def test_bad_arguments_name_the_argument_and_the_value(tiny_world):
    with pytest.raises(ConfigError, match=r"'popular'.*Did you mean 'popularity'"):
        DedupSlateWrapper(_env(tiny_world), fallback="popular")
    with pytest.raises(ConfigError, match="masked_action 'skip'"):
        SequentialSlateWrapper(_env(tiny_world), masked_action="skip")
    with pytest.raises(ConfigError, match="not both"):
        ScoreSlateWrapper(_env(tiny_world), item_embeddings=np.zeros((tiny_world.n_items, 2)), embedding_dim=2)
    with pytest.raises(ConfigError, match="embedding_dim must be a positive integer, got 0"):
        ScoreSlateWrapper(_env(tiny_world), embedding_dim=0)
    with pytest.raises(ConfigError, match=r"embedding_dim=500"):
        ScoreSlateWrapper(_env(tiny_world), embedding_dim=500)
    with pytest.raises(ConfigError, match=r"\(60, d\), got shape \(59, 2\)"):
        ScoreSlateWrapper(_env(tiny_world), item_embeddings=np.zeros((59, 2)))
    with pytest.raises(ConfigError, match="MovieLensEnv"):
        DedupSlateWrapper(DedupSlateWrapper(_env(tiny_world)))
    with pytest.raises(ConfigError, match="MovieLensVectorEnv"):
        DedupSlateVectorWrapper(_env(tiny_world))
    envs = gym.make_vec(ENV_ID, num_envs=2, world=tiny_world, slate_size=K)
    with pytest.raises(ConfigError, match="MovieLensEnv"):
        ScoreSlateWrapper(envs)


# --------------------------------------------------------------------------------- checkers and training
@pytest.mark.parametrize("name", [*WRAPPERS, "flattened"])
def test_checkers_pass(name, tiny_world):
    if name == "flattened":
        env = gym.wrappers.FlattenObservation(SequentialSlateWrapper(_env(tiny_world)))
        assert isinstance(env.observation_space, gym.spaces.Box)
    else:
        env = WRAPPERS[name](_env(tiny_world))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's checker has no warning for these wrappers either
        sb3_check_env(env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version")
        gym_check_env(env)


def _learn(model, env) -> None:
    model.learn(total_timesteps=STEPS)
    assert model.num_timesteps >= STEPS
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    env.step(action)


@pytest.mark.parametrize("algo", ["PPO", "A2C"])
@pytest.mark.parametrize("name", list(WRAPPERS))
def test_sb3_trains_on_each_wrapper(algo, name, tiny_world):
    env = WRAPPERS[name](_env(tiny_world))
    kwargs = {"n_steps": 64, "batch_size": 64, "n_epochs": 2} if algo == "PPO" else {"n_steps": 32}
    model = {"PPO": PPO, "A2C": A2C}[algo]("MultiInputPolicy", env, seed=0, device="cpu", **kwargs)
    _learn(model, env)


def test_maskable_ppo_respects_the_action_masks(tiny_world):
    env = SequentialSlateWrapper(_env(tiny_world), masked_action="raise")  # a masked action would raise
    model = MaskablePPO("MultiInputPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=STEPS)
    assert model.num_timesteps >= STEPS
    obs, _ = env.reset(seed=1)
    for _ in range(3 * K):
        action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()


def test_ppo_trains_on_a_vec_env_of_wrapped_envs_sharing_one_world(tiny_world):
    vec = make_vec_env(lambda: DedupSlateWrapper(_env(tiny_world)), n_envs=3, seed=0)
    assert all(e.unwrapped.world is tiny_world for e in vec.envs)
    model = PPO("MultiInputPolicy", vec, n_steps=32, batch_size=48, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=STEPS)
    assert model.num_timesteps >= STEPS


def test_ppo_mlp_trains_on_flattened_observations(tiny_world):
    env = gym.wrappers.FlattenObservation(ScoreSlateWrapper(_env(tiny_world), embedding_dim=4))
    # one-hot user index + history + ratings + traits + seen
    assert env.observation_space.shape == (tiny_world.n_users + 20 + 20 + 3 + tiny_world.n_items,)
    _learn(PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu"), env)


# --------------------------------------------------------------------------------- vector wrappers
@pytest.mark.parametrize("name", ["score", "preference", "dedup"])
def test_vector_wrappers_give_valid_slates_for_the_vector_env(name, tiny_world):
    envs = gym.make_vec(ENV_ID, num_envs=4, world=tiny_world, slate_size=K)
    wrapped = {
        "score": lambda: ScoreSlateVectorWrapper(envs),
        "preference": lambda: ScoreSlateVectorWrapper(envs, embedding_dim=4),
        "dedup": lambda: DedupSlateVectorWrapper(envs, fallback="index"),
    }[name]()
    assert wrapped.action_space.shape == (4, *wrapped.single_action_space.shape)
    wrapped.action_space.seed(0)
    _, info = wrapped.reset(seed=0)
    played = short = 0
    for _ in range(150):
        unseen = info["action_mask"].astype(bool)
        actions = wrapped.action_space.sample()
        if name == "dedup":
            actions[:, 1] = actions[:, 0]  # a repeat in every row
        _, _, _, _, info = wrapped.step(actions)
        slates = info["slate"]
        assert slates.shape == (4, K) and all(len(set(row.tolist())) == K for row in slates)
        rows = info["_slate"]
        assert (rows == info["_page"]).all()
        shown_seen = ~unseen[np.arange(4)[:, None], slates][rows]
        # seen items only where the user has fewer than K unseen ones left, and then all of them are shown
        assert (shown_seen.sum(axis=1) == np.maximum(0, K - unseen[rows].sum(axis=1))).all()
        short += int(shown_seen.any())
        played += int(rows.sum())
        if name == "dedup":
            assert (info["n_replaced"][rows] >= 1).all()
        else:
            expected = score_slates(wrapped.scores(actions), unseen, K)
            assert (slates == expected).all()
    assert played > 400 and short < played / 2


def test_vector_and_single_wrappers_map_the_same_action_the_same_way(tiny_world):
    envs = ScoreSlateVectorWrapper(gym.make_vec(ENV_ID, num_envs=2, world=tiny_world, slate_size=K), embedding_dim=3)
    single = ScoreSlateWrapper(_env(tiny_world), embedding_dim=3)
    assert np.array_equal(envs.item_embeddings, single.item_embeddings)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(2, 3)).astype(np.float32)
    _, info = envs.reset(seed=0)
    slates = envs.actions(actions)
    for row in range(2):
        single._unseen = info["action_mask"][row].astype(bool)
        assert single.action(actions[row]).tolist() == slates[row].tolist()
