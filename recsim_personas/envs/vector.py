"""The vector environment: many concurrent sessions of one shared population, one rater call per step."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recsim_personas.envs.factory import as_world
from recsim_personas.envs.model import Population, World, check_slates
from recsim_personas.envs.movielens_env import SlateSpace, check_env_args, exit_reasons, make_observation_space
from recsim_personas.envs.session import SessionConfig, reward
from recsim_personas.errors import ConfigError, suggest

if TYPE_CHECKING:
    from recsim_personas.agents.rater import Rater
    from recsim_personas.data.protocol import Split

VECTOR_RESET_OPTIONS = ("user_ids",)


class MovieLensVectorEnv(VectorEnv):
    """``num_envs`` session slots served side by side from one shared population.

    The vector counterpart of :class:`~recsim_personas.envs.movielens_env.MovieLensEnv` (same arguments,
    spaces per slot, rewards and episode ends; see its docstring). It is not ``num_envs`` copies of the
    single environment: all slots share one :class:`~recsim_personas.envs.model.Population`, so a user is in
    at most one slot at a time, what one slot's user watched is in its history when it comes back in
    another slot, and simulated days advance for everyone.

    Each :meth:`step` plays one page in every running slot with **one** batched ``rater.predict`` call for
    all the slots' (user, unseen item) pairs (none if every shown item was already seen), then vectorised
    numpy for the decisions.

    ## Autoreset

    ``metadata["autoreset_mode"] = AutoresetMode.NEXT_STEP``: when a slot's session ends (``terminated`` or
    ``truncated`` at step ``t``, with the final observation of that session), its action at step ``t + 1``
    is ignored and the slot starts the next session of the schedule instead: step ``t + 1`` returns that
    session's first observation for the slot, reward 0, ``terminated = truncated = False``.

    ## Spaces

    ``single_action_space = SlateSpace(n_items, slate_size)``; ``action_space`` holds ``(num_envs,
    slate_size)`` int64 arrays of item indices, distinct within each row. ``observation_space`` is the
    batched ``single_observation_space`` (a ``Dict`` of arrays with a leading ``num_envs`` axis).

    ## Info

    Arrays with a leading ``num_envs`` axis: ``user_id``, ``day``, ``action_mask`` (int8 (N, n_items)) for
    every slot; after a step also ``page``, ``item_ids``, ``watched``, ``ratings``, ``expected_ratings``,
    ``satisfaction``, ``exit_reason``, each with a boolean ``_key`` mask of the slots that played a page
    (not those being reset), as Gymnasium's vector infos do.

    ## Arguments

    ``num_envs`` (≤ the number of users), then the arguments of ``MovieLensEnv``. Reset options:
    ``{"user_ids": [uid, ...]}`` (``num_envs`` distinct ids) chooses the users of the first sessions.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        split: str | os.PathLike[str] | Split | World | None = None,
        rater: str | Rater | None = None,
        *,
        world: World | None = None,
        session_config: SessionConfig | None = None,
        slate_size: int = 10,
        history_len: int = 20,
        reward: str = "rating",
        render_mode: str | None = None,
    ) -> None:
        self.world = as_world(split, rater, world)
        check_env_args(self.world, session_config, slate_size, history_len, reward, render_mode)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}.")
        if num_envs > self.world.n_users:
            raise ConfigError(
                f"num_envs ({num_envs}) exceeds the number of simulated users ({self.world.n_users}); a user is in"
                " at most one session at a time."
            )
        self.num_envs = int(num_envs)
        self.config = session_config or SessionConfig()
        self.slate_size, self.history_len, self.reward_mode = int(slate_size), int(history_len), reward
        self.render_mode = render_mode
        self.item_ids: np.ndarray = self.world.item_ids
        self.user_ids: np.ndarray = self.world.user_ids
        self.single_action_space = SlateSpace(self.world.n_items, self.slate_size)
        self.action_space = SlateSpace(self.world.n_items, self.slate_size, num_slates=self.num_envs)
        self.single_observation_space = make_observation_space(self.world.n_users, self.world.n_items, self.history_len)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.population: Population | None = None
        self._slot_user = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._placeholder = np.arange(self.slate_size, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start ``num_envs`` sessions; a ``seed`` (or the first reset) also starts a fresh population."""
        super().reset(seed=seed)
        targets = self._parse_options(options)
        if seed is not None or self.population is None:
            self.population = Population(self.world, self.config, rng=self.np_random)
        else:
            for user in self._slot_user:
                self.population.abandon_session(int(user))
        pop = self.population
        for slot in range(self.num_envs):
            if targets is not None:
                pop.start_session(int(targets[slot]))
                self._slot_user[slot] = targets[slot]
            else:
                self._slot_user[slot] = pop.next_session()
        self._autoreset[:] = False
        obs = pop.observe(self._slot_user, self.history_len)
        return obs, self._base_info(obs)

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One page in every running slot (one batched rater call); slots that ended last step restart."""
        if self.population is None:
            raise ResetNeeded("call reset() before step().")
        pop, n, k = self.population, self.num_envs, self.slate_size
        acts = np.asarray(actions)
        resetting = self._autoreset
        if resetting.any() and acts.shape == (n, k) and np.issubdtype(acts.dtype, np.integer):
            acts = acts.copy()  # the actions of restarting slots are ignored, so not validated either
            acts[resetting] = self._placeholder
        acts = check_slates(acts, self.world.n_items, (n, k), name="actions")
        playing = np.flatnonzero(~resetting)

        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        watched = np.zeros((n, k), dtype=bool)
        ratings = np.zeros((n, k), dtype=np.int64)
        expected = np.zeros((n, k), dtype=np.float64)
        page = np.zeros(n, dtype=np.int64)
        satisfaction = np.zeros(n, dtype=np.float64)
        if playing.size:
            r = pop._react(self._slot_user[playing], acts[playing])
            rewards[playing] = reward(r.watched, r.ratings, self.reward_mode, self.config.like_threshold)
            terminated[playing], truncated[playing] = r.exited, r.truncated
            watched[playing], ratings[playing], expected[playing] = r.watched, r.ratings, r.expected
            page[playing], satisfaction[playing] = r.pages, r.satisfaction
        for slot in np.flatnonzero(resetting):
            self._slot_user[slot] = pop.next_session()
        self._autoreset = terminated | truncated

        obs = pop.observe(self._slot_user, self.history_len)
        info = self._base_info(obs)
        played = ~resetting
        item_ids = self.item_ids[acts]
        item_ids[resetting] = 0
        for key, value in (
            ("page", page),
            ("item_ids", item_ids),
            ("watched", watched),
            ("ratings", ratings),
            ("expected_ratings", expected),
            ("satisfaction", satisfaction),
            ("exit_reason", exit_reasons(terminated, truncated)),
        ):
            info[key] = value
            info[f"_{key}"] = played.copy()
        return obs, rewards, terminated, truncated, info

    def render(self) -> None:
        return None

    def close_extras(self, **kwargs: Any) -> None:
        if self.population is not None:
            self.population.close_day()

    # ----------------------------------------------------------------------------------- helpers
    def _base_info(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        assert self.population is not None
        ones = np.ones(self.num_envs, dtype=bool)
        return {
            "user_id": self.user_ids[self._slot_user],
            "_user_id": ones,
            "day": np.full(self.num_envs, self.population.day, dtype=np.int64),
            "_day": ones.copy(),
            "action_mask": (1 - obs["seen"]).astype(np.int8),
            "_action_mask": ones.copy(),
        }

    def _parse_options(self, options: dict[str, Any] | None) -> np.ndarray | None:
        if not options:
            return None
        if not isinstance(options, dict):
            raise ConfigError(f"options must be a dict like {{'user_ids': [...]}}, got {options!r}.")
        unknown = [key for key in options if key not in VECTOR_RESET_OPTIONS]
        if unknown:
            raise ConfigError(
                f"unknown reset option {unknown[0]!r}.{suggest(str(unknown[0]), VECTOR_RESET_OPTIONS)} Known"
                f" options: {', '.join(VECTOR_RESET_OPTIONS)}."
            )
        ids = options.get("user_ids")
        if ids is None:
            return None
        ids = list(ids)
        if len(ids) != self.num_envs or len(set(ids)) != len(ids):
            raise ConfigError(f"options['user_ids'] must hold {self.num_envs} distinct user ids, got {ids!r}.")
        return np.array([self.world.user_index(uid) for uid in ids], dtype=np.int64)
