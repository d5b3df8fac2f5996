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
    users = np.searchsorted(world.user_ids, test["user_id"].to_numpy(dtype=np.int64))
    items = np.searchsorted(world.item_ids, test["item_id"].to_numpy(dtype=np.int64))
    ok = (users < world.n_users) & (items < world.n_items)
    ok[ok] &= world.user_ids[users[ok]] == test["user_id"].to_numpy(dtype=np.int64)[ok]
    ok[ok] &= world.item_ids[items[ok]] == test["item_id"].to_numpy(dtype=np.int64)[ok]
    users, items = users[ok], items[ok]
    rated = np.zeros((world.n_users, world.n_items), dtype=bool)
    for u, h in enumerate(world.history_items):
        rated[u, h] = True
    rated[users, items] = True
    if train is not None:
        tu = np.searchsorted(world.user_ids, train["user_id"].to_numpy(dtype=np.int64))
        ti = np.searchsorted(world.item_ids, train["item_id"].to_numpy(dtype=np.int64))
        keep = (tu < world.n_users) & (ti < world.n_items)
        rated[tu[keep], ti[keep]] = True
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


def item_knn_scores(world: World, users: np.ndarray, items: np.ndarray, neighbours: int = 50) -> np.ndarray:
    """Implicit item-kNN scores: Σ over the user's train movies of their cosine similarity to the candidate,
    keeping each candidate's ``neighbours`` most similar movies. float64 (n,)."""
    from sklearn.metrics.pairwise import cosine_similarity

    x = _history_matrix(world)
    sim = cosine_similarity(x.T, dense_output=True)
    np.fill_diagonal(sim, 0.0)
    if neighbours < sim.shape[0]:
        cut = np.partition(sim, -neighbours, axis=0)[-neighbours]
        sim = np.where(sim >= cut[None, :], sim, 0.0)
    return np.einsum("pi,pi->p", x[users], sim[:, items].T)


def ease_scores(world: World, users: np.ndarray, items: np.ndarray, l2: float) -> np.ndarray:
    """EASE scores of the user's train movies for the candidates (fitted on the world users' train
    histories plus nothing else), float64 (n,)."""
    from recsim_personas.choice.ease import fit_ease

    x = _history_matrix(world)
    b = fit_ease(x, l2)
    return np.einsum("pi,pi->p", x[users], b[:, items].T)


def _history_matrix(world: World) -> np.ndarray:
    x = np.zeros((world.n_users, world.n_items), dtype=np.float64)
    for u, h in enumerate(world.history_items):
        x[u, h] = 1.0
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

    Returns:
        ``{"choice": name, "ratios": {m: {"n", "positives", "model": {"roc_auc", "threshold": {...},
        "sampled": {...}, "log_likelihood"}, "baselines": {name: {"roc_auc", "top_share": {...}}}}}}``.
    """
    from sklearn.metrics import roc_auc_score

    from recsim_personas.agents.rater import RATINGS
    from recsim_personas.choice.fit import log_likelihood
    from recsim_personas.choice.model import open_choice
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.state import UserTable

    root = np.random.SeedSequence(seed)
    table = UserTable(world)
    session = open_choice(world)
    cfg = world.session_config or SessionConfig()
    knn_x = ease_x = None
    if history is not None:
        knn_x = ease_x = _history_matrix_of(world, history)
    out: dict[str, Any] = {"choice": getattr(world.choice, "name", "handset"), "rater": world.rater_name}
    per_ratio: dict[str, Any] = {}
    for m, seq in zip(ratios, root.spawn(len(ratios)), strict=True):
        rng_items, rng_decide, rng_random = (np.random.default_rng(s) for s in seq.spawn(3))
        users, items, label = candidates(world, test, m, rng_items, train)
        expected = world.rater.predict(world.user_ids[users], world.item_ids[items]) @ RATINGS
        p = np.asarray(session.watch_probability(table, users, items, expected, cfg), dtype=np.float64)
        sampled = rng_decide.random(len(p)) < p
        share = 1.0 / (1.0 + m)
        scores = {
            "random": rng_random.random(len(users)),
            "popularity": world.item_popularity[items].astype(np.float64),
            "item_knn": _knn(world, knn_x, users, items, knn_neighbours),
            "ease": _ease(world, ease_x, users, items, ease_l2),
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


def _history_matrix_of(world: World, history: pd.DataFrame) -> np.ndarray:
    """A user-item matrix of ``history`` whose first ``n_users`` rows are the world's users (others after)."""
    ids = history["user_id"].to_numpy(dtype=np.int64)
    others = np.setdiff1d(np.unique(ids), world.user_ids)
    order = np.concatenate([world.user_ids, others])
    rank = np.argsort(order)
    rows = rank[np.searchsorted(order[rank], ids)]
    cols = np.searchsorted(world.item_ids, history["item_id"].to_numpy(dtype=np.int64))
    x = np.zeros((len(order), world.n_items), dtype=np.float64)
    x[rows, cols] = 1.0
    return x


def _knn(world: World, x: np.ndarray | None, users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    if x is None:
        return item_knn_scores(world, users, items, k)
    from sklearn.metrics.pairwise import cosine_similarity

    sim = cosine_similarity(x.T, dense_output=True)
    np.fill_diagonal(sim, 0.0)
    if k < sim.shape[0]:
        cut = np.partition(sim, -k, axis=0)[-k]
        sim = np.where(sim >= cut[None, :], sim, 0.0)
    return np.einsum("pi,pi->p", x[users], sim[:, items].T)


def _ease(world: World, x: np.ndarray | None, users: np.ndarray, items: np.ndarray, l2: float) -> np.ndarray:
    if x is None:
        return ease_scores(world, users, items, l2)
    from recsim_personas.choice.ease import fit_ease

    b = fit_ease(x, l2)
    return np.einsum("pi,pi->p", x[users], b[:, items].T)
