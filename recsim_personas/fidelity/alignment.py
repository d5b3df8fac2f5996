"""Preference alignment (the Agent4Rec / SimUSER protocol): do simulated users pick what the real ones picked?

Each sampled user is shown its real test movies mixed with ``m`` random movies per test movie that it never
rated (in neither the train nor the test part), for ``m`` in 1, 3, 9. The simulated user — its choice model,
with the world's rater, at the start of a simulation (history = its train part) — decides on each:

- *decisions at 0.5*: watched when P(watch) > 0.5 → accuracy, precision, recall, F1;
- *sampled decisions*: watched with probability P(watch), as the simulation decides (one draw per candidate);
- ROC-AUC of P(watch).

Baselines score the same candidates: ``random`` (a uniform score), ``popularity`` (the movie's number of
history ratings), ``item_knn`` (implicit item-based kNN: the summed cosine similarities of the user's train
movies to the candidate, over each movie's ``knn_neighbours`` nearest) and ``ease`` (EASE item-item scores,
:mod:`recsim_personas.choice.ease`). A score has no probability scale, so a baseline's decisions mark its
top ``1 / (1 + m)`` candidates as watched: the share of real movies, which it is told.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.envs.world import World

RATIOS: tuple[int, ...] = (1, 3, 9)
BASELINES: tuple[str, ...] = ("random", "popularity", "item_knn", "ease")


def candidates(
    world: World, test: pd.DataFrame, ratio: int, rng: np.random.Generator, train: pd.DataFrame | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The alignment candidates: each world user's test movies and ``ratio`` never-rated movies per test movie.

    Args:
        world: the simulation world (its users and items).
        test: test ratings (``user_id``, ``item_id``); users or items outside the world are skipped.
        ratio: random movies per test movie.
        rng: the generator of the random movies.
        train: train ratings, excluded from the random movies besides the world's histories.

    Returns:
        ``(user_rows, item_rows, label)``: int64, int64, bool (n,); label True for a real test movie.
    """
    from recsim_personas.recommenders.simulated import pair_mask

    in_test = pair_mask(world, test)
    users, items = np.nonzero(in_test)
    rated = in_test | history_matrix(world).astype(bool)
    if train is not None:
        rated |= pair_mask(world, train)
    out_u, out_i = [users], [items]
    counts = np.bincount(users, minlength=world.n_users) * int(ratio)
    for u in np.flatnonzero(counts):
        pool = np.flatnonzero(~rated[u])
        n = min(int(counts[u]), pool.size)
        out_u.append(np.full(n, u, dtype=np.int64))
        out_i.append(rng.choice(pool, size=n, replace=False))
    label = np.zeros(sum(len(x) for x in out_u), dtype=bool)
    label[: len(users)] = True
    return np.concatenate(out_u), np.concatenate(out_i).astype(np.int64), label


def decision_scores(label: np.ndarray, decided: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of watch decisions against the real labels (bool (n,) each)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(label, decided, average="binary", zero_division=0.0)
    return {
        "accuracy": float(accuracy_score(label, decided)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
    }


def top_share(score: np.ndarray, share: float) -> np.ndarray:
    """Mark the ``share`` highest scores (ties broken by position). float (n,) → bool (n,)."""
    n = round(len(score) * share)
    decided = np.zeros(len(score), dtype=bool)
    decided[np.argsort(-score, kind="stable")[:n]] = True
    return decided


def item_knn_scores(x: np.ndarray, users: np.ndarray, items: np.ndarray, neighbours: int = 50) -> np.ndarray:
    """Implicit item-kNN scores: Σ over the user's rated movies of their cosine similarity to the candidate,
    keeping each candidate's ``neighbours`` most similar movies.

    Args:
        x: the user-item matrix the similarities are learnt from, float (n_rows, n_items), 1 = rated.
        users: rows of ``x``, int (n,); items: item indices, int (n,).

    Returns:
        float64 (n,).
    """
    from sklearn.metrics.pairwise import cosine_similarity

    sim = cosine_similarity(x.T, dense_output=True)
    np.fill_diagonal(sim, 0.0)
    if neighbours < sim.shape[0]:
        cut = np.partition(sim, -neighbours, axis=0)[-neighbours]
        sim = np.where(sim >= cut[None, :], sim, 0.0)
    return _row_scores(x, sim, users, items)


def _row_scores(x: np.ndarray, weights: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``(x @ weights)[users, items]``, computed for the distinct users only (never a (n, n_items) gather)."""
    rows, inverse = np.unique(users, return_inverse=True)
    return (x[rows] @ weights)[inverse, items]


def ease_scores(x: np.ndarray, users: np.ndarray, items: np.ndarray, l2: float) -> np.ndarray:
    """EASE scores (:func:`~recsim_personas.choice.ease.fit_ease` on ``x``) of the candidates, float64 (n,);
    arguments as :func:`item_knn_scores`."""
    from recsim_personas.choice.ease import fit_ease

    return _row_scores(x, fit_ease(x, l2), users, items)


def history_matrix(world: World, history: pd.DataFrame | None = None) -> np.ndarray:
    """A user-item matrix, float64: the world users' train histories (``history=None``), or ``history``'s
    ratings with the world's users as the first ``n_users`` rows (other users after them)."""
    if history is None:
        x = np.zeros((world.n_users, world.n_items), dtype=np.float64)
        for u, h in enumerate(world.history_items):
            x[u, h] = 1.0
        return x
    ids = history["user_id"].to_numpy(dtype=np.int64)
    order = np.concatenate([world.user_ids, np.setdiff1d(np.unique(ids), world.user_ids)])
    rank = np.argsort(order)
    rows = rank[np.searchsorted(order[rank], ids)]
    x = np.zeros((len(order), world.n_items), dtype=np.float64)
    x[rows, np.searchsorted(world.item_ids, history["item_id"].to_numpy(dtype=np.int64))] = 1.0
    return x


def preference_alignment(
    world: World,
    test: pd.DataFrame,
    *,
    ratios: tuple[int, ...] = RATIOS,
    seed: int = 0,
    train: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
    ease_l2: float = 3000.0,
    knn_neighbours: int = 50,
    max_users: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The preference-alignment test of the world's users, beside the baselines.

    Args:
        world: the simulation world (its choice model and rater decide).
        test: the split's test ratings.
        ratios: random movies per real one.
        seed: seed of the random movies and of the sampled decisions.
        train: the split's train ratings (never offered as random movies).
        history: ratings the ``item_knn`` and ``ease`` baselines learn from (default: the world users'
            train histories); pass the split's whole history (train + background) to give them all of it.
        ease_l2: the EASE baseline's L2 penalty.
        knn_neighbours: the item-kNN baseline's neighbours.
        max_users: score a seeded sample of at most this many users (all by default): a slow rater (persona
            agents rate tens of movies a second) is asked about every candidate, 1 + m per test movie.
        progress: a progress bar over the rater's batches.

    Returns:
        ``{"choice": name, "ratios": {m: {"n", "positives", "model": {"roc_auc", "threshold": {...},
        "sampled": {...}, "log_likelihood"}, "baselines": {name: {"roc_auc", "top_share": {...}}}}}}``.
    """
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from recsim_personas.agents.fidelity import predict_distributions
    from recsim_personas.agents.rater import RATINGS
    from recsim_personas.choice.fit import log_likelihood
    from recsim_personas.choice.model import open_choice
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.state import UserTable
    from recsim_personas.errors import ConfigError

    root = np.random.SeedSequence(seed)
    table = UserTable(world)
    session = open_choice(world)
    cfg = world.session_config or SessionConfig()
    x = history_matrix(world, history)
    if max_users is not None:
        if isinstance(max_users, bool) or not isinstance(max_users, int) or max_users < 1:
            raise ConfigError(f"max_users must be a positive integer, got {max_users!r}.")
        if max_users < world.n_users:
            keep = np.random.default_rng(seed).choice(world.user_ids, size=max_users, replace=False)
            test = test[test["user_id"].isin(keep)]
    out: dict[str, Any] = {"choice": getattr(world.choice, "name", "handset"), "rater": world.rater_name}
    per_ratio: dict[str, Any] = {}
    for m, seq in zip(ratios, root.spawn(len(ratios)), strict=True):
        rng_items, rng_decide, rng_random = (np.random.default_rng(s) for s in seq.spawn(3))
        users, items, label = candidates(world, test, m, rng_items, train)
        requests = pd.DataFrame({"user_id": world.user_ids[users], "item_id": world.item_ids[items]})
        expected = predict_distributions(world.rater, requests, progress=progress) @ RATINGS
        p = np.asarray(session.watch_probability(table, users, items, expected, cfg), dtype=np.float64)
        sampled = rng_decide.random(len(p)) < p
        share = 1.0 / (1.0 + m)
        scores = {
            "random": rng_random.random(len(users)),
            "popularity": world.item_popularity[items].astype(np.float64),
            "item_knn": item_knn_scores(x, users, items, knn_neighbours),
            "ease": ease_scores(x, users, items, ease_l2),
        }
        per_ratio[str(m)] = {
            "n": len(label),
            "positives": int(label.sum()),
            "model": {
                "roc_auc": float(roc_auc_score(label, p)),
                "log_likelihood": log_likelihood(p, label),
                "threshold": decision_scores(label, p > 0.5),
                "sampled": decision_scores(label, sampled),
                "mean_probability": float(p.mean()),
            },
            "baselines": {
                name: {
                    "roc_auc": float(roc_auc_score(label, s)),
                    "top_share": decision_scores(label, top_share(s, share)),
                }
                for name, s in scores.items()
            },
        }
    out["ratios"] = per_ratio
    return out
