"""Behaviour statistics of the simulated users beside the real ones, as distances (the smaller the closer).

The real side is what the sampled users did in the split's **test part** — the period a simulation stands
for, after their train history — cut into sessions with the same gap as the session fit
(:func:`~recsim_personas.envs.calibration.sessionize`). The simulated side is what the same users watched in a
simulation of ``days`` days. The measures:

============================ =================================================================================
``rating_w1``                Wasserstein-1 between the rating histograms (1..5) of the real test ratings and
                             the simulated watches' ratings
``rating_w1_per_user``       the same per user, averaged over users with both
``items_per_session``        Wasserstein-1 between the items per session (real: ratings per test session;
                             simulated: watches per session with at least one)
``sessions_per_user``        Wasserstein-1 between the sessions per user (real: test sessions; simulated:
                             sessions with at least one watch, zeros included)
``genre_js``                 Jensen-Shannon distance (base 2, in [0, 1]) between a user's genre shares of its
                             real test movies and of its simulated watches, averaged over the users who
                             watched something (the others have no genre shares: their share is reported as
                             ``users_without_watch``)
``popularity_w1``            Wasserstein-1 between log(1 + history ratings) of the real and simulated picks
``off_taste_share``          |difference| of the share of picks sharing no genre with the user's top genres
============================ =================================================================================

The per-user measures grow when a user makes few picks, whatever the simulator: ``genre_js_floor`` and
``rating_w1_per_user_floor`` (on the simulated side) are the same measures for a perfect simulator that made as
many picks per user — a draw, with replacement, from the user's own real test picks — to read them against.

A user's test part usually begins in the middle of a sitting: its first test ratings continue the session
its train part ended in (the split cuts by rating count, not by session). Given the train ratings, such a
session is left out of the real side's sessions (it is neither a whole session nor a visit of the test
period); its ratings still count for the rating, genre, popularity and off-taste measures. The real test
sessions and the simulated days cover different spans of time (a user's test part lasts from minutes to
months), so ``sessions_per_user`` compares shapes more than levels; the other measures do not depend on the
span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.envs.world import World

DISTANCES: tuple[str, ...] = (
    "rating_w1",
    "rating_w1_per_user",
    "items_per_session",
    "sessions_per_user",
    "genre_js",
    "popularity_w1",
    "off_taste_share",
)
"""The distances, in report order."""


def _genre_dist(world: World, items: np.ndarray) -> np.ndarray:
    from recsim_personas.choice.features import item_genre_matrix

    g = item_genre_matrix(world.item_genres[items], len(world.genres)).sum(axis=0)
    return g / g.sum() if g.sum() else g


def _w1(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import wasserstein_distance

    if len(a) == 0 or len(b) == 0:
        return None
    return float(wasserstein_distance(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


def _side(world: World, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> dict[str, Any]:
    """Per-pick summaries of (user row, item index, rating) picks."""
    off = (world.item_genres[items] & world.user_top_genres[users]) == 0
    return {
        "n": len(items),
        "mean_rating": float(ratings.mean()) if len(ratings) else None,
        "rating_hist": np.bincount(ratings, minlength=6)[1:6].tolist(),
        "log_popularity": float(np.log1p(world.item_popularity[items]).mean()) if len(items) else None,
        "off_taste_share": float(off.mean()) if len(items) else None,
    }


def behaviour_statistics(
    world: World,
    test: pd.DataFrame,
    watched: Sequence[Mapping[str, np.ndarray]],
    sessions: Sequence[Mapping[str, np.ndarray]],
    *,
    gap_minutes: float = 30.0,
    train: pd.DataFrame | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Real (test part) vs simulated behaviour of the world's users.

    Args:
        world: the simulation world.
        test: the split's test ratings (``user_id``, ``item_id``, ``rating``, ``timestamp``).
        watched: per simulation run, the watches (``user_id``, ``item_id``, ``rating``).
        sessions: per simulation run, the ended sessions (``user_id``, ``watches``).
        gap_minutes: the session gap of the real sessions.
        train: the split's train ratings (``user_id``, ``timestamp``): test sessions that continue the user's
            last train session are left out of the session measures.
        seed: seed of the noise floors' draws.

    Returns:
        ``{"real": {...}, "simulated": {...}, "distances": {name: value or None}}`` (see the module docstring);
        the simulated side pools the runs.
    """
    import pandas as pd
    from scipy.spatial.distance import jensenshannon

    from recsim_personas.envs.calibration import session_table, sessionize

    t = test[test["user_id"].isin(world.user_ids) & test["item_id"].isin(world.item_ids)]
    r_users = np.searchsorted(world.user_ids, t["user_id"].to_numpy(dtype=np.int64))
    r_items = np.searchsorted(world.item_ids, t["item_id"].to_numpy(dtype=np.int64))
    r_ratings = t["rating"].to_numpy(dtype=np.int64)
    table = (
        session_table(sessionize(t, gap_minutes))
        if len(t)
        else pd.DataFrame({"user_id": [], "start": [], "end": [], "size": []}, dtype=np.int64)
    )
    continued = 0
    if len(table) and train is not None and len(train):
        last_train = train.groupby("user_id")["timestamp"].max()
        cut = (table["start"] - table["user_id"].map(last_train)) <= gap_minutes * 60.0
        continued = int(cut.sum())
        table = table[~cut]
    real_sizes = table["size"].to_numpy()
    real_per_user = table.groupby("user_id").size().reindex(world.user_ids).fillna(0).to_numpy()

    s_users = np.concatenate([np.searchsorted(world.user_ids, np.asarray(w["user_id"])) for w in watched] or [[]])
    s_items = np.concatenate([np.searchsorted(world.item_ids, np.asarray(w["item_id"])) for w in watched] or [[]])
    s_ratings = np.concatenate([np.asarray(w["rating"]) for w in watched] or [[]])
    s_users, s_items, s_ratings = (np.asarray(x, dtype=np.int64) for x in (s_users, s_items, s_ratings))
    sim_sizes, sim_per_user = [], []
    for run in sessions:
        w = np.asarray(run["watches"], dtype=np.int64)
        sim_sizes.append(w[w > 0])
        u = np.searchsorted(world.user_ids, np.asarray(run["user_id"], dtype=np.int64)[w > 0])
        sim_per_user.append(np.bincount(u, minlength=world.n_users))
    sim_sizes_all = np.concatenate(sim_sizes) if sim_sizes else np.zeros(0, dtype=np.int64)
    sim_per_user_all = np.concatenate(sim_per_user) if sim_per_user else np.zeros(0, dtype=np.int64)

    per_user_w1, js, floor_w1, floor_js = [], [], [], []
    without = users_with_test = 0
    rng = np.random.default_rng(seed)
    for u in range(world.n_users):
        real_u = r_items[r_users == u]
        if real_u.size == 0:
            continue
        users_with_test += 1
        sim_mask = s_users == u
        if not sim_mask.any():
            without += 1
            continue
        real_dist = _genre_dist(world, real_u)
        js.append(float(jensenshannon(real_dist, _genre_dist(world, s_items[sim_mask]), base=2)))
        per_user_w1.append(_w1(r_ratings[r_users == u], s_ratings[sim_mask]))
        # the same distances for a perfect simulator that made as many picks: a draw from the user's own
        # real picks (with replacement)
        draw = rng.integers(0, real_u.size, size=int(sim_mask.sum()))
        floor_js.append(float(jensenshannon(real_dist, _genre_dist(world, real_u[draw]), base=2)))
        floor_w1.append(_w1(r_ratings[r_users == u], r_ratings[r_users == u][draw]))

    real = _side(world, r_users, r_items, r_ratings)
    sim = _side(world, s_users, s_items, s_ratings)
    real.update(
        sessions=len(real_sizes),
        sessions_continued_from_train=int(continued),
        items_per_session=float(real_sizes.mean()) if len(real_sizes) else None,
        sessions_per_user=float(real_per_user.mean()),
    )
    sim.update(
        runs=len(watched),
        sessions=len(sim_sizes_all),
        items_per_session=float(sim_sizes_all.mean()) if len(sim_sizes_all) else None,
        sessions_per_user=float(sim_per_user_all.mean()) if len(sim_per_user_all) else None,
        sessions_without_watch=int(sum(int((np.asarray(r["watches"]) == 0).sum()) for r in sessions)),
        users_without_watch=without / users_with_test if users_with_test else None,
        genre_js_floor=float(np.mean(floor_js)) if floor_js else None,
        rating_w1_per_user_floor=float(np.mean(floor_w1)) if floor_w1 else None,
    )
    off_real, off_sim = real["off_taste_share"], sim["off_taste_share"]
    distances = {
        "rating_w1": _w1(r_ratings, s_ratings),
        "rating_w1_per_user": float(np.mean(per_user_w1)) if per_user_w1 else None,
        "items_per_session": _w1(real_sizes, sim_sizes_all),
        "sessions_per_user": _w1(real_per_user, sim_per_user_all),
        "genre_js": float(np.mean(js)) if js else None,
        "popularity_w1": _w1(np.log1p(world.item_popularity[r_items]), np.log1p(world.item_popularity[s_items])),
        "off_taste_share": None if off_real is None or off_sim is None else abs(off_real - off_sim),
    }
    return {"real": real, "simulated": sim, "distances": distances}


def replay_check(metrics: Any, test: pd.DataFrame) -> dict[str, Any]:
    """How often a policy's slates held the real users' test movies, and whether the simulated users watched them.

    Args:
        metrics: a :class:`~recsim_personas.recommenders.simulated.SimulatedMetrics` run with ``test=``.
        test: the split's test ratings.

    Returns:
        ``shown``, ``shown_test`` (pairs shown that the real user rated in the test part), ``shown_test_share``,
        ``watched``, ``watched_test`` and ``watched_test_share_of_shown_test`` (of the shown test movies, the
        share the simulated users watched), ``watch_rate_other`` (the watch rate of the other shown movies),
        pooled over the seeds.
    """
    import pandas as pd

    shown = int(sum(metrics.shown_total))
    shown_test = int(sum(metrics.shown_test))
    keys = ["user_id", "item_id"]
    frames = [pd.DataFrame({k: np.asarray(w[k]) for k in keys}) for w in metrics.watched]
    sim = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=keys)
    watched = len(sim)
    watched_test = len(sim.merge(test[keys].drop_duplicates(), on=keys))
    other_shown = shown - shown_test
    return {
        "shown": shown,
        "shown_test": shown_test,
        "shown_test_share": shown_test / shown if shown else None,
        "watched": watched,
        "watched_test": watched_test,
        "watched_test_share_of_shown_test": watched_test / shown_test if shown_test else None,
        "watch_rate_other": (watched - watched_test) / other_shown if other_shown else None,
    }
