"""Fitting the choice model on the logs: :func:`fit_choice`.

**Positives** are what users rated next: the last ``holdout_share`` of each history user's ratings by time
(the split's history = the sampled users' train part + the background users; never a test rating), at most
``max_positives_per_user`` per user. Everything the features are computed from at fitting time — the EASE
weights, the popularity and trend counts, the bias rater of ``expected_rating``, the genre shares and the
traits — sees only the earlier part, so a positive is a real "next" choice the features did not see.

**Negatives** are sampled exposures: the logs record what users rated, never what they were shown and passed
over, so non-choices have to be sampled. By default (``negative_sampling="uniform"``) they are movies the user
never rated in the history, drawn uniformly — the same exposure as the preference-alignment test of the
fidelity suite (a user's real next movies among random ones), which makes the fitted probability calibrated
for it; ``"popularity"`` draws them in proportion to their ratings (harder negatives: popularity alone then
separates less). ``negatives_per_positive`` per positive.

**Form**: a logistic regression (scikit-learn, maximum likelihood with a small L2 penalty) on the
standardised features of :mod:`.features`. A share of the users (``validation_share``) is kept out of the fit;
on their choices the fitted model and the hand-set formula are scored side by side (mean log-likelihood,
ROC-AUC, accuracy at 0.5).

**Deployment**: after the fit, the item side is rebuilt from the whole history (EASE weights, popularity,
trend counts), the way the simulation and the fidelity suite see the sampled users (their whole train part
as history).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsim_personas.choice.config import ChoiceConfig
from recsim_personas.choice.ease import fit_ease
from recsim_personas.choice.features import (
    FEATURES,
    SECONDS_PER_DAY,
    ItemSide,
    UserSide,
    daily_counts,
    feature_matrix,
    genre_shares,
    padded_histories,
)
from recsim_personas.choice.model import FittedChoice
from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split

logger = logging.getLogger(__name__)

_CHUNK = 4096


def split_items(split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The split's items as the world orders them.

    Returns:
        ``(item_ids, genres, year, names)``: int64 (n_items,) ascending; genre indicators float64
        (n_items, n_genres) in the world's genre order; release years float64 (n_items,), missing ones filled
        with the median; the genre names of the columns (sorted, ``unknown`` only for items without another
        genre).
    """
    items = split.items.sort_values("item_id", kind="mergesort").reset_index(drop=True)
    item_ids = items["item_id"].to_numpy(dtype=np.int64)
    lists = [[g for g in gs if g != "unknown"] or ["unknown"] for gs in items["genres"]]
    names = sorted({g for gs in lists for g in gs})
    col = {g: k for k, g in enumerate(names)}
    genres = np.zeros((len(item_ids), len(names)), dtype=np.float64)
    for j, gs in enumerate(lists):
        genres[j, [col[g] for g in gs]] = 1.0
    year = pd.to_numeric(items["year"], errors="coerce").astype("float64")
    year = year.fillna(year.median() if year.notna().any() else 1990.0).to_numpy()
    return item_ids, genres, year, names


def item_side(
    ratings: pd.DataFrame, item_ids: np.ndarray, genres: np.ndarray, year: np.ndarray, config: ChoiceConfig
) -> ItemSide:
    """The item arrays of the features, from ``ratings`` (``user_id``, ``item_id``, ``timestamp``)."""
    rows = pd.factorize(ratings["user_id"], sort=True)[0]
    cols = np.searchsorted(item_ids, ratings["item_id"].to_numpy(dtype=np.int64))
    x = np.zeros((int(rows.max(initial=-1)) + 1, len(item_ids)), dtype=np.float32)
    x[rows, cols] = 1.0
    ease = fit_ease(x, config.ease_l2)
    ease = np.vstack([ease, np.zeros((1, len(item_ids)), dtype=np.float32)])
    counts, first = daily_counts(cols, ratings["timestamp"].to_numpy(dtype=np.int64) // SECONDS_PER_DAY, len(item_ids))
    return ItemSide(
        ease=ease,
        log_popularity=np.log1p(x.sum(axis=0).astype(np.float64)),
        daily_counts=counts,
        first_day=first,
        year=year,
        genres=genres,
        recent_items=config.recent_items,
        trend_days=config.trend_days,
    )


def user_side(
    ratings: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, genres: np.ndarray, traits: np.ndarray
) -> UserSide:
    """The user arrays of the features, from each user's ``ratings`` (its history, sorted by time).

    Args:
        ratings: ``user_id``, ``item_id``, ``timestamp`` of the users' logged ratings.
        user_ids: the users, int64 (n_users,), ascending (row ``u`` is ``user_ids[u]``).
        item_ids: the items, int64 (n_items,), ascending.
        genres: the items' genre indicators, float64 (n_items, n_genres).
        traits: ``[activity, conformity, diversity]`` scores, float64 (n_users, 3).
    """
    r = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    rows = np.searchsorted(user_ids, r["user_id"].to_numpy(dtype=np.int64))
    cols = np.searchsorted(item_ids, r["item_id"].to_numpy(dtype=np.int64))
    hist, lengths = padded_histories(rows, cols, len(user_ids))
    last = r.groupby("user_id")["timestamp"].max().reindex(user_ids)
    ref_day = (last.fillna(last.max() if last.notna().any() else 0).to_numpy(dtype=np.int64)) // SECONDS_PER_DAY
    return UserSide(
        ref_day=ref_day,
        genre_share=genre_shares(rows, cols, genres, len(user_ids)),
        traits=np.asarray(traits, dtype=np.float64),
        hist_items=hist,
        hist_len=lengths,
    )


def features_chunked(
    items: ItemSide, users_side: UserSide, users: np.ndarray, item_rows: np.ndarray, expected: np.ndarray
) -> np.ndarray:
    """:func:`~recsim_personas.choice.features.feature_matrix` in chunks (bounded memory for long histories)."""
    parts = [
        feature_matrix(items, users_side, users[a : a + _CHUNK], item_rows[a : a + _CHUNK], expected[a : a + _CHUNK])
        for a in range(0, len(users), _CHUNK)
    ]
    return np.vstack(parts) if parts else np.zeros((0, len(FEATURES)))


def sample_negatives(
    users: np.ndarray,
    counts: np.ndarray,
    rated: np.ndarray,
    weights: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[k]`` distinct items for user row ``users[k]`` among those it never rated.

    Args:
        users: user rows, int64 (n,).
        counts: negatives per user, int64 (n,).
        rated: True where a user rated an item, bool (n_user_rows, n_items).
        weights: item sampling weights float64 (n_items,) (``None`` = uniform).
        rng: the generator.

    Returns:
        ``(user_rows, item_rows)``, int64 (sum(counts),) each.
    """
    out_u, out_i = [], []
    for u, n in zip(users.tolist(), counts.tolist(), strict=True):
        allowed = np.flatnonzero(~rated[u])
        n = min(int(n), allowed.size)
        if n == 0:
            continue
        p = None
        if weights is not None:
            p = weights[allowed] / weights[allowed].sum()
        out_i.append(rng.choice(allowed, size=n, replace=False, p=p))
        out_u.append(np.full(n, u, dtype=np.int64))
    if not out_u:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_u), np.concatenate(out_i).astype(np.int64)


def handset_probability(
    expected: np.ndarray,
    hist_avg: np.ndarray,
    genres: np.ndarray,
    top_genres: np.ndarray,
    traits: np.ndarray,
) -> np.ndarray:
    """The hand-set formula's P(watch) of pairs (default :class:`~recsim_personas.envs.session.SessionConfig`).

    Args:
        expected: expected ratings float64 (P,); hist_avg: the items' average ratings float64 (P,);
        genres: the items' genre indicators (P, n_genres); top_genres: the users' top-genre indicators
        (P, n_genres); traits: the users' trait scores (P, 3).
    """
    from recsim_personas.envs.session import SessionConfig, watch_probability

    off_taste = (genres * top_genres).sum(axis=1) == 0
    return watch_probability(expected, hist_avg, off_taste, False, traits[:, 1], traits[:, 2], SessionConfig())


def log_likelihood(p: np.ndarray, y: np.ndarray) -> float:
    """Mean Bernoulli log-likelihood of labels ``y`` (0/1) under probabilities ``p`` (clipped to [1e-6, 1-1e-6])."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    return {
        "log_likelihood": log_likelihood(p, y),
        "roc_auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "accuracy": float(((p > 0.5) == (y > 0.5)).mean()) if len(y) else float("nan"),
    }


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """The labelled choices :func:`fit_choice` fits on (see the module docstring), and what they came from.

    Attributes:
        x: the features of every (user, item) pair, float64 (P, len(FEATURES)), from the earlier part only.
        y: 1 for a positive (a held-out next choice), 0 for a sampled negative, float64 (P,).
        is_valid: True for the pairs of the validation users, bool (P,).
        users: user rows of the pairs (into ``user_ids``), int64 (P,); items: item indices, int64 (P,).
        expected: the bias rater's expected rating of each pair (fitted on the earlier part), float64 (P,).
        user_ids, item_ids: int64, ascending; traits: the users' trait scores (n_users, 3) from the earlier part.
        known: the earlier part of the history (``user_id``, ``item_id``, ``rating``, ``timestamp``).
        history: the whole history, sorted by user and time.
        genres, year, genre_names: as :func:`split_items` returns them.
        n_validation_users: users kept out of the fit.
    """

    x: np.ndarray
    y: np.ndarray
    is_valid: np.ndarray
    users: np.ndarray
    items: np.ndarray
    expected: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    traits: np.ndarray
    known: pd.DataFrame
    history: pd.DataFrame
    genres: np.ndarray
    year: np.ndarray
    genre_names: list[str]
    n_validation_users: int


def training_set(split: Split, config: ChoiceConfig | None = None) -> TrainingSet:
    """The positives, sampled negatives and their features of a split's history (see the module docstring).

    Raises:
        ConfigError: the history is too small to hold out choices from.
    """
    from recsim_personas.agents.classical import make_rater, temporal_holdout
    from recsim_personas.agents.rater import RATINGS
    from recsim_personas.personas.traits import compute_traits

    config = config or ChoiceConfig()
    rng = np.random.default_rng(config.seed)
    item_ids, genres, year, genre_names = split_items(split)
    history = split.history().sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    history = history.reset_index(drop=True)
    held = temporal_holdout(history, config.holdout_share)
    known, nxt = history[~held], history[held]
    if len(known) == 0 or len(nxt) == 0:
        raise ConfigError(
            f"the split's history ({len(history)} ratings) is too small to hold out next choices from."
            " Fix: use a split with more ratings per user."
        )
    user_ids = np.unique(known["user_id"].to_numpy(dtype=np.int64))
    nxt = nxt.groupby("user_id", sort=True).head(config.max_positives_per_user)

    # Everything the features see at fitting time: the earlier part only.
    items_fit = item_side(known, item_ids, genres, year, config)
    traits_frame, _ = compute_traits(known, split.items)
    traits_frame = traits_frame.set_index("user_id").reindex(user_ids)
    traits = traits_frame[["activity_score", "conformity_score", "diversity_score"]].to_numpy(dtype=np.float64)
    users_fit = user_side(known, user_ids, item_ids, genres, traits)
    rater = make_rater("bias").fit(known)

    pos_u = np.searchsorted(user_ids, nxt["user_id"].to_numpy(dtype=np.int64))
    pos_i = np.searchsorted(item_ids, nxt["item_id"].to_numpy(dtype=np.int64))
    # every history user keeps at least one earlier rating (temporal_holdout), so every one has a row
    rated = np.zeros((len(user_ids), len(item_ids)), dtype=bool)
    h_rows = np.searchsorted(user_ids, history["user_id"].to_numpy(dtype=np.int64))
    rated[h_rows, np.searchsorted(item_ids, history["item_id"].to_numpy(dtype=np.int64))] = True
    per_user = np.bincount(pos_u, minlength=len(user_ids)) * config.negatives_per_positive
    weights = None if config.negative_sampling == "uniform" else np.exp(items_fit.log_popularity)  # 1 + count
    neg_u, neg_i = sample_negatives(np.arange(len(user_ids)), per_user, rated, weights, rng)

    users = np.concatenate([pos_u, neg_u])
    items = np.concatenate([pos_i, neg_i])
    y = np.concatenate([np.ones(len(pos_u)), np.zeros(len(neg_u))])
    expected = rater.predict(user_ids[users], item_ids[items]) @ RATINGS
    x = features_chunked(items_fit, users_fit, users, items, expected)
    valid_users = rng.random(len(user_ids)) < config.validation_share
    return TrainingSet(
        x=x,
        y=y,
        is_valid=valid_users[users],
        users=users,
        items=items,
        expected=expected,
        user_ids=user_ids,
        item_ids=item_ids,
        traits=traits,
        known=known,
        history=history,
        genres=genres,
        year=year,
        genre_names=genre_names,
        n_validation_users=int(valid_users.sum()),
    )


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale, float64 (n_features,) each: the standard deviation, or 1 for a constant feature.

    "Constant" is relative: a column of 4.0s summed over 10^5 rows has a standard deviation of rounding error
    (~1e-12, as the expected rating on implicit data, where every rating is 4); dividing by it would blow any later
    deviation of that feature up into a saturated watch probability.
    """
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-8 * np.maximum(1.0, np.abs(mean)), scale, 1.0)


def fit_choice(split: Split, config: ChoiceConfig | None = None) -> FittedChoice:
    """Fit the choice model on a split's history (see the module docstring).

    Args:
        split: a loaded protocol split.
        config: fitting settings (default :class:`~recsim_personas.choice.config.ChoiceConfig`).

    Returns:
        the fitted model, its item side built from the whole history; ``report`` holds the counts, the
        coefficients and the validation scores of the fitted model and of the hand-set formula.

    Raises:
        ConfigError: the history is too small to hold out choices from.
    """
    from sklearn.linear_model import LogisticRegression

    from recsim_personas.personas.traits import genre_share, top_genres

    config = config or ChoiceConfig()
    started = time.perf_counter()
    data = training_set(split, config)
    x, y, is_valid, users, items = data.x, data.y, data.is_valid, data.users, data.items
    known, user_ids, item_ids, genres = data.known, data.user_ids, data.item_ids, data.genres

    mean, scale = standardisation(x[~is_valid])
    clf = LogisticRegression(C=config.c, max_iter=5000)
    clf.fit((x[~is_valid] - mean) / scale, y[~is_valid])
    coef = clf.coef_[0].astype(np.float64)
    intercept = float(clf.intercept_[0])
    z = intercept + ((x - mean) / scale) @ coef
    p_fitted = 1.0 / (1.0 + np.exp(-z))

    # The hand-set formula on the same validation choices, from the same earlier part of the logs.
    hist_avg = known.groupby("item_id")["rating"].mean().reindex(item_ids)
    hist_avg = hist_avg.fillna(float(known["rating"].mean())).to_numpy()
    shares = genre_share(known, split.items).reindex(user_ids).fillna(0.0)
    tops = top_genres(shares)
    col = {g: k for k, g in enumerate(data.genre_names)}
    top_matrix = np.zeros((len(user_ids), genres.shape[1]), dtype=np.float64)
    for u, gs in enumerate(tops.tolist()):
        top_matrix[u, [col[g] for g in gs if g in col]] = 1.0
    p_handset = handset_probability(
        data.expected, hist_avg[items], genres[items], top_matrix[users], data.traits[users]
    )

    report: dict[str, Any] = {
        "history_users": len(user_ids),
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
        "validation_users": data.n_validation_users,
        "train": _scores(p_fitted[~is_valid], y[~is_valid]),
        "validation": {
            "fitted": _scores(p_fitted[is_valid], y[is_valid]),
            "handset": _scores(p_handset[is_valid], y[is_valid]),
            "n": int(is_valid.sum()),
        },
        "coefficients": {**dict(zip(FEATURES, coef.tolist(), strict=True)), "intercept": intercept},
    }

    # Deployment: the item side from the whole history.
    items_all = item_side(data.history, item_ids, genres, data.year, config)
    report["seconds"] = time.perf_counter() - started
    logger.info(
        "fitted the choice model on %d positives and %d negatives in %.1f s (validation AUC %.3f, hand-set %.3f)",
        report["positives"],
        report["negatives"],
        report["seconds"],
        report["validation"]["fitted"]["roc_auc"],
        report["validation"]["handset"]["roc_auc"],
    )
    return FittedChoice(
        items=items_all,
        item_ids=item_ids,
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        config=config,
        split_id=split.manifest.get("split_id"),
        report=report,
    )
