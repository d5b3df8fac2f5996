"""How far to trust the simulator behind a gap report, measured where ground truth exists.

Two checks, both scored by the package's one fidelity scorer (:mod:`recsim_personas.agents.fidelity`):

- :func:`rater_on_test` — the world's rater on the real test ratings of the split: the expected rating's
  error (:func:`~recsim_personas.agents.fidelity.score_distributions`), a sampled rating against the real one
  (:func:`~recsim_personas.agents.fidelity.rating_agreement`), and how strongly a movie's popularity goes with
  the rating, for the rater and for the real users (Spearman ρ);
- :func:`watched_test` — the simulated watches: how many were of movies the real user rated in the test part
  (and their simulated against the real rating), and which share of the *liked* watches were of movies the
  real user never rated (in neither the train nor the test part), which no offline metric can score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.envs.world import World


def rater_on_test(world: World, test: pd.DataFrame, *, seed: int = 0, like_threshold: int = 4) -> dict[str, Any]:
    """The world's rater on the real test ratings.

    Args:
        world: the simulation world (its rater, item ids and item popularity).
        test: the split's test ratings (``user_id``, ``item_id``, ``rating``).
        seed: seed of the sampled ratings.
        like_threshold: ratings at or above it count as likes.

    Returns:
        ``n`` test ratings of ``users`` users; ``real_mean``, ``expected_mean``, ``sampled_mean``; ``mae`` and
        ``rmse`` of the expected rating; ``w1`` and ``nll`` of the distributions; ``sampled_exact`` and
        ``like_agreement`` of one sampled rating per test rating; ``popularity_rho_expected`` /
        ``popularity_rho_real``: Spearman ρ between the movies' popularity (history ratings) and the expected /
        the real rating (``None`` when undefined).
    """
    from scipy.stats import spearmanr

    from recsim_personas.agents.fidelity import predict_distributions, rating_agreement, score_distributions
    from recsim_personas.agents.rater import expected_rating, sample_ratings

    dist = predict_distributions(world.rater, test)
    row = score_distributions(world.rater_name, dist, test)
    real = test["rating"].to_numpy(dtype=np.int64)
    expected = expected_rating(dist)
    sampled = sample_ratings(dist, np.random.default_rng(seed))
    agreement = rating_agreement(sampled, real, like_threshold=like_threshold)
    popularity = test["item_id"].map(dict(zip(world.item_ids.tolist(), world.item_popularity.tolist(), strict=True)))
    popularity = popularity.to_numpy(dtype=np.float64)  # NaN for a movie the world does not have

    def rho(values: np.ndarray) -> float | None:
        if len(values) < 2 or np.ptp(values) == 0 or np.ptp(popularity) == 0:
            return None
        value = float(spearmanr(popularity, values).statistic)
        return None if math.isnan(value) else value

    return {
        "n": row.n,
        "users": int(test["user_id"].nunique()),
        "real_mean": float(real.mean()) if row.n else None,
        "expected_mean": float(expected.mean()) if row.n else None,
        "sampled_mean": agreement.get("predicted_mean"),
        "mae": row.mae_expected,
        "rmse": row.rmse_expected,
        "w1": row.w1,
        "nll": row.nll,
        "sampled_exact": agreement.get("exact"),
        "like_agreement": agreement.get("like_agreement"),
        "popularity_rho_expected": rho(expected),
        "popularity_rho_real": rho(real.astype(np.float64)),
    }


def watched_test(
    watched: Sequence[Mapping[str, np.ndarray]],
    test: pd.DataFrame,
    train: pd.DataFrame | None = None,
    *,
    like_threshold: int = 4,
) -> dict[str, Any]:
    """Simulated watches against what the real users rated.

    Args:
        watched: per seed, ``user_id``, ``item_id``, ``rating`` arrays of the simulated watches.
        test: the split's test ratings.
        train: the split's train ratings (the simulated users' histories); without it the liked-watch shares
            are not computed.
        like_threshold: ratings at or above it count as likes.

    Returns:
        ``watches_per_seed``; ``n``: watches of movies the real user rated in the test part, ``test_share`` of
        all watches, and their ``sim_mean``, ``real_mean``, ``mae``, ``exact`` and ``like_agreement`` (when
        ``n > 0``); with ``train``: ``liked`` watches (simulated rating ≥ ``like_threshold``), ``liked_in_test``
        and ``liked_never_rated`` (the real user rated the movie in neither part) and
        ``liked_never_rated_share`` (``None`` without liked watches).
    """
    import pandas as pd

    from recsim_personas.agents.fidelity import rating_agreement

    frames = [pd.DataFrame({k: np.asarray(v) for k, v in w.items()}) for w in watched]
    sim = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user_id", "item_id", "rating"])
    n_watches = len(sim)
    keys = ["user_id", "item_id"]
    merged = sim.merge(test[[*keys, "rating"]].rename(columns={"rating": "real"}), on=keys)
    out: dict[str, Any] = {
        "watches_per_seed": n_watches / max(len(watched), 1),
        "n": len(merged),
        "test_share": len(merged) / n_watches if n_watches else 0.0,
    }
    if len(merged):
        a = rating_agreement(merged["rating"].to_numpy(), merged["real"].to_numpy(), like_threshold=like_threshold)
        out.update(
            sim_mean=a["predicted_mean"],
            real_mean=a["real_mean"],
            mae=a["mae"],
            exact=a["exact"],
            like_agreement=a["like_agreement"],
        )
    if train is not None:
        liked = sim[sim["rating"].to_numpy(dtype=np.int64) >= like_threshold][keys]
        rated = pd.concat([train[keys], test[keys]], ignore_index=True).drop_duplicates()
        rated_test = test[keys].drop_duplicates()
        in_test = len(liked.merge(rated_test, on=keys))
        ever = len(liked.merge(rated, on=keys))
        out.update(
            liked=len(liked),
            liked_in_test=in_test,
            liked_never_rated=len(liked) - ever,
            liked_never_rated_share=(len(liked) - ever) / len(liked) if len(liked) else None,
        )
    return out
