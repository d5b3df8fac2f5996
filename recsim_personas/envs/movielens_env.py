"""The Gymnasium environment: a recommender serves one simulated user's session, page by page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from recsim_personas import ENV_IDS
from recsim_personas.envs.env_common import SessionEnvBase, base_info, page_info, reset_options
from recsim_personas.envs.model import Population
from recsim_personas.envs.spaces import SlateSpace, check_slates, make_observation_space

if TYPE_CHECKING:
    pass

ENV_ID = ENV_IDS[0]
"""The newest registered id, ``"recsim_personas/MovieLens-v1"`` (registered by ``import recsim_personas``)."""
RESET_OPTIONS = ("user_id",)


class MovieLensEnv(SessionEnvBase, gym.Env[dict[str, Any], np.ndarray]):
    """A recommender serves pages of movies to one simulated MovieLens user until the user leaves.

    ## Description

    A population of simulated users (:class:`~recsim_personas.envs.model.Population`, a Mesa model) lives
    through simulated days; each day every user may start a session (more likely for active users, less
    likely for users whose recent sessions left them unsatisfied), at a minute of the day that Mesa's event
    clock schedules. **One episode is one session** taken from that schedule: :meth:`reset` serves the next
    session in start order, advancing the clock (and the days) until one starts. The
    population persists across episodes — what a user watched stays in its history and seen set — until a
    reset with a ``seed``, which starts a fresh population from the split's train histories.

    Each step the agent (the recommender) shows a page (slate) of ``slate_size`` distinct movies. The
    user, Agent4Rec-style:

    1. asks the rater for its rating distribution of every shown movie it has not seen (one batched call);
    2. watches each with its choice model's probability: with v1 the logistic model fitted on the logs
       (:mod:`recsim_personas.choice`: the EASE score of its history, the movie's popularity and trend, its age,
       the expected rating, the genre match and the user's traits); with ``choice="handset"`` (v0)
       ``σ(watch_slope · (m - watch_threshold))``, ``m`` the expected rating blended with the movie's
       historical average by conformity, plus a genre bonus or penalty; seen movies are never watched again;
    3. rates what it watched (a draw from the distribution by default; ``"expected"`` or ``"mode"``);
       watched movies join its history and seen set, and the rater's optional ``observe`` is called;
    4. updates its session satisfaction ``S`` and decides to go on or leave: with v1's fitted sessions
       (``continue_unit="watch"``) after each watched movie, as in the timestamped logs,
       ``σ(continue_bias + satisfaction_weight · S + activity_weight · (activity - 1/2) - fatigue · f(position))``
       (a page where nothing was watched is one decision with the hand-set ``empty_page_satisfaction``); with
       v0's hand-set sessions once per page, ``S`` an average of the pages' ``(mean rating - 3) / 2``.

    All coefficients are in :class:`~recsim_personas.envs.session.SessionConfig`
    (:mod:`recsim_personas.envs.session` has the full model).

    ## Action Space

    ``SlateSpace(n_items, slate_size)``: a ``MultiDiscrete([n_items] * slate_size)`` int64 array of *item
    indices*, distinct within the slate. Index ``j`` is the movie with id ``env.unwrapped.item_ids[j]``
    (ascending MovieLens ids; on ML-100K ``item_ids[j] == j + 1``). A wrong shape or dtype, an index outside
    ``[0, n_items)`` or a repeated index raises ``InvalidActionError`` (a ``ValueError``) naming the value.
    Movies the user has already seen may be shown but are never watched; ``info["action_mask"]`` and
    ``obs["seen"]`` mark them.

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

    env = gym.make("recsim_personas/MovieLens-v1", split="runs/split", rater="bias", slate_size=10)
    envs = gym.make_vec("recsim_personas/MovieLens-v1", num_envs=16, split="runs/split")
    ```

    - ``split``: a split directory, a loaded ``Split``, or a ``World`` from ``make_world`` (share one load
      between environments with ``world=``).
    - ``rater``: a classical rater's name (``"bias"`` by default, fitted on the split's history) or any
      object implementing the Rater protocol.
    - ``choice``: ``"fitted"`` (v1's default: fitted on the split's history when the world is built; a few
      seconds on ML-100K), ``"handset"`` (v0's) or a directory from ``recsim-personas choice fit``.
    - ``session_config``: a :class:`~recsim_personas.envs.session.SessionConfig` (behaviour coefficients,
      ``max_pages``, ``rating_mode``; default: the sessions fitted with the choice model).
    - ``slate_size`` (10), ``history_len`` (20), ``reward`` (``"rating"``).

    ## Wrappers for standard RL libraries

    Libraries that sample each slot of a ``MultiDiscrete`` independently (Stable-Baselines3's PPO, A2C, ...)
    produce repeated items, which this environment refuses. :mod:`recsim_personas.envs.wrappers` maps
    freely sampled actions to valid slates, the environment staying strict:
    ``ScoreSlateWrapper`` (a ``Box`` of item scores, or a preference vector over item factors → the top-k
    unseen items), ``DedupSlateWrapper`` (a plain ``MultiDiscrete``; repeats and seen items replaced from a
    fallback ranking) and ``SequentialSlateWrapper`` (one ``Discrete`` item per sub-step with
    ``action_masks()`` for sb3-contrib's ``MaskablePPO``); ``ScoreSlateVectorWrapper`` and
    ``DedupSlateVectorWrapper`` wrap the vector environment. The observation ``Dict`` works as it is with
    SB3's ``MultiInputPolicy`` and with ``gymnasium.wrappers.FlattenObservation``.

    ## Version History

    - v1: the users choose what to watch with the choice model fitted on the logs (:mod:`recsim_personas.choice`)
      and their sessions follow the behaviour fitted on the timestamps (:mod:`recsim_personas.envs.calibration`:
      continue/exit per watched item). ``choice="handset"`` (the default of v0) restores v0's behaviour.
    - v0: initial version (one episode = one session of the Mesa schedule; Agent4Rec-like behaviour). Since
      0.1.0's restructuring the schedule is Mesa's event clock: sessions are taken in the order of their start
      minutes (a seed gives other trajectories than before; a session's dynamics are unchanged).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def _make_spaces(self) -> None:
        self.action_space = SlateSpace(self.world.n_items, self.slate_size)
        self.observation_space = make_observation_space(self.world.n_users, self.world.n_items, self.history_len)
        self._user: int | None = None
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        opts = reset_options(options, RESET_OPTIONS, "{'user_id': 42}")
        target = None if opts.get("user_id") is None else self.world.user_index(opts["user_id"])
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
        obs, batch = self._obs()
        return obs, self._info(batch)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self.population is None or self._user is None:
            raise ResetNeeded("call reset() before step().")
        if self._done:
            raise ResetNeeded("this session is over (terminated or truncated); call reset() to start the next one.")
        slate = check_slates(action, self.world.n_items, (self.slate_size,), name="action")
        r = self.population.react_unchecked(np.array([self._user], dtype=np.int64), slate[None, :])
        value = float(self.settings.rewards(r)[0])
        terminated, truncated = bool(r.exited[0]), bool(r.truncated[0])
        self._done = terminated or truncated
        obs, batch = self._obs()
        info = self._info(batch)
        page = {key: column[0] for key, column in page_info(self.item_ids[slate][None, :], r).items()}
        page["page"], page["satisfaction"] = int(page["page"]), float(page["satisfaction"])
        page["exit_reason"] = str(page["exit_reason"])
        info.update({key: v.copy() if isinstance(v, np.ndarray) else v for key, v in page.items()})
        return obs, value, terminated, truncated, info

    def render(self) -> None:
        return None

    def close(self) -> None:
        if self.population is not None:
            self.population.close_day()
        super().close()

    # ----------------------------------------------------------------------------------- helpers
    def _obs(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        assert self.population is not None and self._user is not None
        batch = self.population.observe(np.array([self._user], dtype=np.int64), self.history_len)
        obs = {k: v[0] for k, v in batch.items()}
        obs["user_index"] = np.int64(self._user)
        return obs, batch

    def _info(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        assert self.population is not None and self._user is not None
        info = base_info(self.population, np.array([self._user], dtype=np.int64), batch)
        return {"user_id": int(info["user_id"][0]), "day": int(info["day"][0]), "action_mask": info["action_mask"][0]}
