"""Large populations: synthetic users drawn from a world's real users.

:func:`synthetic_world` returns a :class:`~recsim_personas.envs.world.World` of ``n_users`` synthetic users
over the same items, rater and choice model as the world it is given. A **synthetic user** is a perturbed copy
of one real *template* user, drawn with replacement — uniformly, or (given the persona clusters of the template
users) a cluster first, by the clusters' shares or chosen weights, then a member of it uniformly:

- **history**: each of the template's train ratings is kept with probability ``keep`` (in its place, oldest
  first); each dropped one is replaced, in the same place and with the same rating, by one of the
  ``neighbours`` nearest items of the dropped item in item-factor space
  (:func:`~recsim_personas.envs.item_space.world_item_factors`: a truncated SVD of the world's train
  histories, cosine similarity), drawn uniformly among those not yet in the history. When every neighbour is
  taken the dropped item comes back, and when that too is taken the slot is left out, so a history never holds
  an item twice and may be a few entries shorter than the template's;
- **traits**: the template's trait scores plus Gaussian noise of standard deviation ``trait_jitter``, clipped
  to [0, 1]; the numeric traits ``activity`` (history length), ``conformity`` (mean squared deviation from the
  items' historical averages) and ``diversity`` (genres covering 80% of the genre share) and the top genres are
  recomputed from the synthetic history; the text levels (``*_level``) are the template's;
- **reference day** (the day features such as trend and movie age are taken at): the template's;
- **rater**: :class:`TemplateRater` answers for a synthetic user with its template's prediction (the bias
  rater's user bias is the template's), so every classical or persona rater applies unchanged;
- **choice model**: the world's fitted model bound anew to the synthetic users
  (:meth:`~recsim_personas.choice.model.FittedChoice.bind`; above 33.5M (user, item) cells it computes its
  fixed logits per page instead of holding them, see :class:`~recsim_personas.choice.model.BoundChoice`).

Synthetic users get ids ``id_start, id_start + 1, ...`` (``id_start`` above every real id, so a synthetic id
is never mistaken for a real user). Everything is drawn from ``numpy.random.SeedSequence(seed)``: the same
world, size and seed give the same synthetic world.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    from recsim_personas.agents.rater import Rater, RaterSession
    from recsim_personas.envs.world import World

logger = logging.getLogger(__name__)

CHUNK_USERS = 8192
"""Synthetic users built per chunk (bounds the temporary (chunk, n_items) seen matrix: 14 MB at 1,682 items)."""


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic users are derived from their templates (see the module docstring).

    Attributes:
        keep: probability of keeping each train rating of the template, in (0, 1].
        neighbours: item-factor neighbours a dropped item may be replaced by (>= 1).
        trait_jitter: standard deviation of the Gaussian noise on the trait scores (>= 0).
        factor_dim: dimension of the item factors (capped at ``min(n_users, n_items) - 1`` of the world).
        id_start: the first synthetic user id (must exceed every id of the template world).
    """

    keep: float = 0.8
    neighbours: int = 10
    trait_jitter: float = 0.05
    factor_dim: int = 16
    id_start: int = 10_000_000

    def __post_init__(self) -> None:
        if not isinstance(self.keep, int | float) or isinstance(self.keep, bool) or not 0.0 < self.keep <= 1.0:
            raise ConfigError(f"keep must be a probability in (0, 1], got {self.keep!r}. Fix: e.g. keep=0.8.")
        for name, low in (("neighbours", 1), ("factor_dim", 1), ("id_start", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
        if (
            not isinstance(self.trait_jitter, int | float)
            or isinstance(self.trait_jitter, bool)
            or not np.isfinite(self.trait_jitter)
            or self.trait_jitter < 0
        ):
            raise ConfigError(f"trait_jitter must be a finite number >= 0, got {self.trait_jitter!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TemplateRater:
    """A rater that answers for synthetic users with their templates' predictions.

    ``predict(users, items)`` maps each synthetic id to its template's id and asks the inner rater; ids that
    are not synthetic pass through unchanged. Each simulation gets a :class:`TemplateSession` of the inner
    rater's own session: a stateful rater (e.g. persona agents that form memories) then books the watches of a
    synthetic user under its template's id, so synthetic users of one template share those memories within a
    simulation (the stateless classical raters are unaffected).

    Args:
        inner: the world's rater.
        user_ids: synthetic ids, int64 (N,), ascending.
        template_ids: the template id of each, int64 (N,).
    """

    def __init__(self, inner: Rater, user_ids: np.ndarray, template_ids: np.ndarray) -> None:
        self.inner = inner
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.template_ids = np.asarray(template_ids, dtype=np.int64)
        if self.user_ids.shape != self.template_ids.shape or (np.diff(self.user_ids) <= 0).any():
            raise ConfigError("user_ids must be ascending and as long as template_ids.")
        self.user_ids.flags.writeable = False
        self.template_ids.flags.writeable = False

    @property
    def name(self) -> str:
        return str(getattr(self.inner, "name", type(self.inner).__name__))

    def template_of(self, users: np.ndarray) -> np.ndarray:
        """The template id of each synthetic id (other ids as they are), int64 (n,)."""
        users = np.asarray(users, dtype=np.int64)
        if self.user_ids.size == 0:
            return users.copy()
        pos = np.searchsorted(self.user_ids, users).clip(max=self.user_ids.size - 1)
        return np.where(self.user_ids[pos] == users, self.template_ids[pos], users)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The inner rater's distributions for the templates, float64 (n, 5)."""
        from recsim_personas.agents.rater import as_requests

        users, items = as_requests(users, items)
        return self.inner.predict(self.template_of(users), items)

    def session(self) -> TemplateSession:
        """A fresh session (one per simulation) over a fresh session of the inner rater."""
        from recsim_personas.agents.rater import open_session

        return TemplateSession(self, open_session(self.inner))


class TemplateSession:
    """One simulation's session of a :class:`TemplateRater`: ids mapped to templates both ways in."""

    def __init__(self, rater: TemplateRater, inner: RaterSession) -> None:
        self.rater, self.inner = rater, inner

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.inner.predict(self.rater.template_of(users), items)

    def observe(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        self.inner.observe(self.rater.template_of(users), items, ratings)


def item_neighbours(world: World, k: int, dim: int, seed: int = 0) -> np.ndarray:
    """The ``k`` nearest items of each item by cosine similarity of the world's item factors.

    Args:
        world: the world (its train histories give the factors).
        k: neighbours per item (capped at ``n_items - 1``).
        dim: factor dimension (capped at ``min(n_users, n_items) - 1``).
        seed: the SVD's random state.

    Returns:
        int64 (n_items, min(k, n_items - 1)), nearest first, never the item itself.
    """
    from recsim_personas.envs.item_space import world_item_factors

    n_items = world.n_items
    k = min(k, n_items - 1)
    dim = max(1, min(dim, world.n_users - 1, n_items - 1))
    f = world_item_factors(world, dim=dim, seed=seed).astype(np.float64)
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    out = np.empty((n_items, k), dtype=np.int64)
    for start in range(0, n_items, 1024):  # (1024, n_items) similarities at a time
        rows = np.arange(start, min(n_items, start + 1024))
        sim = f[rows] @ f.T
        sim[np.arange(rows.size), rows] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out[rows] = np.take_along_axis(top, order, axis=1)
    return out


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def synthetic_world(
    world: World,
    n_users: int,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    *,
    clusters: Mapping[int, int] | None = None,
    cluster_weights: Mapping[int, float] | None = None,
) -> World:
    """A world of ``n_users`` synthetic users drawn from ``world``'s users (see the module docstring).

    Args:
        world: the template world (from :func:`~recsim_personas.envs.world.make_world`).
        n_users: number of synthetic users (>= 1).
        seed: root seed (>= 0) of every draw (templates, subsamples, neighbours, trait noise).
        config: how users are derived (default :class:`SyntheticConfig`).
        clusters: persona cluster of every template user (user id → cluster, e.g. the ``labels`` of
            :func:`~recsim_personas.personas.clustering.load_clusters`). Given, each synthetic user first draws a
            cluster, then a template uniformly among that cluster's users; the cluster of a synthetic user is
            ``clusters[world.rater.template_of(id)]``. ``None``: templates uniform over all users.
        cluster_weights: with ``clusters``, the share of synthetic users per cluster (cluster → weight >= 0,
            normalised; clusters left out get none). Default: each cluster's share of the template users.

    Returns:
        a :class:`~recsim_personas.envs.world.World` over the same items, genres, split id and session config,
        with synthetic ``user_ids`` (``id_start ...``, ascending), their traits, histories, reference days and
        genre shares, a :class:`TemplateRater` around ``world.rater`` (``world.rater.template_of(ids)`` gives
        each user's template) and the choice model bound to the new users.

    Raises:
        ConfigError: ``n_users`` or ``seed`` not a valid integer, a ``config`` that is not a SyntheticConfig,
            an ``id_start`` not above the world's ids, or a world without users.
    """
    from recsim_personas.choice.features import genre_shares, item_genre_matrix
    from recsim_personas.personas.traits import COVERAGE

    n_users = _check_int("n_users", n_users, 1)
    seed = _check_int("seed", seed, 0)
    cfg = SyntheticConfig() if config is None else config
    if not isinstance(cfg, SyntheticConfig):
        raise ConfigError(f"config must be a SyntheticConfig, got {type(cfg).__name__}.")
    if world.n_users == 0:
        raise ConfigError("the template world has no users; synthetic users need templates.")
    if cfg.id_start <= int(world.user_ids.max()):
        raise ConfigError(
            f"id_start ({cfg.id_start!r}) must exceed the template world's largest user id"
            f" ({int(world.user_ids.max())}). Fix: SyntheticConfig(id_start={int(world.user_ids.max()) + 1})."
        )
    ss_templates, ss_history, ss_traits = np.random.SeedSequence(seed).spawn(3)
    templates = draw_templates(world.user_ids, n_users, np.random.default_rng(ss_templates), clusters, cluster_weights)
    nbr = item_neighbours(world, cfg.neighbours, cfg.factor_dim, seed=seed)

    t_len = np.fromiter((len(h) for h in world.history_items), dtype=np.int64, count=world.n_users)
    width = max(int(t_len.max()), 1)
    t_items = np.full((world.n_users, width), -1, dtype=np.int64)
    t_ratings = np.zeros((world.n_users, width), dtype=np.int64)
    for u, (items, ratings) in enumerate(zip(world.history_items, world.history_ratings, strict=True)):
        t_items[u, : len(items)], t_ratings[u, : len(items)] = items, ratings

    rng = np.random.default_rng(ss_history)
    out_items: list[np.ndarray] = []
    out_ratings: list[np.ndarray] = []
    lengths = np.zeros(n_users, dtype=np.int64)
    for start in range(0, n_users, CHUNK_USERS):
        chunk = templates[start : start + CHUNK_USERS]
        items, ratings, kept = _perturb(t_items[chunk], t_ratings[chunk], world.n_items, nbr, cfg.keep, rng)
        lengths[start : start + chunk.size] = kept.sum(axis=1)
        out_items.append(items[kept])
        out_ratings.append(ratings[kept])
    flat_items = np.concatenate(out_items)
    flat_ratings = np.concatenate(out_ratings)
    bounds = np.cumsum(lengths)[:-1]
    history_items = tuple(np.split(flat_items, bounds))
    history_ratings = tuple(np.split(flat_ratings, bounds))

    rows = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    genre_matrix = item_genre_matrix(world.item_genres, len(world.genres))
    share = genre_shares(rows, flat_items, genre_matrix, n_users)  # the choice model's definition
    spread = genre_matrix / np.maximum(genre_matrix.sum(axis=1, keepdims=True), 1.0)
    persona_share = genre_shares(rows, flat_items, spread, n_users)  # the traits' (one unit per item)
    order = np.argsort(-persona_share, axis=1, kind="stable")
    ranked = np.take_along_axis(persona_share, order, axis=1)
    n_top = (np.cumsum(ranked, axis=1) < COVERAGE - 1e-12).sum(axis=1) + 1
    in_top = (np.arange(len(world.genres))[None, :] < n_top[:, None]) & (ranked > 0)
    top_bits = (np.where(in_top, np.left_shift(1, order), 0)).sum(axis=1).astype(np.int64)
    deviation = (flat_ratings - world.item_hist_avg[flat_items]) ** 2
    conformity = np.bincount(rows, deviation, minlength=n_users) / np.maximum(lengths, 1)

    noise = np.random.default_rng(ss_traits).normal(0.0, cfg.trait_jitter, size=(n_users, 3))
    scores = np.clip(world.trait_scores[templates] + noise, 0.0, 1.0)
    traits = tuple(
        dataclasses.replace(
            world.traits[t],
            activity=int(lengths[u]),
            conformity=float(conformity[u]),
            diversity=int(in_top[u].sum()),
            activity_score=float(scores[u, 0]),
            conformity_score=float(scores[u, 1]),
            diversity_score=float(scores[u, 2]),
            top_genres=tuple(world.genres[g] for g in order[u, : int(in_top[u].sum())]),
        )
        for u, t in enumerate(templates.tolist())
    )

    user_ids = cfg.id_start + np.arange(n_users, dtype=np.int64)
    ref_day = None if world.user_ref_day is None else world.user_ref_day[templates].copy()
    synthetic = dataclasses.replace(
        world,
        user_ids=user_ids,
        traits=traits,
        trait_scores=scores,
        user_top_genres=top_bits,
        history_items=history_items,
        history_ratings=history_ratings,
        rater=TemplateRater(world.rater, user_ids, world.user_ids[templates]),
        user_ref_day=ref_day,
        user_genre_share=share,
        choice=None,
    )
    base = getattr(world.choice, "model", world.choice)
    bind = getattr(base, "bind", None)
    choice = bind(synthetic) if callable(bind) else base
    logger.info(
        "synthetic world: %d users from %d templates (%d distinct), mean history %.1f",
        n_users,
        world.n_users,
        np.unique(templates).size,
        float(lengths.mean()),
    )
    return dataclasses.replace(synthetic, choice=choice)


def draw_templates(
    user_ids: np.ndarray,
    n: int,
    rng: np.random.Generator,
    clusters: Mapping[int, int] | None = None,
    weights: Mapping[int, float] | None = None,
) -> np.ndarray:
    """Template rows (indices into ``user_ids``) of ``n`` synthetic users, int64 (n,): uniform over the users, or
    a cluster per user drawn by ``weights`` (default: the clusters' shares) and a uniform member of it."""
    if clusters is None:
        if weights is not None:
            raise ConfigError("cluster_weights needs clusters (the persona cluster of every template user).")
        return rng.integers(0, len(user_ids), size=n)
    labels = np.array([clusters.get(int(u), -1) for u in user_ids], dtype=np.int64)
    if (labels < 0).any():
        missing = user_ids[labels < 0]
        raise ConfigError(
            f"clusters has no (non-negative) cluster for {missing.size} template users, e.g. {missing[:5].tolist()}."
            " Fix: pass the clustering of this world's split (recsim-personas personas cluster)."
        )
    ids, counts = np.unique(labels, return_counts=True)
    if weights is None:
        share = counts / counts.sum()
    else:
        unknown = sorted(set(weights) - set(ids.tolist()))
        if unknown:
            raise ConfigError(
                f"cluster_weights names clusters {unknown} that no template user is in; the clusters are"
                f" {ids.tolist()}. Fix: weight those clusters only."
            )
        share = np.array([float(weights.get(int(c), 0.0)) for c in ids])
        if not np.isfinite(share).all() or (share < 0).any() or share.sum() <= 0:
            raise ConfigError(f"cluster_weights must be finite, >= 0 and not all 0, got {dict(weights)!r}.")
        share = share / share.sum()
    drawn = rng.choice(ids.size, size=n, p=share)
    templates = np.empty(n, dtype=np.int64)
    for c in range(ids.size):
        at = np.flatnonzero(drawn == c)
        members = np.flatnonzero(labels == ids[c])
        templates[at] = members[rng.integers(0, members.size, size=at.size)]
    return templates


def _perturb(
    items: np.ndarray, ratings: np.ndarray, n_items: int, nbr: np.ndarray, keep: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Perturb a chunk of template histories (see the module docstring).

    Args:
        items: template histories, int64 (C, L), -1 padded.
        ratings: their ratings, int64 (C, L).
        n_items: number of items.
        nbr: item neighbours, int64 (n_items, M).
        keep: probability of keeping an entry.
        rng: the generator to draw from.

    Returns:
        ``(items, ratings, kept)``: int64 (C, L), int64 (C, L) and bool (C, L) — the entries of each synthetic
        history are ``items[u][kept[u]]`` in order, distinct, ratings unchanged from the template's slot.
    """
    c = items.shape[0]
    valid = items >= 0
    dropped = valid & (rng.random(items.shape) >= keep)
    seen = np.zeros((c, n_items), dtype=bool)
    kept_rows, kept_cols = np.nonzero(valid & ~dropped)
    seen[kept_rows, items[kept_rows, kept_cols]] = True
    rows, cols = np.nonzero(dropped)
    original = items[rows, cols]
    new = items.copy()
    kept = valid & ~dropped
    m = nbr.shape[1]
    ranks = np.argsort(rng.random((rows.size, m)), axis=1)  # each slot tries its neighbours in a random order
    open_ = np.ones(rows.size, dtype=bool)
    for attempt in [*range(m), -1]:  # -1: the dropped item itself
        idx = np.flatnonzero(open_)
        if idx.size == 0:
            break
        cand = original[idx] if attempt < 0 else nbr[original[idx], ranks[idx, attempt]]
        free = ~seen[rows[idx], cand]
        idx, cand = idx[free], cand[free]
        _, first = np.unique(rows[idx] * n_items + cand, return_index=True)  # one slot per (user, item)
        idx, cand = idx[first], cand[first]
        seen[rows[idx], cand] = True
        new[rows[idx], cols[idx]] = cand
        kept[rows[idx], cols[idx]] = True
        open_[idx] = False
    return new, ratings, kept
