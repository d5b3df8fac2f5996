"""The choice model's features of a (user, item) pair, computed the same way when fitting and when simulating.

Every feature is a function of what the user has rated so far (its history, which grows as the simulation
adds watches), of the item, and of the rater's expected rating. With ``h`` the user's history (item indices,
oldest first), ``B`` the EASE weights (:mod:`.ease`) and ``d_u`` the day of the user's latest rating in the
logs (its *reference day*):

============================ ================================================================================
``ease``                     ``Σ_{i in h} B[i, j]``: the collaborative "would this user pick it" score
``ease_recent``              the same over the ``recent_items`` latest entries of ``h`` (what the user is on now)
``log_popularity``           ``log(1 + ratings of j in the history)``
``trend``                    ``log(1 + ratings of j in the trend_days days up to d_u)``: what was being
                             watched when the user was last active (never a rating after ``d_u``)
``age``, ``log_age``         the movie's age in years on ``d_u``, clipped to [-1, 60]; ``log(1 + max(age, 0))``
``expected_rating``          the rater's expected rating of ``j`` for the user
``genre_match``              the user's genre shares (of its logged ratings) summed over ``j``'s genres,
                             divided by ``j``'s number of genres
``activity``, ``conformity``, the user's trait scores in [0, 1]
``diversity``
``conformity_x_popularity``  ``conformity · log_popularity``
``diversity_x_genre_match``  ``diversity · genre_match``
============================ ================================================================================

A user's reference day, genre shares and traits come from its logged ratings and stay fixed during a
simulation; ``ease`` and ``ease_recent`` follow the simulated watches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES: tuple[str, ...] = (
    "ease",
    "ease_recent",
    "log_popularity",
    "trend",
    "age",
    "log_age",
    "expected_rating",
    "genre_match",
    "activity",
    "conformity",
    "diversity",
    "conformity_x_popularity",
    "diversity_x_genre_match",
)
"""The feature names, in column order."""

SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True, eq=False)
class ItemSide:
    """What the features need of the items (indexed by item index: the split's items by ascending id).

    Attributes:
        ease: EASE weights with an extra zero row (index -1 = padding), float32 (n_items + 1, n_items).
        log_popularity: float64 (n_items,).
        daily_counts: cumulative ratings per item before each day, int32 (n_items, n_days + 1):
            ``daily_counts[j, t]`` = ratings of ``j`` on days ``first_day .. first_day + t - 1``.
        first_day: the day (unix days) of column 1 of ``daily_counts``.
        year: release year of each item (missing years filled with the median), float64 (n_items,).
        genres: genre indicators, float64 (n_items, n_genres).
        recent_items: see :class:`~recsim_personas.choice.config.ChoiceConfig`.
        trend_days: see :class:`~recsim_personas.choice.config.ChoiceConfig`.
    """

    ease: np.ndarray
    log_popularity: np.ndarray
    daily_counts: np.ndarray
    first_day: int
    year: np.ndarray
    genres: np.ndarray
    recent_items: int
    trend_days: int


@dataclass(frozen=True, eq=False)
class UserSide:
    """What the features need of the users (indexed by user row).

    Attributes:
        ref_day: the day (unix days) of each user's latest logged rating, int64 (n_users,).
        genre_share: each user's share of each genre over its logged ratings, float64 (n_users, n_genres),
            rows summing to 1 (0 for a user without ratings).
        traits: ``[activity, conformity, diversity]`` scores, float64 (n_users, 3).
        hist_items: item indices of each history, int64 (n_users, capacity), left-aligned, -1 past the end.
        hist_len: history lengths, int64 (n_users,).
    """

    ref_day: np.ndarray
    genre_share: np.ndarray
    traits: np.ndarray
    hist_items: np.ndarray
    hist_len: np.ndarray


def item_genre_matrix(genre_bits: np.ndarray, n_genres: int) -> np.ndarray:
    """Genre bitmasks int64 (n,) → indicators float64 (n, n_genres)."""
    bits = np.asarray(genre_bits, dtype=np.int64)
    return ((bits[:, None] >> np.arange(n_genres, dtype=np.int64)[None, :]) & 1).astype(np.float64)


def daily_counts(items: np.ndarray, days: np.ndarray, n_items: int) -> tuple[np.ndarray, int]:
    """Cumulative ratings per item per day, for ``trend``.

    Args:
        items: item index of each rating, int (n,).
        days: day (unix days) of each rating, int (n,).
        n_items: number of items.

    Returns:
        ``(counts, first_day)``: int32 (n_items, n_days + 1) as :attr:`ItemSide.daily_counts`, and the first day.
    """
    items = np.asarray(items, dtype=np.int64)
    days = np.asarray(days, dtype=np.int64)
    if days.size == 0:
        return np.zeros((n_items, 1), dtype=np.int32), 0
    first = int(days.min())
    n_days = int(days.max()) - first + 1
    grid = np.zeros((n_items, n_days + 1), dtype=np.int64)
    np.add.at(grid, (items, days - first + 1), 1)
    return np.cumsum(grid, axis=1).astype(np.int32), first


def feature_matrix(
    items_side: ItemSide, users_side: UserSide, users: np.ndarray, items: np.ndarray, expected: np.ndarray
) -> np.ndarray:
    """The features of (user, item) pairs.

    Args:
        items_side: the item arrays.
        users_side: the user arrays (histories as they are now).
        users: user rows, int64 (P,).
        items: item indices, int64 (P,).
        expected: the rater's expected rating of each pair, float64 (P,).

    Returns:
        float64 (P, len(FEATURES)), columns in :data:`FEATURES` order.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    s, u = items_side, users_side
    hist = u.hist_items[users]  # (P, cap), -1 padding → the zero row of s.ease
    ease = s.ease[hist, items[:, None]].sum(axis=1, dtype=np.float64)
    lengths = u.hist_len[users]
    offsets = lengths[:, None] - s.recent_items + np.arange(s.recent_items)[None, :]
    recent = np.where(offsets >= 0, np.take_along_axis(hist, np.maximum(offsets, 0), axis=1), -1)
    ease_recent = s.ease[recent, items[:, None]].sum(axis=1, dtype=np.float64)
    log_pop = s.log_popularity[items]
    n_cols = s.daily_counts.shape[1]
    end = np.clip(u.ref_day[users] - s.first_day + 1, 0, n_cols - 1)
    start = np.clip(end - s.trend_days, 0, n_cols - 1)
    trend = np.log1p((s.daily_counts[items, end] - s.daily_counts[items, start]).astype(np.float64))
    user_year = 1970.0 + u.ref_day[users] / DAYS_PER_YEAR
    age = np.clip(user_year - s.year[items], -1.0, 60.0)
    log_age = np.log1p(np.maximum(age, 0.0))
    g = s.genres[items]
    genre_match = (u.genre_share[users] * g).sum(axis=1) / np.maximum(g.sum(axis=1), 1.0)
    traits = u.traits[users]
    return np.column_stack(
        [
            ease,
            ease_recent,
            log_pop,
            trend,
            age,
            log_age,
            np.asarray(expected, dtype=np.float64),
            genre_match,
            traits,
            traits[:, 1] * log_pop,
            traits[:, 2] * genre_match,
        ]
    )


def genre_shares(user_rows: np.ndarray, item_rows: np.ndarray, genres: np.ndarray, n_users: int) -> np.ndarray:
    """Each user's genre shares over its ratings.

    Args:
        user_rows: user row of each rating, int (n,).
        item_rows: item index of each rating, int (n,).
        genres: genre indicators of the items, float64 (n_items, n_genres).
        n_users: number of user rows.

    Returns:
        float64 (n_users, n_genres), rows summing to 1 (all 0 for a user without ratings).
    """
    totals = np.zeros((n_users, genres.shape[1]), dtype=np.float64)
    np.add.at(totals, np.asarray(user_rows, dtype=np.int64), genres[np.asarray(item_rows, dtype=np.int64)])
    return totals / np.maximum(totals.sum(axis=1, keepdims=True), 1e-12)


def padded_histories(user_rows: np.ndarray, item_rows: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Histories as padded arrays.

    Args:
        user_rows: user row of each rating, int (n,), ratings of a user in time order.
        item_rows: item index of each rating, int (n,).
        n_users: number of user rows.

    Returns:
        ``(hist_items, hist_len)``: int64 (n_users, max length) left-aligned with -1 padding, int64 (n_users,).
    """
    user_rows = np.asarray(user_rows, dtype=np.int64)
    lengths = np.bincount(user_rows, minlength=n_users).astype(np.int64)
    hist = np.full((n_users, max(int(lengths.max(initial=0)), 1)), -1, dtype=np.int64)
    order = np.argsort(user_rows, kind="stable")
    rows = user_rows[order]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    cols = np.arange(rows.size) - starts[rows]
    hist[rows, cols] = np.asarray(item_rows, dtype=np.int64)[order]
    return hist, lengths
