"""Trait statistics of each sampled user, computed from the train part of a split.

Three traits, each kept as a number and mapped to three levels by percentiles over the split's users
(cut-offs at the 33⅓ and 66⅔ percentiles, stored with the result so they can be shown and reused):

- **activity** — the number of train ratings. Levels ``low`` / ``medium`` / ``high``.
- **conformity** — the mean squared deviation of the user's ratings from the items' historical averages
  (``items.hist_avg_rating``, which excludes test ratings). A *small* deviation means the user agrees with
  the crowd, so the level is ``high`` below the lower cut-off and ``low`` above the upper one.
- **diversity** — how many genres cover 80% of the user's genre share (each rated item spreads one unit
  evenly over its genres; genres are counted from the largest share down until 80% is reached): the
  number of the user's :func:`top_genres`.
  Levels ``low`` / ``medium`` / ``high``.

Each trait also gets a ``*_score`` in [0, 1]: the user's percentile rank among the split's users (for
conformity, ranked so that 1 = most conformist). Simulation code uses the scores; prompts use the levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Level = Literal["low", "medium", "high"]
TRAITS = ("activity", "conformity", "diversity")
COVERAGE = 0.8


@dataclass(frozen=True)
class TraitCutoffs:
    """Percentile cut-offs (lower, upper) of each trait's numeric value over the split's users."""

    activity: tuple[float, float]
    conformity: tuple[float, float]
    diversity: tuple[float, float]

    def to_dict(self) -> dict[str, list[float]]:
        return {t: list(getattr(self, t)) for t in TRAITS}


def genre_share(train: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Per-user share of each genre: a (n_users × n_genres) frame whose rows sum to 1.

    Each rated item spreads one unit evenly over its genres (the placeholder genre ``unknown`` counts
    as a genre only when an item has nothing else).
    """
    genres = items.set_index("item_id")["genres"]
    g = train[["user_id", "item_id"]].copy()
    g["genre"] = g["item_id"].map(genres).map(lambda gs: [x for x in gs if x != "unknown"] or ["unknown"])
    g = g.explode("genre")
    g["w"] = 1.0 / g.groupby(["user_id", "item_id"])["genre"].transform("size")
    share = g.pivot_table(index="user_id", columns="genre", values="w", aggfunc="sum", fill_value=0.0)
    return share.div(share.sum(axis=1), axis=0)


def top_genres(shares: pd.DataFrame, coverage: float = COVERAGE) -> pd.Series:
    """Each user's top genres: the fewest genres, largest share first, whose shares reach ``coverage``.

    Genres are ordered by share, largest first; equal shares keep the order of the columns of ``shares``
    (a stable sort). The top genres are the first ones whose running sum reaches ``coverage`` (with a
    ``1e-12`` tolerance for rounding), without genres of zero share. Their number is the user's *diversity*.

    Args:
        shares: per-user genre shares, (n_users × n_genres) with rows summing to 1, as :func:`genre_share`
            returns (index ``user_id``, columns the genre names in ascending order).
        coverage: the share the top genres must cover (default: :data:`COVERAGE`, 80%).

    Returns:
        a Series indexed like ``shares`` whose values are tuples of genre names (``str``), largest share first.
    """
    values = shares.to_numpy(dtype=np.float64)
    order = np.argsort(-values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    counts = (np.cumsum(ordered, axis=1) < coverage - 1e-12).sum(axis=1) + 1
    names = np.asarray(shares.columns, dtype=object)
    top = [
        tuple(str(names[j]) for j, share in zip(idx[:n], row[:n], strict=True) if share > 0)
        for idx, row, n in zip(order, ordered, counts, strict=True)
    ]
    return pd.Series(top, index=shares.index, dtype=object, name="top_genres")


def _levels(values: pd.Series, cut: tuple[float, float], high_is_low: bool = False) -> pd.Series:
    lo, hi = cut
    names = np.array(["high", "medium", "low"] if high_is_low else ["low", "medium", "high"], dtype=object)
    idx = np.where(values <= lo, 0, np.where(values <= hi, 1, 2))
    return pd.Series(names[idx], index=values.index)


def compute_traits(train: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, TraitCutoffs]:
    """Numeric traits, levels and scores for every user in ``train``.

    Args:
        train: the split's train ratings (``user_id``, ``item_id``, ``rating``).
        items: the split's items (``item_id``, ``genres``, ``hist_avg_rating``).

    Returns:
        (frame, cutoffs): ``frame`` has one row per user (ascending ``user_id``) with columns
        ``activity`` (int), ``conformity`` (float, mean squared deviation), ``diversity`` (int), the three
        ``*_level`` columns and the three ``*_score`` columns in [0, 1].
    """
    hist = items.set_index("item_id")["hist_avg_rating"]
    avg = train["item_id"].map(hist)
    dev = (train["rating"].astype(np.float64) - avg.fillna(train["rating"].mean())) ** 2
    by_user = train.assign(dev=dev).groupby("user_id")
    frame = pd.DataFrame(
        {
            "activity": by_user.size().astype("int64"),
            "conformity": by_user["dev"].mean().astype("float64"),
        }
    )
    frame["diversity"] = top_genres(genre_share(train, items)).map(len).astype("int64")
    cut = TraitCutoffs(
        **{t: tuple(float(x) for x in np.percentile(frame[t], [100 / 3, 200 / 3])) for t in TRAITS}  # type: ignore[arg-type]
    )
    for t in TRAITS:
        frame[f"{t}_level"] = _levels(frame[t], getattr(cut, t), high_is_low=(t == "conformity"))
        rank = frame[t].rank(pct=True, method="average")
        frame[f"{t}_score"] = (1.0 - rank + 1.0 / len(frame)) if t == "conformity" else rank
    frame.index.name = "user_id"
    return frame.reset_index().sort_values("user_id").reset_index(drop=True), cut


# One sentence per (trait, level), in the second person, used in Ms and in the agent prompt.
TRAIT_SENTENCES: dict[str, dict[str, str]] = {
    "activity": {
        "low": "You watch movies only now and then, and only when a title clearly matches your taste.",
        "medium": "You watch movies fairly regularly and give new recommendations a fair chance.",
        "high": "You are an avid viewer who watches and rates a great many movies.",
    },
    "conformity": {
        "high": "Your ratings tend to agree with the crowd: a movie's reputation weighs on your verdict.",
        "medium": "You balance a movie's reputation against your own taste when you rate it.",
        "low": "You rate by your own lights and often disagree with the popular verdict.",
    },
    "diversity": {
        "low": "You stick to a few favourite genres.",
        "medium": "You mostly watch your favourite genres but step outside them from time to time.",
        "high": "You range widely across genres and like discovering unfamiliar kinds of movies.",
    },
}
