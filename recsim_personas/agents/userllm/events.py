"""Interaction histories as event sequences for the user encoder (numpy only).

An *event* is one rating: the movie (its index in the split's items, ascending ids), the rating (1–5) and the
time since the user's previous rating, bucketed (:data:`GAP_EDGES`). The movie's genres and release-year bucket
are looked up from the :class:`ItemTable` inside the encoder, so a sequence is three integer arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.data.protocol import Split

GAP_EDGES: tuple[int, ...] = (60, 600, 3_600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400)
"""Upper edges (seconds) of the time-gap buckets: bucket 1 is a gap under a minute, bucket 2 under ten minutes,
..., bucket ``len(GAP_EDGES) + 1`` a year or more; bucket 0 is a user's first event (no previous one)."""

N_GAP_BUCKETS = len(GAP_EDGES) + 2
YEAR_LOW, YEAR_HIGH = 1900, 2030
"""Release years are clipped to [YEAR_LOW, YEAR_HIGH) before bucketing."""


def gap_buckets(user_rows: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Time-gap bucket of each event.

    Args:
        user_rows: the user of each event, int (n,), events of a user contiguous and in time order.
        timestamps: unix seconds, int (n,).

    Returns:
        int64 (n,): 0 for a user's first event, else ``1 + #edges <= gap`` (see :data:`GAP_EDGES`).
    """
    user_rows = np.asarray(user_rows, dtype=np.int64)
    ts = np.asarray(timestamps, dtype=np.int64)
    out = np.zeros(len(ts), dtype=np.int64)
    if len(ts) > 1:
        same = user_rows[1:] == user_rows[:-1]
        gap = np.maximum(ts[1:] - ts[:-1], 0)
        out[1:] = np.where(same, 1 + np.searchsorted(np.asarray(GAP_EDGES), gap, side="right"), 0)
    return out


def n_year_buckets(width: int) -> int:
    """Number of release-year buckets of ``width`` years (bucket 0 = unknown year)."""
    return 1 + -(-(YEAR_HIGH - YEAR_LOW) // int(width))


def year_buckets(years: np.ndarray, width: int) -> np.ndarray:
    """Release-year bucket of each movie: 0 for a missing year, else ``1 + (year - YEAR_LOW) // width``.

    Args:
        years: float (n,), NaN where unknown.
        width: bucket width in years.

    Returns:
        int64 (n,) in ``[0, n_year_buckets(width))``.
    """
    years = np.asarray(years, dtype=np.float64)
    known = np.isfinite(years)
    clipped = np.clip(np.where(known, years, YEAR_LOW), YEAR_LOW, YEAR_HIGH - 1).astype(np.int64)
    return np.where(known, 1 + (clipped - YEAR_LOW) // int(width), 0)


@dataclass(frozen=True, eq=False)
class ItemTable:
    """The split's movies as the encoder sees them (row ``j`` = the ``j``-th smallest item id).

    Attributes:
        item_ids: int64 (n_items,), ascending.
        genres: genre indicators, float32 (n_items, n_genres).
        year_bucket: int64 (n_items,), see :func:`year_buckets`.
        genre_names: the genres of the columns.
    """

    item_ids: np.ndarray
    genres: np.ndarray
    year_bucket: np.ndarray
    genre_names: tuple[str, ...]

    @classmethod
    def from_split(cls, split: Split, year_width: int) -> ItemTable:
        """The items of ``split`` with release years bucketed ``year_width`` years wide."""
        import pandas as pd

        items = split.items.sort_values("item_id", kind="mergesort").reset_index(drop=True)
        names = sorted({g for gs in items["genres"] for g in gs})
        col = {g: k for k, g in enumerate(names)}
        genres = np.zeros((len(items), len(names)), dtype=np.float32)
        for j, gs in enumerate(items["genres"]):
            genres[j, [col[g] for g in gs]] = 1.0
        years = pd.to_numeric(items["year"], errors="coerce").astype("float64").to_numpy()
        return cls(
            item_ids=items["item_id"].to_numpy(dtype=np.int64),
            genres=genres,
            year_bucket=year_buckets(years, year_width),
            genre_names=tuple(names),
        )

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def to_dict(self) -> dict[str, list]:
        """The table as JSON lists (what the encoder and agent artifacts store)."""
        return {
            "item_ids": self.item_ids.tolist(),
            "item_genres": self.genres.astype(int).tolist(),
            "item_year_bucket": self.year_bucket.tolist(),
            "genre_names": list(self.genre_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> ItemTable:
        """The table of :meth:`to_dict`'s lists."""
        return cls(
            item_ids=np.asarray(d["item_ids"], dtype=np.int64),
            genres=np.asarray(d["item_genres"], dtype=np.float32),
            year_bucket=np.asarray(d["item_year_bucket"], dtype=np.int64),
            genre_names=tuple(d["genre_names"]),
        )

    def rows(self, item_ids: np.ndarray, *, where: str = "ratings") -> np.ndarray:
        """Item rows of ``item_ids`` (int64 (n,)).

        Raises:
            ConfigError: an id that is not one of the split's items (named, with ``where``).
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        rows = np.searchsorted(self.item_ids, ids)
        bad = (rows >= len(self.item_ids)) | (self.item_ids[np.minimum(rows, len(self.item_ids) - 1)] != ids)
        if bad.any():
            raise ConfigError(
                f"{where}: item_id {int(ids[bad][0])!r} is not one of the split's {len(self.item_ids)} items."
                " Fix: use ratings of the split the encoder was built for."
            )
        return rows


@dataclass(frozen=True, eq=False)
class Histories:
    """Users' latest events, left-aligned and padded on the right.

    Attributes:
        user_ids: int64 (U,), ascending.
        items: item rows, int64 (U, L), -1 past a history's end.
        ratings: int64 (U, L) in 1..5, 0 past the end.
        gaps: time-gap buckets, int64 (U, L), 0 past the end (and at a user's very first event).
        lengths: events kept per user, int64 (U,), each in ``[1, L]``.
    """

    user_ids: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    gaps: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, rows: np.ndarray) -> Histories:
        """The histories of user rows ``rows`` (int (n,)), trimmed to their longest length."""
        rows = np.asarray(rows, dtype=np.int64)
        width = max(int(self.lengths[rows].max(initial=1)), 1)
        return Histories(
            user_ids=self.user_ids[rows],
            items=self.items[rows, :width],
            ratings=self.ratings[rows, :width],
            gaps=self.gaps[rows, :width],
            lengths=self.lengths[rows],
        )


def histories(ratings: pd.DataFrame, items: ItemTable, max_len: int, *, where: str = "ratings") -> Histories:
    """Each user's latest ``max_len`` events from a ratings frame.

    Args:
        ratings: ``user_id``, ``item_id``, ``rating`` (1–5), ``timestamp`` (unix seconds).
        items: the split's items.
        max_len: events kept per user (its latest); the time gap of the first kept event is the real gap to the
            event before it.
        where: how error messages name ``ratings``.

    Raises:
        ConfigError: a missing column, a rating outside 1–5, or an unknown item.
    """
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in ratings.columns]
    if missing:
        raise ConfigError(f"{where}: missing column(s) {missing!r}; expected user_id, item_id, rating, timestamp.")
    if max_len < 1:
        raise ConfigError(f"max_len must be >= 1, got {max_len!r}.")
    r = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    values = r["rating"].to_numpy()
    bad = ~np.isin(values, [1, 2, 3, 4, 5])
    if bad.any():
        raise ConfigError(
            f"{where}: rating {values[bad][0].item()!r} is not one of 1-5. Fix: use MovieLens star ratings."
        )
    user_ids, user_rows = np.unique(r["user_id"].to_numpy(dtype=np.int64), return_inverse=True)
    item_rows = items.rows(r["item_id"].to_numpy(), where=where)
    gaps = gap_buckets(user_rows, r["timestamp"].to_numpy(dtype=np.int64))
    counts = np.bincount(user_rows, minlength=len(user_ids))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lengths = np.minimum(counts, max_len)
    # keep the latest `lengths[u]` events of each user
    position = np.arange(len(r)) - starts[user_rows]
    first_kept = counts - lengths
    keep = position >= first_kept[user_rows]
    col = (position - first_kept[user_rows])[keep]
    row = user_rows[keep]
    width = int(lengths.max(initial=1))
    out_items = np.full((len(user_ids), width), -1, dtype=np.int64)
    out_ratings = np.zeros((len(user_ids), width), dtype=np.int64)
    out_gaps = np.zeros((len(user_ids), width), dtype=np.int64)
    out_items[row, col] = item_rows[keep]
    out_ratings[row, col] = values[keep].astype(np.int64)
    out_gaps[row, col] = gaps[keep]
    return Histories(user_ids=user_ids, items=out_items, ratings=out_ratings, gaps=out_gaps, lengths=lengths)
