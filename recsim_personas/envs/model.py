"""The Mesa model: a population of simulated users, one step per simulated day.

:class:`World` is everything a population is built from (items, users and their traits, their train
histories, the rater), loaded once from a split by :func:`~recsim_personas.envs.factory.make_world`.
:class:`Population` is the mutable simulation on top of it: each :meth:`Population.step` is one day in
which every user, in random order (``self.agents.shuffle_do("step")``), may start a session that is queued;
:meth:`Population.react` plays one page of many concurrent sessions at once (one batched rater call);
:meth:`Population.run_days` serves every queued session with a policy. A ``mesa.DataCollector`` records the
metrics of each day.

Randomness: every draw comes from the model's generator (``Model(seed=...)`` or ``Model(rng=...)`` →
``self.rng``, and ``self.random`` for the agents' shuffle); nothing touches global random state.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import mesa
import numpy as np
from tqdm.auto import tqdm

from recsim_personas.agents.rater import RATINGS, Rater, RaterSession, check_distribution, open_session
from recsim_personas.envs.agents import SimulatedUser, Traits
from recsim_personas.envs.session import (
    SessionConfig,
    continue_probability,
    page_satisfaction,
    rate,
    return_propensity,
    start_probability,
    update_satisfaction,
    watch_probability,
)
from recsim_personas.errors import ConfigError, RecsimPersonasError, UnknownUserError

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

MAX_IDLE_DAYS = 100_000


@dataclass(frozen=True, eq=False)
class World:
    """The immutable inputs of a simulation, shared by every population and environment built on them.

    Its arrays are made read-only; a :class:`Population` copies what it changes.

    Items are addressed by their *index* ``j`` into :attr:`item_ids` (ascending ids), users by their index
    ``u`` into :attr:`user_ids` (ascending ids).

    Attributes:
        item_ids: item ids, int64 (n_items,), ascending.
        item_hist_avg: historical average rating of each item (items nobody rated get the mean rating of the
            history), float64 (n_items,).
        item_genres: genre bitmask of each item (bit ``g`` = ``genres[g]``), int64 (n_items,).
        item_popularity: number of ratings of each item in the split's history, int64 (n_items,).
        genres: genre names, in bit order.
        user_ids: user ids, int64 (n_users,), ascending.
        traits: each user's :class:`~recsim_personas.envs.agents.Traits`.
        trait_scores: ``[activity, conformity, diversity]`` scores, float64 (n_users, 3) in [0, 1].
        user_top_genres: bitmask of each user's top genres, int64 (n_users,).
        history_items: per user, the item indices of its train ratings, oldest first (int64 arrays).
        history_ratings: per user, the matching ratings 1..5 (int64 arrays).
        rater: the rater every user shares.
        split_id: id of the split it was built from, if known.
    """

    item_ids: np.ndarray
    item_hist_avg: np.ndarray
    item_genres: np.ndarray
    item_popularity: np.ndarray
    genres: tuple[str, ...]
    user_ids: np.ndarray
    traits: tuple[Traits, ...]
    trait_scores: np.ndarray
    user_top_genres: np.ndarray
    history_items: tuple[np.ndarray, ...]
    history_ratings: tuple[np.ndarray, ...]
    rater: Rater
    split_id: str | None = None

    def __post_init__(self) -> None:
        # Shared by every population and environment built on it: make the arrays read-only.
        for value in vars(self).values():
            for arr in value if isinstance(value, tuple) else (value,):
                if isinstance(arr, np.ndarray):
                    arr.flags.writeable = False

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def rater_name(self) -> str:
        return str(getattr(self.rater, "name", type(self.rater).__name__))

    def user_index(self, user_id: Any) -> int:
        """Index of ``user_id`` in :attr:`user_ids`.

        Raises:
            UnknownUserError: the id is not one of this world's users (the message lists a few valid ones).
        """
        try:
            uid = int(user_id)
            ok = uid == user_id and not isinstance(user_id, bool | np.bool_)
        except (TypeError, ValueError):
            ok = False
        if ok:
            pos = int(np.searchsorted(self.user_ids, uid))
            if pos < len(self.user_ids) and self.user_ids[pos] == uid:
                return pos
        some = ", ".join(str(int(u)) for u in self.user_ids[:5])
        raise UnknownUserError(
            f"user id {user_id!r} is not one of the {self.n_users} simulated users (valid ids include {some}, …)."
            " Fix: pick an id from env.unwrapped.user_ids."
        )


@dataclass(frozen=True, eq=False)
class Reaction:
    """What ``N`` users did with one page each.

    Attributes:
        users: user indices, int64 (N,).
        slates: item indices shown, int64 (N, k).
        expected: the rater's expected rating of each shown item, float64 (N, k); 0 for items already seen
            (the rater is not asked about them).
        watched: bool (N, k).
        ratings: int64 (N, k): the rating of each watched item, 0 elsewhere.
        page_satisfaction: float64 (N,) in [-1, 1].
        satisfaction: session satisfaction after the page, float64 (N,).
        pages: pages shown in the session so far, including this one, int64 (N,).
        exited: the user chose to leave after this page, bool (N,).
        truncated: the session hit ``max_pages`` without the user leaving, bool (N,).
    """

    users: np.ndarray
    slates: np.ndarray
    expected: np.ndarray
    watched: np.ndarray
    ratings: np.ndarray
    page_satisfaction: np.ndarray
    satisfaction: np.ndarray
    pages: np.ndarray
    exited: np.ndarray
    truncated: np.ndarray

    @property
    def ended(self) -> np.ndarray:
        """Sessions that are over after this page, bool (N,)."""
        return self.exited | self.truncated


class BatchPolicy(Protocol):
    """What :meth:`Population.run_days` needs of a policy (see :mod:`recsim_personas.recommenders`)."""

    slate_size: int

    def act_batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class DayStats:
    """Counters of the current day (reset every day)."""

    sessions: int = 0
    pages: int = 0
    items_shown: int = 0
    items_watched: int = 0
    rating_sum: int = 0
    likes: int = 0
    early_exits: int = 0
    page_limit: int = 0
    unsatisfied: int = 0
    abandoned: int = 0


def _day_stat(name: str, model: Population) -> float:
    return getattr(model.day_stats, name)


def _mean_rating(model: Population) -> float:
    s = model.day_stats
    return s.rating_sum / s.items_watched if s.items_watched else math.nan


REPORTED = (
    "sessions",
    "pages",
    "items_shown",
    "items_watched",
    "mean_rating",
    "likes",
    "early_exits",
    "page_limit",
    "unsatisfied",
    "churned_users",
)
"""The DataCollector's columns (besides ``day``), in order."""


def check_slates(
    slates: Any, n_items: int, shape: tuple[int, ...] | None = None, *, name: str = "slates"
) -> np.ndarray:
    """Validate slates of item indices (the last axis is the slate) and return them as int64.

    Args:
        slates: array-like of item indices; 2-D ``(N, k)`` unless ``shape`` says otherwise.
        n_items: number of items (valid indices are ``0 .. n_items - 1``).
        shape: the exact shape required, if any.
        name: what to call the input in error messages (``"action"``, ``"actions"``, ...).

    Raises:
        ValueError: wrong shape, a non-integer dtype, an index outside ``[0, n_items)``, or one item twice in
            a slate. The message names the position and the value.
    """
    arr = np.asarray(slates)
    if (shape is not None and arr.shape != tuple(shape)) or (shape is None and arr.ndim != 2):
        want = tuple(shape) if shape is not None else "(N, k)"
        raise ValueError(f"{name} must have shape {want}, got an array of shape {arr.shape}: {_short(arr)}.")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer item indices, got dtype {arr.dtype}: {_short(arr)}.")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= n_items)
    if bad.any():
        at = tuple(int(x) for x in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}[{', '.join(map(str, at))}] = {int(arr[at])} is not an item index in [0, {n_items}). Item"
            " indices address env.unwrapped.item_ids (index j is item id item_ids[j])."
        )
    if arr.ndim and arr.shape[-1] > 1:
        srt = np.sort(arr, axis=-1)
        dup = srt[..., 1:] == srt[..., :-1]
        if dup.any():
            at = tuple(int(x) for x in np.argwhere(dup)[0])
            row, value = at[:-1], int(srt[at])
            where = np.flatnonzero(arr[row] == value).tolist()
            label = f"{name}[{', '.join(map(str, row))}]" if row else name
            raise ValueError(
                f"{label} shows item index {value} more than once (positions {where}); a slate must hold distinct"
                " items."
            )
    return arr


def _short(arr: np.ndarray) -> str:
    return np.array2string(np.asarray(arr), threshold=12, edgeitems=3)


class Population(mesa.Model):
    """A population of :class:`~recsim_personas.envs.agents.SimulatedUser`\\ s; one :meth:`step` = one day.

    Args:
        world: the simulation's inputs (from :func:`~recsim_personas.envs.factory.make_world`).
        config: behaviour coefficients.
        seed: seed of the model's generators (Mesa's ``seed``), or
        rng: a ``numpy.random.Generator`` (or seed-like) to draw from (Mesa's ``rng``); not both.

    Attributes:
        world: the :class:`World`.
        config: the :class:`~recsim_personas.envs.session.SessionConfig`.
        users: the agents, ``users[u]`` has index ``u``.
        queue: indices of users whose session has started but is not being served yet, oldest first.
        day_start_probability: each user's session probability today, float64 (n_users,).
        day_uniform: each user's uniform draw today, float64 (n_users,).
        day_stats: counters of the current day.
        datacollector: one row per finished day: ``day`` and :data:`REPORTED`.
    """

    def __init__(
        self,
        world: World,
        config: SessionConfig | None = None,
        *,
        seed: int | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        super().__init__(seed=seed, rng=rng)
        if config is not None and not isinstance(config, SessionConfig):
            raise ConfigError(f"config must be a SessionConfig, got {type(config).__name__}.")
        self.world = world
        self.config = config or SessionConfig()
        n_users, n_items = world.n_users, world.n_items
        lengths = np.array([len(h) for h in world.history_items], dtype=np.int64)
        cap = int(lengths.max(initial=0)) + 64
        self._hist_items = np.full((n_users, cap), -1, dtype=np.int64)
        self._hist_ratings = np.zeros((n_users, cap), dtype=np.int8)
        self._hist_len = lengths.copy()
        self._seen = np.zeros((n_users, n_items), dtype=bool)
        for u, (items, ratings) in enumerate(zip(world.history_items, world.history_ratings, strict=True)):
            self._hist_items[u, : len(items)] = items
            self._hist_ratings[u, : len(items)] = ratings
            self._seen[u, items] = True
        self._activity = world.trait_scores[:, 0].copy()
        self._conformity = world.trait_scores[:, 1].copy()
        self._diversity = world.trait_scores[:, 2].copy()
        self._queued = np.zeros(n_users, dtype=bool)
        self._in_session = np.zeros(n_users, dtype=bool)
        self._pages = np.zeros(n_users, dtype=np.int64)
        self._satisfaction = np.zeros(n_users, dtype=np.float64)
        self._unsat_streak = np.zeros(n_users, dtype=np.int64)
        self._return_prop = np.ones(n_users, dtype=np.float64)
        # this population's own handle on the shared rater: what its users watch goes there, never to the rater
        self.rater: RaterSession = open_session(world.rater)
        self.queue: deque[int] = deque()
        self.day_start_probability = np.zeros(n_users, dtype=np.float64)
        self.day_uniform = np.ones(n_users, dtype=np.float64)
        self.users = [SimulatedUser(self, u) for u in range(n_users)]
        self.day_stats = DayStats()
        self._day_open = False
        reporters: dict[str, Any] = {"day": partial(_day_stat_day)}
        for name in REPORTED:
            if name == "mean_rating":
                reporters[name] = partial(_mean_rating)
            elif name == "churned_users":
                reporters[name] = partial(_churned)
            else:
                reporters[name] = partial(_day_stat, name)
        self.datacollector = mesa.DataCollector(model_reporters=reporters)

    # -------------------------------------------------------------------------------------- days
    @property
    def day(self) -> int:
        """Days simulated so far (Mesa's ``steps``)."""
        return int(self.steps)

    def step(self) -> None:
        """One simulated day: close the previous day's record, then every user (shuffled) may start a session."""
        self.close_day()
        self.day_stats = DayStats()
        self._day_open = True
        self.day_start_probability = start_probability(self._activity, self._return_prop, self.config)
        self.day_uniform = self.rng.random(self.world.n_users)
        # plain lists for the agents' per-user look-ups (much cheaper than numpy scalar indexing)
        self._day_busy = (self._in_session | self._queued).tolist()
        self._day_p = self.day_start_probability.tolist()
        self._day_u = self.day_uniform.tolist()
        self.agents.shuffle_do("step")

    def close_day(self) -> None:
        """Record the current day in the DataCollector (once; a no-op before the first day or if closed).

        Events are booked on the day during which they happen; sessions started explicitly before the first
        simulated day (e.g. ``reset(options={"user_id": ...})`` right after a seeded reset) go to day 0.
        """
        if self._day_open:
            self.datacollector.collect(self)
            self._day_open = False

    def queue_session(self, user: int) -> None:
        """Queue a session for user index ``user`` (called by the agent's daily step)."""
        self._queued[user] = True
        self.queue.append(int(user))

    def churned_users(self) -> int:
        """Users who stopped returning: at least ``churn_patience`` unsatisfied sessions in a row."""
        return int((self._unsat_streak >= self.config.churn_patience).sum())

    # ---------------------------------------------------------------------------------- sessions
    def user(self, user_id: Any) -> SimulatedUser:
        """The agent of ``user_id`` (raises :class:`~recsim_personas.errors.UnknownUserError`)."""
        return self.users[self.world.user_index(user_id)]

    def start_session(self, user: int) -> None:
        """Start serving a session of user index ``user`` now (taking it off the queue if it was queued)."""
        if self._in_session[user]:
            raise RecsimPersonasError(f"user {int(self.world.user_ids[user])} is already in a session.")
        if self._queued[user]:
            self.queue.remove(int(user))
            self._queued[user] = False
        if not self._day_open:
            self.day_stats = DayStats()
            self._day_open = True
        self._in_session[user] = True
        self._pages[user] = 0
        self._satisfaction[user] = 0.0
        self.day_stats.sessions += 1

    def next_session(self, max_idle_days: int = MAX_IDLE_DAYS) -> int:
        """Start the next queued session, simulating days until one is queued; returns the user index.

        Raises:
            RecsimPersonasError: no user started a session in ``max_idle_days`` days (everyone busy).
        """
        idle = 0
        while not self.queue:
            if idle >= max_idle_days:
                raise RecsimPersonasError(
                    f"no user started a session in {max_idle_days} simulated days ({int(self._in_session.sum())}"
                    f" of {self.world.n_users} users are already in a session). Fix: use fewer concurrent sessions."
                )
            self.step()
            idle += 1
        user = self.queue.popleft()
        self._queued[user] = False
        self.start_session(user)
        return user

    def abandon_session(self, user: int) -> None:
        """End a session without a decision of the user (e.g. an environment reset mid-session); no churn."""
        if self._in_session[user]:
            self._in_session[user] = False
            self.day_stats.abandoned += 1

    def react(self, users: Any, slates: Any) -> Reaction:
        """Play one page of the sessions of ``users``: watch, rate, then continue or exit.

        Asks the rater once for every (user, shown item) pair the user has not seen, validates its output,
        draws the watch decisions, the ratings and the continue/exit decisions from the model's generator,
        adds the watched items to the users' histories and seen sets, reports them to this population's rater
        session (``self.rater.observe(user_ids, item_ids, ratings)``) and ends the sessions that are over.

        Args:
            users: distinct user indices, all in a session, int (N,).
            slates: item indices shown to each, int (N, k), distinct within a row.

        Raises:
            ValueError: malformed slates (see :func:`check_slates`).
            RaterOutputError: the rater returned something that is not a batch of distributions.
            RecsimPersonasError: a user is not in a session, or appears twice.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        slates = check_slates(slates, self.world.n_items)
        if slates.shape[0] != users.shape[0]:
            raise ValueError(f"got {users.shape[0]} users but {slates.shape[0]} slates.")
        if not self._in_session[users].all():
            bad = int(users[~self._in_session[users]][0])
            raise RecsimPersonasError(f"user {int(self.world.user_ids[bad])} is not in a session; start one first.")
        if np.unique(users).size != users.size:
            raise RecsimPersonasError("a user appears twice in one batch; each user has at most one session.")
        return self._react(users, slates)

    def _react(self, users: np.ndarray, slates: np.ndarray) -> Reaction:
        """:meth:`react` without input validation (the environments validate once themselves)."""
        w, cfg, rng = self.world, self.config, self.rng
        n, k = slates.shape
        rows = np.broadcast_to(users[:, None], (n, k))
        seen = self._seen[rows, slates]
        ask = ~seen
        ru, ri = rows[ask], slates[ask]
        expected = np.zeros((n, k), dtype=np.float64)
        watched = np.zeros((n, k), dtype=bool)
        ratings = np.zeros((n, k), dtype=np.int64)
        if ru.size:
            dist = self.rater.predict(w.user_ids[ru], w.item_ids[ri])
            dist = check_distribution(dist, ru.size, source=f"rater {w.rater_name!r}")
            e = dist @ RATINGS
            off_taste = (w.item_genres[ri] & w.user_top_genres[ru]) == 0
            p = watch_probability(
                e, w.item_hist_avg[ri], off_taste, False, self._conformity[ru], self._diversity[ru], cfg
            )
            watch = rng.random(ru.size) < p
            r = np.zeros(ru.size, dtype=np.int64)
            if watch.any():
                r[watch] = rate(dist[watch], cfg.rating_mode, rng)
            expected[ask], watched[ask], ratings[ask] = e, watch, r

        pages = self._pages[users] + 1
        page_sat = page_satisfaction(watched, ratings, cfg)
        sat = update_satisfaction(self._satisfaction[users], page_sat, cfg)
        p_cont = continue_probability(sat, pages, self._activity[users], cfg)
        exited = rng.random(n) >= p_cont
        truncated = ~exited & (pages >= cfg.max_pages)
        self._pages[users] = pages
        self._satisfaction[users] = sat

        n_watched = int(watched.sum())
        if n_watched:
            self._record(users, slates, watched, ratings)
        s = self.day_stats
        s.pages += n
        s.items_shown += n * k
        s.items_watched += n_watched
        s.rating_sum += int(ratings.sum())
        s.likes += int((ratings >= cfg.like_threshold).sum())
        s.early_exits += int((exited & (pages < cfg.max_pages)).sum())
        s.page_limit += int(truncated.sum())
        ended = exited | truncated
        if ended.any():
            self._end_sessions(users[ended], sat[ended])
        if n_watched:
            self.rater.observe(w.user_ids[rows[watched]], w.item_ids[slates[watched]], ratings[watched])
        return Reaction(
            users=users,
            slates=slates,
            expected=expected,
            watched=watched,
            ratings=ratings,
            page_satisfaction=page_sat,
            satisfaction=sat,
            pages=pages,
            exited=exited,
            truncated=truncated,
        )

    def _record(self, users: np.ndarray, slates: np.ndarray, watched: np.ndarray, ratings: np.ndarray) -> None:
        """Append watched items (in slate order) to the users' histories and seen sets."""
        n_w = watched.sum(axis=1)
        start = self._hist_len[users]
        self._ensure_capacity(int((start + n_w).max()))
        pos = start[:, None] + np.cumsum(watched, axis=1) - 1
        rows = np.broadcast_to(users[:, None], watched.shape)[watched]
        items = slates[watched]
        self._hist_items[rows, pos[watched]] = items
        self._hist_ratings[rows, pos[watched]] = ratings[watched]
        self._hist_len[users] = start + n_w
        self._seen[rows, items] = True

    def _ensure_capacity(self, needed: int) -> None:
        cap = self._hist_items.shape[1]
        if needed <= cap:
            return
        new_cap = max(needed, 2 * cap)
        items = np.full((self.world.n_users, new_cap), -1, dtype=np.int64)
        ratings = np.zeros((self.world.n_users, new_cap), dtype=np.int8)
        items[:, :cap], ratings[:, :cap] = self._hist_items, self._hist_ratings
        self._hist_items, self._hist_ratings = items, ratings

    def _end_sessions(self, users: np.ndarray, satisfaction: np.ndarray) -> None:
        """Close sessions; an unsatisfied ending extends the user's streak and may lower its return propensity."""
        unsatisfied = satisfaction < self.config.unsatisfied_below
        streak = np.where(unsatisfied, self._unsat_streak[users] + 1, 0)
        self._unsat_streak[users] = streak
        self._return_prop[users] = return_propensity(streak, self.config)
        self._in_session[users] = False
        self.day_stats.unsatisfied += int(unsatisfied.sum())

    # ------------------------------------------------------------------------------- observation
    def observe(self, users: Any, history_len: int) -> dict[str, np.ndarray]:
        """What a recommender may see of ``users`` (fresh arrays).

        Args:
            users: user indices, int (N,).
            history_len: how many of the latest history entries to return.

        Returns:
            ``user_index`` int64 (N,); ``history_items`` int64 (N, history_len): the latest item indices,
            oldest first, left-padded with -1; ``history_ratings`` int64 (N, history_len), padded with 0;
            ``traits`` float32 (N, 3) = [activity, conformity, diversity] scores; ``seen`` int8
            (N, n_items), 1 for items the user has seen.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        idx = self._hist_len[users][:, None] - history_len + np.arange(history_len)
        valid = idx >= 0
        idx = np.maximum(idx, 0)
        rows = users[:, None]
        items = np.where(valid, self._hist_items[rows, idx], -1)
        ratings = np.where(valid, self._hist_ratings[rows, idx], 0).astype(np.int64)
        return {
            "user_index": users.copy(),
            "history_items": items,
            "history_ratings": ratings,
            "traits": self.world.trait_scores[users].astype(np.float32),
            "seen": self._seen[users].view(np.int8),
        }

    # ---------------------------------------------------------------------------------------- runs
    def run_days(
        self, n_days: int, policy: BatchPolicy, *, history_len: int = 20, progress: bool = True
    ) -> dict[str, Any]:
        """Simulate ``n_days`` days, serving every session queued on a day with ``policy`` on that day.

        The sessions of a day run concurrently: each round, every open session gets one page, all asked of
        the policy in one ``act_batch`` call and of the rater in one ``predict`` call.

        Returns:
            :meth:`summary` after the last day.
        """
        if not isinstance(n_days, int) or n_days < 1:
            raise RecsimPersonasError(f"n_days must be a positive integer, got {n_days!r}.")
        for _ in tqdm(range(n_days), desc="simulating", unit="day", disable=not progress):
            self.step()
            active = np.fromiter(self.queue, dtype=np.int64, count=len(self.queue))
            for user in active:
                self.start_session(int(user))
            while active.size:
                slates = policy.act_batch(self.observe(active, history_len))
                reaction = self.react(active, slates)
                active = active[~reaction.ended]
            self.close_day()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The DataCollector's per-day rows and totals over them.

        Returns:
            ``{"days": [{"day": 1, "sessions": ..., ...}, ...], "totals": {...}}``; totals sum the counts,
            average the rating over all watched items and take the last day's ``churned_users``.
        """
        mv = self.datacollector.model_vars
        n = len(mv.get("day", []))
        days = [{name: _plain(mv[name][i]) for name in ("day", *REPORTED)} for i in range(n)]
        counts = ("sessions", "pages", "items_shown", "items_watched", "likes", "early_exits", "page_limit")
        totals: dict[str, Any] = {c: int(sum(d[c] for d in days)) for c in (*counts, "unsatisfied")}
        rating_sum = sum(d["mean_rating"] * d["items_watched"] for d in days if d["items_watched"])
        totals["days"] = n
        totals["mean_rating"] = rating_sum / totals["items_watched"] if totals["items_watched"] else None
        totals["watch_rate"] = totals["items_watched"] / totals["items_shown"] if totals["items_shown"] else None
        totals["pages_per_session"] = totals["pages"] / totals["sessions"] if totals["sessions"] else None
        totals["churned_users"] = days[-1]["churned_users"] if days else 0
        return {"days": days, "totals": totals}


def _day_stat_day(model: Population) -> int:
    return model.day


def _churned(model: Population) -> int:
    return model.churned_users()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
