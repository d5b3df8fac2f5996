"""Offline metrics of a policy on the split's held-out test part: Recall@k, NDCG@k, MRR@k.

The protocol (RecBole's "full" ranking): for each sampled user, the policy ranks every item except the
user's history items (its train part — the observation's ``seen`` mask at the start of a simulation), and
its top ``k`` is compared with the set of items the user rated in the test part. Per user:

- Recall@k = hits / |test items|;
- NDCG@k = DCG / IDCG with binary gains, DCG = Σ_{hit at rank r} 1 / log2(r + 1), IDCG over
  ``min(|test items|, k)`` hits;
- MRR@k = 1 / rank of the first hit (0 without a hit);

each averaged over users with at least one test item. These are RecBole's definitions; the tests check the
figures against RecBole's own evaluator on the same split. Ties in a policy's scores are the policy's business
(:class:`~recsim_personas.recommenders.recbole_policy.RecBolePolicy` breaks them by item index, RecBole's
evaluator by ``torch.topk``), so only tie-free models can agree exactly.

The policy is asked exactly as the simulation asks it (``policy.act_batch(obs)`` with the observation a
fresh population would give, :func:`initial_observation`), so the offline and simulated figures come from the
same code path. The observation is read from the :class:`~recsim_personas.envs.world.World` alone: no
population, no rater session and no simulation state is built for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.envs.world import World

METRICS = ("recall", "ndcg", "mrr")


@dataclass(frozen=True)
class OfflineMetrics:
    """Offline metrics of one policy.

    Attributes:
        policy: the policy's name.
        k: cut-off.
        recall: mean Recall@k over users.
        ndcg: mean NDCG@k.
        mrr: mean MRR@k.
        users: users evaluated (those with a test item).
    """

    policy: str
    k: int
    recall: float
    ndcg: float
    mrr: float
    users: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranking_metrics(ranked: np.ndarray, positives: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user Recall, NDCG and MRR at ``k = ranked.shape[1]``.

    Args:
        ranked: item indices, best first, int (N, k).
        positives: bool (N, n_items): the user's relevant (test) items; every row needs at least one.

    Returns:
        ``{"recall", "ndcg", "mrr"}``, each float64 (N,).
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    positives = np.asarray(positives, dtype=bool)
    n, k = ranked.shape
    n_pos = positives.sum(axis=1)
    if (n_pos == 0).any():
        raise ConfigError("ranking_metrics: every user needs at least one relevant item.")
    hits = positives[np.arange(n)[:, None], ranked]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    idcg = np.cumsum(discounts)[np.minimum(n_pos, k) - 1]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    mrr = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return {"recall": hits.sum(axis=1) / n_pos, "ndcg": dcg / idcg, "mrr": mrr}


def evaluate_offline(policy: Any, world: World, test: pd.DataFrame, *, k: int = 10) -> OfflineMetrics:
    """Recall@k, NDCG@k and MRR@k of ``policy`` on the test ratings (see the module docstring).

    Args:
        policy: anything with ``act_batch(obs)`` and ``slate_size >= k`` (its slate is its top of the ranking).
        world: the simulation world of the split (its users, items and train histories).
        test: the split's test ratings (``user_id``, ``item_id``).
        k: cut-off.

    Raises:
        ConfigError: ``slate_size < k``, or a policy returning out-of-range or history items.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}.")
    name = str(getattr(policy, "name", type(policy).__name__))
    if getattr(policy, "slate_size", 0) < k:
        raise ConfigError(f"policy {name!r} serves {getattr(policy, 'slate_size', None)} items per slate; need ≥ {k}.")
    users = np.searchsorted(world.user_ids, test["user_id"].to_numpy(dtype=np.int64))
    items = np.searchsorted(world.item_ids, test["item_id"].to_numpy(dtype=np.int64))
    ok = (users < world.n_users) & (items < world.n_items)
    ok[ok] &= (world.user_ids[users[ok]] == test["user_id"].to_numpy()[ok]) & (
        world.item_ids[items[ok]] == test["item_id"].to_numpy()[ok]
    )
    if not ok.all():
        raise ConfigError(f"{int((~ok).sum())} test ratings name users or items that are not in the world.")
    positives = np.zeros((world.n_users, world.n_items), dtype=bool)
    positives[users, items] = True
    evaluated = np.flatnonzero(positives.any(axis=1))
    if evaluated.size == 0:
        raise ConfigError("no user has a test rating; nothing to evaluate.")
    history_len = int(getattr(policy, "history_len", 20) or 20)
    obs = initial_observation(world, evaluated, history_len)
    slates = np.asarray(policy.act_batch(obs))
    check_policy_slates(name, slates, obs["seen"], policy.slate_size, world.n_items)
    per_user = ranking_metrics(slates[:, :k], positives[evaluated])
    return OfflineMetrics(
        policy=name,
        k=k,
        recall=float(per_user["recall"].mean()),
        ndcg=float(per_user["ndcg"].mean()),
        mrr=float(per_user["mrr"].mean()),
        users=int(evaluated.size),
    )


def initial_observation(world: World, users: np.ndarray, history_len: int) -> dict[str, np.ndarray]:
    """What a recommender sees of ``users`` before any simulated day: their train histories (the world's).

    The same arrays as :meth:`~recsim_personas.envs.model.Population.observe` on a fresh population, read from
    the immutable world without building one (nothing touches the rater).

    Args:
        world: the simulation world.
        users: user indices, int (N,).
        history_len: how many of the latest history entries to return.

    Returns:
        ``user_index`` int64 (N,); ``history_items`` int64 (N, history_len), the latest train items oldest first,
        left-padded with -1; ``history_ratings`` int64 (N, history_len), padded with 0; ``traits`` float32 (N, 3);
        ``seen`` int8 (N, n_items), 1 for the user's train items.
    """
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    items = np.full((len(users), history_len), -1, dtype=np.int64)
    ratings = np.zeros((len(users), history_len), dtype=np.int64)
    seen = np.zeros((len(users), world.n_items), dtype=np.int8)
    for row, u in enumerate(users.tolist()):
        h_items, h_ratings = world.history_items[u], world.history_ratings[u]
        keep = min(len(h_items), history_len)
        if keep:
            items[row, history_len - keep :] = h_items[len(h_items) - keep :]
            ratings[row, history_len - keep :] = h_ratings[len(h_ratings) - keep :]
        seen[row, h_items] = 1
    return {
        "user_index": users.copy(),
        "history_items": items,
        "history_ratings": ratings,
        "traits": world.trait_scores[users].astype(np.float32),
        "seen": seen,
    }


def check_policy_slates(name: str, slates: np.ndarray, seen: np.ndarray, slate_size: int, n_items: int) -> None:
    """Refuse slates with a wrong shape, out-of-range items, repeats, or seen items while unseen ones remain.

    Raises:
        ConfigError: naming the policy, the row and the offending item index.
    """
    from recsim_personas.envs.spaces import check_slates

    seen = np.asarray(seen).astype(bool, copy=False)
    try:
        slates = check_slates(slates, n_items, (len(seen), slate_size), name=f"the slates of policy {name!r}")
    except ValueError as exc:
        raise ConfigError(f"{exc} Fix the policy's act_batch.") from None
    shown_seen = seen[np.arange(len(seen))[:, None], slates]
    room = (~seen).sum(axis=1) >= slate_size
    bad = shown_seen & room[:, None]
    if bad.any():
        row, col = (int(x) for x in np.argwhere(bad)[0])
        raise ConfigError(
            f"policy {name!r} showed item index {int(slates[row, col])} (slate row {row}, position {col}) that the"
            " user has already seen (obs['seen'] is 1) while unseen items were left. Fix: mask obs['seen'] before"
            " picking the slate."
        )
