"""The Gymnasium environment: a recommender serves one simulated user's session, page by page."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from recsim_personas.envs.factory import as_world
from recsim_personas.envs.model import Population, World, check_slates
from recsim_personas.envs.session import REWARD_MODES, SessionConfig, reward
from recsim_personas.errors import ConfigError, suggest, unknown_choice

if TYPE_CHECKING:
    from recsim_personas.agents.rater import Rater
    from recsim_personas.data.protocol import Split

ENV_ID = "recsim_personas/MovieLens-v0"
RESET_OPTIONS = ("user_id",)
EXIT_REASONS = ("", "exit", "page_limit")


class SlateSpace(spaces.MultiDiscrete):
    """Slates of *distinct* item indices: ``MultiDiscrete([n_items] * slate_size)`` without repeats.

    Samples draw each slate without replacement, and :meth:`contains` refuses a slate that repeats an item.
    With ``num_slates`` the space holds ``(num_slates, slate_size)`` arrays (one slate per row), the action
    space of the vector environment.

    Args:
        n_items: number of items; indices are ``0 .. n_items - 1``.
        slate_size: items per slate (``<= n_items``).
        num_slates: rows, or ``None`` for a single slate of shape ``(slate_size,)``.
        seed: seed of the space's own generator (used by :meth:`sample` only).
    """

    def __init__(
        self,
        n_items: int,
        slate_size: int,
        num_slates: int | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if slate_size > n_items:
            raise ConfigError(f"slate_size ({slate_size!r}) cannot exceed the number of items ({n_items}).")
        shape = (slate_size,) if num_slates is None else (num_slates, slate_size)
        super().__init__(np.full(shape, n_items, dtype=np.int64), dtype=np.int64, seed=seed)
        self.n_items, self.slate_size, self.num_slates = int(n_items), int(slate_size), num_slates

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A random slate (or batch of slates) of distinct items, int64 of :attr:`shape`.

        Masks and probabilities are not supported: to sample only unseen items use the policies of
        :mod:`recsim_personas.recommenders`, which read the observation's ``seen`` mask.
        """
        if mask is not None or probability is not None:
            raise NotImplementedError(
                "SlateSpace.sample does not take mask/probability; use recsim_personas.recommenders.RandomPolicy,"
                " which excludes the items in the observation's 'seen' mask."
            )
        rows = 1 if self.num_slates is None else self.num_slates
        out = np.stack([self.np_random.choice(self.n_items, self.slate_size, replace=False) for _ in range(rows)])
        return out.astype(np.int64)[0] if self.num_slates is None else out.astype(np.int64)

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        srt = np.sort(np.asarray(x), axis=-1)
        return not bool((srt[..., 1:] == srt[..., :-1]).any())

    def __repr__(self) -> str:
        rows = "" if self.num_slates is None else f", num_slates={self.num_slates}"
        return f"SlateSpace(n_items={self.n_items}, slate_size={self.slate_size}{rows})"


def make_observation_space(n_users: int, n_items: int, history_len: int) -> spaces.Dict:
    """The observation space of one session (see :class:`MovieLensEnv`)."""
    return spaces.Dict(
        {
            "user_index": spaces.Discrete(n_users),
            "history_items": spaces.Box(-1, n_items - 1, shape=(history_len,), dtype=np.int64),
            "history_ratings": spaces.Box(0, 5, shape=(history_len,), dtype=np.int64),
            "traits": spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32),
            "seen": spaces.MultiBinary(n_items),
        }
    )


def check_env_args(
    world: World, session_config: Any, slate_size: Any, history_len: Any, reward_mode: Any, render_mode: Any
) -> None:
    """Validate the environment arguments shared by the single and the vector environment."""
    if session_config is not None and not isinstance(session_config, SessionConfig):
        raise ConfigError(f"session_config must be a SessionConfig, got {type(session_config).__name__}.")
    for name, value in (("slate_size", slate_size), ("history_len", history_len)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if slate_size > world.n_items:
        raise ConfigError(f"slate_size ({slate_size!r}) cannot exceed the number of items ({world.n_items}).")
    if reward_mode not in REWARD_MODES:
        raise unknown_choice("reward", str(reward_mode), REWARD_MODES)
    if render_mode is not None:
        raise ConfigError(f"render_mode {render_mode!r} is not supported; this environment does not render.")


def exit_reasons(exited: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """``"exit"`` / ``"page_limit"`` / ``""`` (session goes on) per session: an object array (N,) of str.

    Object dtype, as Gymnasium's vector environments use for string infos.
    """
    return np.where(exited, "exit", np.where(truncated, "page_limit", "")).astype(object)


class MovieLensEnv(gym.Env[dict[str, Any], np.ndarray]):
    """A recommender serves pages of movies to one simulated MovieLens user until the user leaves.

    ## Description

    A population of simulated users (:class:`~recsim_personas.envs.model.Population`, a Mesa model) lives
    through simulated days; each day every user may start a session (more likely for active users, less
    likely for users whose recent sessions left them unsatisfied). **One episode is one session** taken from
    that schedule: :meth:`reset` serves the next queued session, simulating days until one is queued. The
    population persists across episodes — what a user watched stays in its history and seen set — until a
    reset with a ``seed``, which starts a fresh population from the split's train histories.

    Each step the agent (the recommender) shows a page (slate) of ``slate_size`` distinct movies. The
    user, Agent4Rec-style:

    1. asks the rater for its rating distribution of every shown movie it has not seen (one batched call);
    2. watches each with probability ``σ(watch_slope · (m - watch_threshold))``, where
       ``m = (1 - w) · E + w · h`` blends the expected rating ``E`` with the movie's historical average ``h``
       by its conformity (``w = conformity_weight · conformity``), and a movie outside the user's top genres
       gets ``m += novelty_bonus · diversity - taste_penalty · (1 - diversity)``; seen movies are never
       watched again;
    3. rates what it watched (a draw from the distribution by default; ``"expected"`` or ``"mode"``);
       watched movies join its history and seen set, and the rater's optional ``observe`` is called;
    4. rates the page (``(mean rating - 3) / 2``, or -1 if it watched nothing), updates its session
       satisfaction ``S`` (an average of this and earlier pages) and asks for another page with probability
       ``σ(continue_bias + satisfaction_weight · S + activity_weight · (activity - 1/2) - fatigue · (page - 1))``.

    All coefficients are in :class:`~recsim_personas.envs.session.SessionConfig`
    (:mod:`recsim_personas.envs.session` has the full model).

    ## Action Space

    ``SlateSpace(n_items, slate_size)``: a ``MultiDiscrete([n_items] * slate_size)`` int64 array of *item
    indices*, distinct within the slate. Index ``j`` is the movie with id ``env.unwrapped.item_ids[j]``
    (ascending MovieLens ids; on ML-100K ``item_ids[j] == j + 1``). A wrong shape or dtype, an index outside
    ``[0, n_items)`` or a repeated index raises ``ValueError`` naming the value. Movies the user has already
    seen may be shown but are never watched; ``info["action_mask"]`` and ``obs["seen"]`` mark them.

    ## Observation Space

    A ``Dict``:

    | key               | space                               | meaning                                      |
    |-------------------|-------------------------------------|----------------------------------------------|
    | `user_index`      | `Discrete(n_users)`                 | index into `env.unwrapped.user_ids`          |
    | `history_items`   | `Box(-1, n_items - 1, (H,), int64)` | latest item indices, oldest first; -1 = pad  |
    | `history_ratings` | `Box(0, 5, (H,), int64)`            | their ratings 1..5; 0 = pad                  |
    | `traits`          | `Box(0, 1, (3,), float32)`          | activity, conformity, diversity scores       |
    | `seen`            | `MultiBinary(n_items)` (int8)       | 1 for every item the user rated or watched   |

    ``H`` is ``history_len``; the history holds the user's train ratings, then what it watched here.

    ## Rewards

    Per page, by ``reward``: ``"rating"`` (default) the sum of the ratings of the watched movies;
    ``"likes"`` the number of watched movies rated at least ``like_threshold`` (4); ``"watches"`` the
    number of watched movies.

    ## Starting State

    The user of the next session in the population's schedule, or ``options={"user_id": uid}`` to choose
    one (an id not in ``env.unwrapped.user_ids`` raises ``UnknownUserError``). A session of another user
    that is still open is abandoned (no churn is booked for it).

    ## Episode End

    - **Termination**: the user decides to leave after a page.
    - **Truncation**: the session reached ``max_pages`` pages (``SessionConfig.max_pages``, 10).

    ``info`` after a step: ``user_id``, ``day``, ``page``, ``item_ids`` (the shown movies' ids, (k,)),
    ``watched`` (bool (k,)), ``ratings`` (int64 (k,), 0 = not watched), ``expected_ratings`` (float64 (k,),
    0 for seen movies), ``satisfaction``, ``exit_reason`` (``"exit"``, ``"page_limit"`` or ``""``) and
    ``action_mask`` (int8 (n_items,), 1 = not seen yet). After a reset: ``user_id``, ``day``,
    ``action_mask``.

    ## Arguments

    ```python
    import gymnasium as gym
    import recsim_personas  # registers the ids

    env = gym.make("recsim_personas/MovieLens-v0", split="runs/split", rater="bias", slate_size=10)
    envs = gym.make_vec("recsim_personas/MovieLens-v0", num_envs=16, split="runs/split")
    ```

    - ``split``: a split directory, a loaded ``Split``, or a ``World`` from ``make_world`` (share one load
      between environments with ``world=``).
    - ``rater``: a classical rater's name (``"bias"`` by default, fitted on the split's history) or any
      object implementing the Rater protocol.
    - ``session_config``: a :class:`SessionConfig` (behaviour coefficients, ``max_pages``, ``rating_mode``).
    - ``slate_size`` (10), ``history_len`` (20), ``reward`` (``"rating"``).

    ## Version History

    - v0: initial version (one episode = one session of the Mesa schedule; Agent4Rec-like behaviour).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
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
        self.config = session_config or SessionConfig()
        self.slate_size, self.history_len, self.reward_mode = int(slate_size), int(history_len), reward
        self.render_mode = render_mode
        self.item_ids: np.ndarray = self.world.item_ids
        self.user_ids: np.ndarray = self.world.user_ids
        self.action_space = SlateSpace(self.world.n_items, self.slate_size)
        self.observation_space = make_observation_space(self.world.n_users, self.world.n_items, self.history_len)
        self.population: Population | None = None
        self._user: int | None = None
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        target = self._parse_options(options)
        if seed is not None or self.population is None:
            self.population = Population(self.world, self.config, rng=self.np_random)
        elif self._user is not None:
            self.population.abandon_session(self._user)
        if target is not None:
            self.population.start_session(target)
            self._user = target
        else:
            self._user = self.population.next_session()
        self._done = False
        obs = self._obs()
        return obs, self._info(obs)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self.population is None or self._user is None:
            raise ResetNeeded("call reset() before step().")
        if self._done:
            raise ResetNeeded("this session is over (terminated or truncated); call reset() to start the next one.")
        slate = check_slates(action, self.world.n_items, (self.slate_size,), name="action")
        r = self.population._react(np.array([self._user], dtype=np.int64), slate[None, :])
        value = float(reward(r.watched, r.ratings, self.reward_mode, self.config.like_threshold)[0])
        terminated, truncated = bool(r.exited[0]), bool(r.truncated[0])
        self._done = terminated or truncated
        obs = self._obs()
        info = self._info(obs)
        info.update(
            page=int(r.pages[0]),
            item_ids=self.item_ids[slate],
            watched=r.watched[0].copy(),
            ratings=r.ratings[0].copy(),
            expected_ratings=r.expected[0].copy(),
            satisfaction=float(r.satisfaction[0]),
            exit_reason=str(exit_reasons(r.exited, r.truncated)[0]),
        )
        return obs, value, terminated, truncated, info

    def render(self) -> None:
        return None

    def close(self) -> None:
        if self.population is not None:
            self.population.close_day()
        super().close()

    # ----------------------------------------------------------------------------------- helpers
    def _parse_options(self, options: dict[str, Any] | None) -> int | None:
        if not options:
            return None
        if not isinstance(options, dict):
            raise ConfigError(f"options must be a dict like {{'user_id': 42}}, got {options!r}.")
        unknown = [k for k in options if k not in RESET_OPTIONS]
        if unknown:
            raise ConfigError(
                f"unknown reset option {unknown[0]!r}.{suggest(str(unknown[0]), RESET_OPTIONS)} Known options:"
                f" {', '.join(RESET_OPTIONS)}."
            )
        if options.get("user_id") is None:
            return None
        return self.world.user_index(options["user_id"])

    def _obs(self) -> dict[str, Any]:
        assert self.population is not None and self._user is not None
        batch = self.population.observe(np.array([self._user], dtype=np.int64), self.history_len)
        obs = {k: v[0] for k, v in batch.items()}
        obs["user_index"] = np.int64(self._user)
        return obs

    def _info(self, obs: dict[str, Any]) -> dict[str, Any]:
        assert self.population is not None and self._user is not None
        return {
            "user_id": int(self.user_ids[self._user]),
            "day": self.population.day,
            "action_mask": (1 - obs["seen"]).astype(np.int8),
        }
