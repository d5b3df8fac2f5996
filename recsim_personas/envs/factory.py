"""Build a simulation from a split directory: the :class:`~recsim_personas.envs.model.World` and populations.

:func:`make_world` does all the loading once (split, trait statistics, item arrays, fitting the rater);
populations and environments are then cheap to create and reset from it. Nothing is cached globally: keep
the world and pass it around (``gym.make(..., world=world)``) to share one load between environments.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.envs.agents import Traits
from recsim_personas.envs.model import Population, World
from recsim_personas.envs.session import SessionConfig
from recsim_personas.errors import ConfigError, unknown_choice

if TYPE_CHECKING:
    from recsim_personas.agents.rater import Rater
    from recsim_personas.data.protocol import Split

logger = logging.getLogger(__name__)

AGENTS_PREFIX = "agents:"


def load_split(split: str | os.PathLike[str] | Split) -> Split:
    """``split`` itself if it is a :class:`~recsim_personas.data.protocol.Split`, else ``Split.load(split)``."""
    from recsim_personas.data.protocol import Split

    if isinstance(split, Split):
        return split
    if isinstance(split, str | os.PathLike):
        return Split.load(split)
    raise ConfigError(f"split must be a split directory or a Split, got {type(split).__name__}: {split!r}.")


def resolve_rater(rater: str | Rater, split: Split) -> Rater:
    """A ready rater: a classical rater's name (fitted on ``split.history()``) or a rater object as is.

    ``agents:DIR`` loads the persona agents trained with ``recsim-personas agents train --out DIR``
    (:meth:`~recsim_personas.agents.persona_agents.PersonaAgents.open`: every persona adapter, the persona set
    and the memory index recorded in their manifest, checked against ``split``).

    Raises:
        ConfigError: an unknown name, an empty ``agents:`` path, or an object without a ``predict`` method.
        ArtifactError: agents of another split, or an unfinished or altered agents directory.
    """
    from recsim_personas.agents.classical import CLASSICAL_RATERS, make_rater

    if isinstance(rater, str):
        if rater.startswith(AGENTS_PREFIX):
            path = rater[len(AGENTS_PREFIX) :]
            if not path:
                raise ConfigError(
                    f"rater {rater!r}: name the agents directory, e.g. agents:runs/agents (from `recsim-personas"
                    " agents train --out DIR`)."
                )
            from recsim_personas.agents.persona_agents import PersonaAgents

            agents = PersonaAgents.open(path, split)
            logger.info("loaded persona agents %s from %s", agents.name, path)
            return agents
        if rater not in CLASSICAL_RATERS:
            raise unknown_choice("rater", rater, [*CLASSICAL_RATERS, AGENTS_PREFIX + "DIR"])
        fitted = make_rater(rater).fit(split.history())
        logger.info("fitted the %s rater on %d history ratings", rater, len(split.train) + len(split.background))
        return fitted
    if not callable(getattr(rater, "predict", None)):
        raise ConfigError(
            f"rater must be a classical rater's name or an object with predict(users, items), got {rater!r}."
        )
    return rater


def make_world(split: str | os.PathLike[str] | Split, rater: str | Rater = "bias") -> World:
    """Load everything a simulation needs from a split, once.

    Args:
        split: a split directory (from ``recsim-personas data prepare``) or a loaded ``Split``.
        rater: ``"bias"`` (default) or another classical rater's name — fitted on ``split.history()``
            (train + background, no test rating) —, ``"agents:DIR"`` (trained persona agents), or any object
            implementing the Rater protocol.

    Returns:
        the :class:`~recsim_personas.envs.model.World`: the split's items (ascending ids), its sampled users
        (ascending ids) with their traits and train histories, and the rater.
    """
    from recsim_personas.personas.traits import COVERAGE, compute_traits, genre_share

    split = load_split(split)
    history = split.history()
    fitted = resolve_rater(rater, split)

    items = split.items.sort_values("item_id", kind="mergesort").reset_index(drop=True)
    item_ids = items["item_id"].to_numpy(dtype=np.int64)
    mean_rating = float(history["rating"].mean()) if len(history) else 3.0
    hist_avg = items["hist_avg_rating"].astype("float64").fillna(mean_rating).to_numpy()
    genre_lists = [[g for g in gs if g != "unknown"] or ["unknown"] for gs in items["genres"]]
    genres = tuple(sorted({g for gs in genre_lists for g in gs}))
    if len(genres) > 62:
        raise ConfigError(f"the split's items have {len(genres)} genres; at most 62 are supported.")
    bit = {g: 1 << k for k, g in enumerate(genres)}
    item_genres = np.array([sum(bit[g] for g in set(gs)) for gs in genre_lists], dtype=np.int64)
    popularity = (
        history["item_id"].value_counts().reindex(item_ids, fill_value=0).to_numpy(dtype=np.int64)
        if len(history)
        else np.zeros(len(item_ids), dtype=np.int64)
    )

    user_ids = np.sort(split.user_ids)
    frame, _ = compute_traits(split.train, split.items)
    frame = frame.set_index("user_id")
    missing = np.setdiff1d(user_ids, frame.index.to_numpy())
    if missing.size:
        raise ConfigError(f"users {missing[:5].tolist()} of the split have no train ratings; cannot simulate them.")
    frame = frame.loc[user_ids]
    shares = genre_share(split.train, split.items).reindex(user_ids).fillna(0.0)
    traits, top_bits = [], np.zeros(len(user_ids), dtype=np.int64)
    for u, (uid, row) in enumerate(frame.iterrows()):
        share = shares.loc[uid].sort_values(ascending=False, kind="mergesort")
        n_top = int(np.searchsorted(np.cumsum(share.to_numpy()), COVERAGE - 1e-12) + 1)
        top = tuple(str(g) for g in share.index[:n_top] if share[g] > 0)
        top_bits[u] = sum(bit.get(g, 0) for g in top)
        traits.append(
            Traits(
                activity=int(row["activity"]),
                conformity=float(row["conformity"]),
                diversity=int(row["diversity"]),
                activity_level=str(row["activity_level"]),
                conformity_level=str(row["conformity_level"]),
                diversity_level=str(row["diversity_level"]),
                activity_score=float(row["activity_score"]),
                conformity_score=float(row["conformity_score"]),
                diversity_score=float(row["diversity_score"]),
                top_genres=top,
            )
        )
    scores = np.clip(np.stack([t.scores() for t in traits]), 0.0, 1.0)

    train = split.train.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    t_users = train["user_id"].to_numpy(dtype=np.int64)
    t_items = np.searchsorted(item_ids, train["item_id"].to_numpy(dtype=np.int64))
    t_ratings = train["rating"].to_numpy(dtype=np.int64)
    bounds = np.searchsorted(t_users, np.concatenate([user_ids, [np.iinfo(np.int64).max]]))
    hist_items = tuple(t_items[bounds[u] : bounds[u + 1]].copy() for u in range(len(user_ids)))
    hist_ratings = tuple(t_ratings[bounds[u] : bounds[u + 1]].copy() for u in range(len(user_ids)))

    split_id = split.manifest.get("split_id")
    logger.info("world: %d users, %d items, %d genres, rater %s", len(user_ids), len(item_ids), len(genres), rater)
    return World(
        item_ids=item_ids,
        item_hist_avg=hist_avg,
        item_genres=item_genres,
        item_popularity=popularity,
        genres=genres,
        user_ids=user_ids,
        traits=tuple(traits),
        trait_scores=scores,
        user_top_genres=top_bits,
        history_items=hist_items,
        history_ratings=hist_ratings,
        rater=fitted,
        split_id=split_id,
    )


def as_world(split: Any = None, rater: str | Rater | None = None, world: World | None = None) -> World:
    """Exactly one of ``split`` (loaded with :func:`make_world`; ``rater`` defaults to ``"bias"``) or a world.

    A :class:`World` may also be passed as ``split``. A world already holds its rater, so giving ``rater``
    too is refused.
    """
    if isinstance(split, World):
        split, world = None, split
    if world is not None:
        if split is not None:
            raise ConfigError("pass either split=... or world=..., not both.")
        if rater is not None:
            raise ConfigError("a World already holds its rater; do not pass rater=... with it.")
        if not isinstance(world, World):
            raise ConfigError(f"world must be a World (from make_world), got {type(world).__name__}.")
        return world
    if split is None:
        raise ConfigError(
            "no split given. Fix: pass split=DIR (a directory from `recsim-personas data prepare`), a Split, or"
            " world=make_world(...)."
        )
    return make_world(split, "bias" if rater is None else rater)


def make_population(
    split: str | os.PathLike[str] | Split | World,
    rater: str | Rater | None = None,
    *,
    seed: int | None = None,
    config: SessionConfig | None = None,
) -> Population:
    """A :class:`~recsim_personas.envs.model.Population` of the split's users.

    Args:
        split: a split directory, a loaded ``Split``, or a :class:`World` (which holds its own rater).
        rater: a classical rater's name (fitted on the split's history; default ``"bias"``) or a Rater.
        seed: seed of the population's generators.
        config: behaviour coefficients (default :class:`SessionConfig`).
    """
    return Population(as_world(split, rater), config, seed=seed)
