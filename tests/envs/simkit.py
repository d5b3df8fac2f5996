"""Fixtures and helpers shared by the simulation tests (imported by the ``test_sim_*`` modules).

Test modules import the fixture functions (``tiny_split_dir_fixture``, ``tiny_world_fixture``) and request
them by their fixture names, ``tiny_split_dir`` and ``tiny_world``.

The tiny split is built once per session from the same synthetic ML-100K-format data as the root
``tiny_dataset_dir`` fixture (30 users with 5..40 ratings over 60 items); 20 users are sampled, so the
other 10 form the background.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from datakit import synthetic_ratings, write_ml100k

from recsim_personas.data import ProtocolConfig, prepare_split
from recsim_personas.envs import SessionConfig, World, make_world
from recsim_personas.recommenders import RandomPolicy

TINY_CONFIG = ProtocolConfig(n_users=20, min_ratings=5, max_ratings=40, seed=0)


@pytest.fixture(scope="session", name="tiny_split_dir")
def tiny_split_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("simdata")
    per_user = [5 + (u * 7) % 36 for u in range(30)]
    write_ml100k(root, synthetic_ratings(30, 60, per_user), n_items=60, n_users=30)
    split, _ = prepare_split(TINY_CONFIG, root / "split", data_dir=root, download=False)
    return split.path


@pytest.fixture(scope="session", name="tiny_world")
def tiny_world_fixture(tiny_split_dir: Path) -> World:
    """The tiny split's world with the hand-set choice model: the mechanics tests pin behaviour with its knobs
    (WATCH_ALL, ...). The fitted choice model has its own tests (tests/choice)."""
    return make_world(tiny_split_dir, choice="handset")


class CountingRater:
    """Wraps a rater and records every predict call (its batch size)."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.calls = inner, "counting", []

    def predict(self, users, items):
        self.calls.append(len(users))
        return self.inner.predict(users, items)


class ObservingSession:
    """A session of :class:`ObservingRater`: forwards predictions, records what was observed."""

    def __init__(self, rater: ObservingRater) -> None:
        self.rater = rater
        self.observed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def predict(self, users, items):
        return self.rater.predict(users, items)

    def observe(self, user_ids, item_ids, ratings) -> None:
        self.observed.append((np.asarray(user_ids), np.asarray(item_ids), np.asarray(ratings)))


class ObservingRater(CountingRater):
    """A counting rater that hands each simulation a session recording its watches (a StatefulRater)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.sessions: list[ObservingSession] = []

    def session(self) -> ObservingSession:
        self.sessions.append(ObservingSession(self))
        return self.sessions[-1]

    @property
    def observed(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """What the latest session observed."""
        return self.sessions[-1].observed


class BrokenRater:
    """Returns malformed distributions of a chosen kind."""

    name = "broken"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def predict(self, users, items):
        n = len(users)
        if self.kind == "shape":
            return np.full((n, 4), 0.25)
        if self.kind == "sum":
            return np.full((n, 5), 0.3)
        if self.kind == "nan":
            out = np.full((n, 5), 0.2)
            out[0, 0] = np.nan
            return out
        if self.kind == "rows":
            return np.full((n + 1, 5), 0.2)
        raise AssertionError(self.kind)


def with_rater(world: World, rater) -> World:
    return dataclasses.replace(world, rater=rater)


# Coefficients that make the behaviour deterministic where a test needs it.
WATCH_ALL = {"watch_threshold": 1.0, "watch_slope": 60.0, "conformity_weight": 0.0, "taste_penalty": 0.0}
NEVER_EXIT = {"continue_bias": 40.0, "fatigue": 0.0}
ALWAYS_EXIT = {"continue_bias": -40.0, "satisfaction_weight": 0.0, "activity_weight": 0.0}


def config(**overrides) -> SessionConfig:
    return SessionConfig(**overrides)


def rollout(env, seed: int, n_steps: int, policy_seed: int = 0) -> list:
    """(obs, reward, terminated, truncated, info) of ``n_steps`` steps across sessions, with a random policy."""
    policy = RandomPolicy(len(env.unwrapped.item_ids), env.unwrapped.slate_size, seed=policy_seed)
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for _ in range(n_steps):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            out.append((obs, info))
    return out


class RememberingSession:
    """A session whose predictions move with what it observed: after ``w`` watches of a user, its distributions
    are mixed with a sure 5 at weight ``min(0.2 w, 0.9)`` — so a leaked watch changes later ratings."""

    def __init__(self, rater) -> None:
        self.rater = rater
        self.watches: dict[int, int] = {}

    def predict(self, users, items):
        dist = np.asarray(self.rater.inner.predict(users, items), dtype=np.float64).copy()
        weight = np.array([min(0.2 * self.watches.get(int(u), 0), 0.9) for u in users])[:, None]
        five = np.zeros_like(dist)
        five[:, 4] = 1.0
        return (1.0 - weight) * dist + weight * five

    def observe(self, user_ids, item_ids, ratings) -> None:
        for u in np.asarray(user_ids).tolist():
            self.watches[u] = self.watches.get(u, 0) + 1


class RememberingRater:
    """A StatefulRater handing every simulation its own :class:`RememberingSession`."""

    def __init__(self, inner, *, shared: bool = False) -> None:
        self.inner, self.name = inner, "remembering"
        self._shared = RememberingSession(self) if shared else None

    def predict(self, users, items):
        return self.inner.predict(users, items)

    def session(self) -> RememberingSession:
        return self._shared if self._shared is not None else RememberingSession(self)
