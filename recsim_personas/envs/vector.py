"""The vector environment: many concurrent sessions of one shared population, one rater call per step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recsim_personas.envs.env_common import SessionEnvBase, base_info, exit_reasons, page_info, reset_options
from recsim_personas.envs.model import Population
from recsim_personas.envs.spaces import SlateSpace, check_slates, make_observation_space
from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    pass

VECTOR_RESET_OPTIONS = ("user_ids",)


class MovieLensVectorEnv(SessionEnvBase, VectorEnv):
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

    ``num_envs`` (≤ the number of users), then the arguments of ``MovieLensEnv`` (both are
    :class:`~recsim_personas.envs.env_common.SessionEnvBase`'s). Reset options:
    ``{"user_ids": [uid, ...]}`` (``num_envs`` distinct ids) chooses the users of the first sessions.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, *args: Any, **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}.")
        self.num_envs = int(num_envs)
        super().__init__(*args, **kwargs)

    def _make_spaces(self) -> None:
        if self.num_envs > self.world.n_users:
            raise ConfigError(
                f"num_envs ({self.num_envs}) exceeds the number of simulated users ({self.world.n_users}); a user is"
                " in at most one session at a time."
            )
        self.single_action_space = SlateSpace(self.world.n_items, self.slate_size)
        self.action_space = SlateSpace(self.world.n_items, self.slate_size, num_slates=self.num_envs)
        self.single_observation_space = make_observation_space(self.world.n_users, self.world.n_items, self.history_len)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._slot_user = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._placeholder = np.arange(self.slate_size, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start ``num_envs`` sessions; a ``seed`` (or the first reset) also starts a fresh population."""
        super().reset(seed=seed)
        targets = self._targets(options)
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
        return obs, self._with_masks(base_info(pop, self._slot_user, obs), np.ones(self.num_envs, dtype=bool))

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
        item_ids = self.item_ids[acts]
        item_ids[resetting] = 0
        page = {
            "page": np.zeros(n, dtype=np.int64),
            "item_ids": item_ids,
            "watched": np.zeros((n, k), dtype=bool),
            "ratings": np.zeros((n, k), dtype=np.int64),
            "expected_ratings": np.zeros((n, k), dtype=np.float64),
            "satisfaction": np.zeros(n, dtype=np.float64),
        }
        if playing.size:
            r = pop.react_unchecked(self._slot_user[playing], acts[playing])
            rewards[playing] = self.settings.rewards(r)
            terminated[playing], truncated[playing] = r.exited, r.truncated
            for key, value in page_info(item_ids[playing], r).items():
                if key in page and key != "item_ids":
                    page[key][playing] = value
        page["exit_reason"] = exit_reasons(terminated, truncated)
        for slot in np.flatnonzero(resetting):
            self._slot_user[slot] = pop.next_session()
        self._autoreset = terminated | truncated

        obs = pop.observe(self._slot_user, self.history_len)
        info = self._with_masks(base_info(pop, self._slot_user, obs), np.ones(n, dtype=bool))
        info.update(self._with_masks(page, ~resetting))
        return obs, rewards, terminated, truncated, info

    def render(self) -> None:
        return None

    def close_extras(self, **kwargs: Any) -> None:
        if self.population is not None:
            self.population.close_day()

    # ----------------------------------------------------------------------------------- helpers
    @staticmethod
    def _with_masks(info: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
        """Gymnasium's vector-info layout: each ``key`` with a boolean ``_key`` of the slots it holds."""
        out: dict[str, Any] = {}
        for key, value in info.items():
            out[key] = value
            out[f"_{key}"] = mask.copy()
        return out

    def _targets(self, options: dict[str, Any] | None) -> np.ndarray | None:
        ids = reset_options(options, VECTOR_RESET_OPTIONS, "{'user_ids': [...]}").get("user_ids")
        if ids is None:
            return None
        ids = list(ids)
        if len(ids) != self.num_envs or len(set(ids)) != len(ids):
            raise ConfigError(f"options['user_ids'] must hold {self.num_envs} distinct user ids, got {ids!r}.")
        return np.array([self.world.user_index(uid) for uid in ids], dtype=np.int64)
