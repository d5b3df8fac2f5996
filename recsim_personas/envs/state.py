"""The simulated users' state: one table, a row per user, owned by the population that runs them.

The population is a *vectorised core*, on purpose: every user's state — its rating history (train ratings,
then what it watched), the items it has seen, its session (pages, satisfaction) and its churn state
(unsatisfied sessions in a row, return propensity) — is a row of :class:`UserTable`'s arrays, and one page of
N concurrent sessions is decided by array operations over the N × k slates
(:func:`~recsim_personas.envs.reaction.react_page`). Users as objects that each own their state and decide in
Python were measured against it (``benchmarks/population_design.py``): about as fast for one session, 0.78× at
16 concurrent sessions and 0.40× at 64 — the vector environment's width.

:class:`UserView` is a read-only view of one row, for people inspecting a simulation
(``population.user(user_id).history_items``); it holds no state of its own and decides nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from recsim_personas.envs.world import Traits, World


class UserTable:
    """Every simulated user's mutable state, one row per user (row ``u`` is ``world.user_ids[u]``).

    Built from a :class:`~recsim_personas.envs.world.World`: histories start as the train ratings (oldest
    first), the seen set as the train items; everything else starts empty.

    Attributes:
        hist_items: item indices of the history, int64 (n_users, capacity), left-aligned, -1 past the end.
        hist_ratings: their ratings, int8 (n_users, capacity), 0 past the end.
        hist_len: history length of each user, int64 (n_users,).
        start_len: history length at the start (the train part), int64 (n_users,).
        seen: items each user has rated or watched, bool (n_users, n_items).
        activity, conformity, diversity: trait scores in [0, 1], float64 (n_users,).
        scheduled: a session is scheduled or waiting to be served, bool (n_users,).
        in_session: a session is being served, bool (n_users,).
        pages: pages shown in the current (or last) session, int64 (n_users,).
        session_watches: items watched in the current (or last) session, int64 (n_users,) (the position of the
            ``continue_unit="watch"`` decisions, :func:`~recsim_personas.envs.session.continue_after_page`).
        satisfaction: satisfaction of the current (or last) session, float64 (n_users,).
        unsat_streak: sessions in a row that ended unsatisfied, int64 (n_users,).
        return_prop: factor on the daily session probability, float64 (n_users,) in (0, 1].
    """

    def __init__(self, world: World) -> None:
        n_users, n_items = world.n_users, world.n_items
        lengths = np.array([len(h) for h in world.history_items], dtype=np.int64)
        cap = int(lengths.max(initial=0)) + 64
        self.hist_items = np.full((n_users, cap), -1, dtype=np.int64)
        self.hist_ratings = np.zeros((n_users, cap), dtype=np.int8)
        self.hist_len = lengths.copy()
        self.start_len = lengths
        self.seen = np.zeros((n_users, n_items), dtype=bool)
        for u, (items, ratings) in enumerate(zip(world.history_items, world.history_ratings, strict=True)):
            self.hist_items[u, : len(items)] = items
            self.hist_ratings[u, : len(items)] = ratings
            self.seen[u, items] = True
        self.activity = world.trait_scores[:, 0].copy()
        self.conformity = world.trait_scores[:, 1].copy()
        self.diversity = world.trait_scores[:, 2].copy()
        self.scheduled = np.zeros(n_users, dtype=bool)
        self.in_session = np.zeros(n_users, dtype=bool)
        self.pages = np.zeros(n_users, dtype=np.int64)
        self.session_watches = np.zeros(n_users, dtype=np.int64)
        self.satisfaction = np.zeros(n_users, dtype=np.float64)
        self.unsat_streak = np.zeros(n_users, dtype=np.int64)
        self.return_prop = np.ones(n_users, dtype=np.float64)

    @property
    def n_users(self) -> int:
        return int(self.hist_len.shape[0])

    def record(self, users: np.ndarray, slates: np.ndarray, watched: np.ndarray, ratings: np.ndarray) -> None:
        """Append the watched items (in slate order) to the users' histories and seen sets.

        Args:
            users: distinct user rows, int64 (N,).
            slates: item indices shown, int64 (N, k).
            watched: bool (N, k).
            ratings: int (N, k), the ratings of the watched items.
        """
        n_w = watched.sum(axis=1)
        start = self.hist_len[users]
        self._ensure_capacity(int((start + n_w).max(initial=0)))
        pos = start[:, None] + np.cumsum(watched, axis=1) - 1
        rows = np.broadcast_to(users[:, None], watched.shape)[watched]
        items = slates[watched]
        self.hist_items[rows, pos[watched]] = items
        self.hist_ratings[rows, pos[watched]] = ratings[watched]
        self.hist_len[users] = start + n_w
        self.seen[rows, items] = True

    def _ensure_capacity(self, needed: int) -> None:
        cap = self.hist_items.shape[1]
        if needed <= cap:
            return
        new_cap = max(needed, 2 * cap)
        items = np.full((self.n_users, new_cap), -1, dtype=np.int64)
        ratings = np.zeros((self.n_users, new_cap), dtype=np.int8)
        items[:, :cap], ratings[:, :cap] = self.hist_items, self.hist_ratings
        self.hist_items, self.hist_ratings = items, ratings

    def latest(self, users: np.ndarray, history_len: int) -> tuple[np.ndarray, np.ndarray]:
        """The latest ``history_len`` history entries of ``users``, oldest first, left-padded.

        Returns:
            ``(items, ratings)``: int64 (N, history_len) item indices (-1 = pad) and ratings (0 = pad).
        """
        idx = self.hist_len[users][:, None] - history_len + np.arange(history_len)
        valid = idx >= 0
        idx = np.maximum(idx, 0)
        rows = users[:, None]
        items = np.where(valid, self.hist_items[rows, idx], -1)
        ratings = np.where(valid, self.hist_ratings[rows, idx], 0).astype(np.int64)
        return items, ratings

    def watches(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the users watched in the simulation (their history after the train part), user by user.

        Returns:
            ``(rows, items, ratings)``: int64 arrays of equal length — user rows, item indices and ratings, in
            watch order within each user.
        """
        n_new = self.hist_len - self.start_len
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), n_new)
        cols = np.concatenate([np.arange(s, e) for s, e in zip(self.start_len, self.hist_len, strict=True)])
        cols = cols.astype(np.int64)
        return rows, self.hist_items[rows, cols], self.hist_ratings[rows, cols].astype(np.int64)


class UserView:
    """A read-only view of one simulated user's row of a :class:`UserTable` (it owns and decides nothing).

    Args:
        table: the population's table.
        world: the world it was built from.
        index: the user's row.
        start_probability: the population's rule for today's session probability, ``f(row) -> float``.

    Attributes:
        index: the user's row.
        user_id: its MovieLens user id.
        traits: its :class:`~recsim_personas.envs.world.Traits`.
    """

    def __init__(self, table: UserTable, world: World, index: int, start_probability: Any) -> None:
        self._table, self._world, self._p = table, world, start_probability
        self.index = int(index)
        self.user_id = int(world.user_ids[index])
        self.traits: Traits = world.traits[index]

    @property
    def history_items(self) -> np.ndarray:
        """Item ids the user rated (train) or watched (simulation), oldest first. int64 (n,)."""
        t = self._table
        return self._world.item_ids[t.hist_items[self.index, : t.hist_len[self.index]]]

    @property
    def history_ratings(self) -> np.ndarray:
        """The ratings matching :attr:`history_items`. int64 (n,) in 1..5."""
        t = self._table
        return t.hist_ratings[self.index, : t.hist_len[self.index]].astype(np.int64)

    @property
    def seen_items(self) -> set[int]:
        """Ids of the items the user has rated or watched (never watched again)."""
        return {int(i) for i in self._world.item_ids[np.flatnonzero(self._table.seen[self.index])]}

    @property
    def seen_mask(self) -> np.ndarray:
        """True for each item index the user has seen; a read-only copy, bool (n_items,)."""
        view = self._table.seen[self.index].copy()
        view.flags.writeable = False
        return view

    @property
    def in_session(self) -> bool:
        """Whether the user is in a session now (being served, or scheduled to be)."""
        return bool(self._table.in_session[self.index] or self._table.scheduled[self.index])

    @property
    def session_pages(self) -> int:
        """Pages shown in the current (or last) session."""
        return int(self._table.pages[self.index])

    @property
    def satisfaction(self) -> float:
        """Satisfaction of the current (or last) session, in [-1, 1]."""
        return float(self._table.satisfaction[self.index])

    @property
    def unsatisfied_streak(self) -> int:
        """Sessions in a row that ended unsatisfied."""
        return int(self._table.unsat_streak[self.index])

    @property
    def return_propensity(self) -> float:
        """Factor in (0, 1] on the daily session probability; lowered by unsatisfied sessions."""
        return float(self._table.return_prop[self.index])

    @property
    def start_probability(self) -> float:
        """Probability of starting a session on a day (see :func:`~recsim_personas.envs.session.start_probability`)."""
        return float(self._p(self.index))

    def __repr__(self) -> str:
        return f"UserView(user_id={self.user_id}, history={int(self._table.hist_len[self.index])})"
