"""Implicit feedback: what stands in for the rating values and timestamps a rating-free interaction file lacks.

The ``ml-1m-implicit`` dataset is ML-1M's 1,000,209 (user, movie) pairs without rating values or timestamps
(the local copy is ``interactions_user_movie.csv.gz``; from the official ``ml-1m.zip`` the values and
timestamps of ``ratings.dat`` are dropped). Everything downstream (the protocol split, the raters, the choice
model, the environment) reads a ratings frame, so :func:`implicit_ratings` fills the two missing columns:

- **rating** — :data:`IMPLICIT_RATING` (4) for every pair: "watched and kept", the lowest level that counts as
  a like (``SessionConfig.like_threshold``). Consequences, all by construction: every historical average
  rating is 4.0; a classical rater fitted on these ratings predicts 4 with (nearly) all its mass; in
  simulation every watch is a like, so ``likes`` and ``watches`` rewards agree and the rating-fidelity figures
  (RMSE, MAE) say nothing. What carries information is *which* movies a user watched: the choice model,
  fitted on the held-out next movies against unwatched ones, decides the watches.
- **timestamp** — the row's position in the file, one second per row from :data:`IMPLICIT_EPOCH`
  (2000-12-31 00:00 UTC; ML-1M's users joined MovieLens in 2000). Within a user the file keeps the order of
  the original ``ratings.dat``, which is *not* time order, so the protocol's "temporal" 60:40 split becomes a
  split by file order, and time features (a movie's recent trend, its age at the reference day) are computed
  on this pseudo-time: they are defined but carry no real signal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

IMPLICIT_RATING = 4
"""The rating every implicit interaction is given (see the module docstring)."""

IMPLICIT_EPOCH = 978_220_800
"""Unix time of 2000-12-31 00:00 UTC: the pseudo-timestamp of a file's first row."""


def implicit_ratings(pairs: pd.DataFrame) -> pd.DataFrame:
    """A ratings frame (``user_id``, ``item_id``, ``rating`` int8, ``timestamp`` int64) from (user, item) pairs
    in file order, with the stand-ins of the module docstring."""
    n = len(pairs)
    return pd.DataFrame(
        {
            "user_id": pairs["user_id"].to_numpy(dtype=np.int64),
            "item_id": pairs["item_id"].to_numpy(dtype=np.int64),
            "rating": np.full(n, IMPLICIT_RATING, dtype=np.int8),
            "timestamp": IMPLICIT_EPOCH + np.arange(n, dtype=np.int64),
        }
    )
