"""Gymnasium's AsyncVectorEnv (one subprocess per environment) runs the env as SyncVectorEnv does."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import data_equivalence
from simkit import tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.recommenders import RandomPolicy

ENV_ID = "recsim_personas/MovieLens-v1"


def _run(vector_cls, split_dir, steps: int = 12) -> list:
    envs = vector_cls([lambda: gym.make(ENV_ID, split=str(split_dir), slate_size=4) for _ in range(2)])
    try:
        policy = RandomPolicy(envs.single_action_space.n_items, 4, seed=3)
        obs, info = envs.reset(seed=[11, 12])
        out = [(obs, info)]
        for _ in range(steps):
            out.append(envs.step(policy.act_batch(obs)))
            obs = out[-1][0]
        return out
    finally:
        envs.close()


def test_async_vector_env_matches_sync_vector_env(tiny_split_dir):
    sync = _run(gym.vector.SyncVectorEnv, tiny_split_dir)
    async_ = _run(gym.vector.AsyncVectorEnv, tiny_split_dir)
    assert data_equivalence(sync, async_)
    rewards = np.array([step[1] for step in sync[1:]])
    assert rewards.shape == (12, 2) and rewards.sum() > 0  # something was watched: a comparison that can fail


def test_importing_the_simulation_leaves_the_start_method_alone():
    import multiprocessing
    import subprocess
    import sys

    code = "import multiprocessing as m; import recsim_personas.envs.model; print(m.get_start_method())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == multiprocessing.get_all_start_methods()[0]  # the platform default, not mesa's forced "spawn"
