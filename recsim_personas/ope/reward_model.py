"""The direct method's reward model: ``q̂(x, i)``, an item's expected reward at a logged context, fitted on the logs.

A small scikit-learn model over a few (user, item) features — what a practitioner would fit, not the simulator's
own model (so the direct method is biased as far as this model is wrong):

| feature            | meaning                                                                  |
|--------------------|--------------------------------------------------------------------------|
| `log_popularity`   | ``log(1 + ratings of the item in the split's history)``                  |
| `affinity`         | the context's user vector · the item's factor (the ``affinity`` score)   |
| `item_mean_rating` | the item's historical average rating                                     |
| `user_mean_rating` | the mean rating of the user's observed history                           |
| `genre_match`      | 1 if the item shares a genre with the user's top genres                  |
| `activity`, `conformity`, `diversity` | the user's trait scores                               |

plus the products of ``affinity`` and ``log_popularity`` with the user's trait scores. A logistic regression
for a binary reward (``likes``, ``watches``), a ridge regression for ``rating``; both on standardised features.
It is **cross-fitted**: the pages are split by session into ``folds`` parts, and a page's predictions come from
the model fitted on the other parts — so the direct part of DR is independent of the residuals it corrects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    from recsim_personas.ope.logs import OPELog
    from recsim_personas.ope.policies import ScoreBank

FEATURES = (
    "log_popularity",
    "affinity",
    "item_mean_rating",
    "user_mean_rating",
    "genre_match",
    "activity",
    "conformity",
    "diversity",
    "affinity_x_activity",
    "affinity_x_conformity",
    "affinity_x_diversity",
    "popularity_x_activity",
    "popularity_x_conformity",
    "popularity_x_diversity",
)
CHUNK_PAGES = 2048


def pair_features(log: OPELog, bank: ScoreBank, pages: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The features of (logged page, item) pairs.

    Args:
        log: the logs (contexts).
        bank: the base scores of the log's world (item factors, popularity).
        pages: page indices into the log, int (P,).
        items: item indices, int (P, M).

    Returns:
        float32 (P, M, len(FEATURES)).
    """
    world = bank.world
    users = log.user[pages]
    traits = world.trait_scores[users].astype(np.float32)  # (P, 3)
    affinity = np.einsum("pd,pmd->pm", log.context[pages], bank.item_factors[items])
    pop = bank.log_popularity[items].astype(np.float32)
    match = (world.item_genres[items] & world.user_top_genres[users][:, None]) != 0
    shape = items.shape
    cols = [
        pop,
        affinity,
        np.asarray(world.item_hist_avg, dtype=np.float32)[items],
        np.broadcast_to(log.user_mean_rating[pages, None].astype(np.float32), shape),
        match.astype(np.float32),
        *(np.broadcast_to(traits[:, None, t], shape) for t in range(3)),
        *(affinity * traits[:, None, t] for t in range(3)),
        *(pop * traits[:, None, t] for t in range(3)),
    ]
    return np.stack(cols, axis=-1).astype(np.float32)


def session_folds(log: OPELog, folds: int, seed: int) -> np.ndarray:
    """A fold per page, int64 (n,), whole sessions to one fold (a seeded random assignment)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"folds must be an integer >= 2, got {folds!r}.")
    sessions, inverse = np.unique(log.session, return_inverse=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0DE]))
    assignment = rng.permutation(sessions.size) % folds
    return assignment[inverse].astype(np.int64)


def _model(binary: bool):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500) if binary else Ridge(alpha=1.0))


def cross_fitted_predictions(
    log: OPELog, bank: ScoreBank, item_sets: Sequence[np.ndarray], *, folds: int = 2, seed: int = 0
) -> list[np.ndarray]:
    """Cross-fitted ``q̂`` for sets of (page, item) pairs.

    Args:
        log: the logs (the model is fitted on its logged items and per-slot rewards).
        bank: the base scores of the log's world.
        item_sets: item indices, each int (n, M_s): e.g. the logged slates (n, k) and a target's slates
            flattened (n, M·k).
        folds: cross-fitting folds (by session).
        seed: seed of the fold assignment.

    Returns:
        float64 arrays of the item sets' shapes: predicted expected item rewards (probabilities for a binary
        reward).
    """
    binary = log.reward in ("likes", "watches")
    fold = session_folds(log, folds, seed)
    out = [np.zeros(np.shape(items), dtype=np.float64) for items in item_sets]
    pages = np.arange(log.n_pages)
    for f in range(folds):
        train = pages[fold != f]
        test = pages[fold == f]
        x = pair_features(log, bank, train, log.slates[train]).reshape(-1, len(FEATURES))
        y = log.rewards[train].reshape(-1)
        if binary and np.unique(y).size < 2:
            fixed = float(y.mean()) if y.size else 0.0
            for pred in out:
                pred[test] = fixed
            continue
        model = _model(binary).fit(x, y)
        for items, pred in zip(item_sets, out, strict=True):
            items = np.asarray(items, dtype=np.int64)
            for start in range(0, test.size, CHUNK_PAGES):
                chunk = test[start : start + CHUNK_PAGES]
                feats = pair_features(log, bank, chunk, items[chunk]).reshape(-1, len(FEATURES))
                p = model.predict_proba(feats)[:, 1] if binary else model.predict(feats)
                pred[chunk] = p.reshape(chunk.size, -1)
    return out
