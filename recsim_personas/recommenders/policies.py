"""Recommender policies: turn an observation of the simulation into a slate of item indices.

A policy reads the observation of :class:`~recsim_personas.envs.movielens_env.MovieLensEnv` (or a batch of
them from the vector environment / :meth:`Population.run_days`) and returns item *indices* (positions in
``env.unwrapped.item_ids``), distinct within a slate and never an item the user has already seen (the
observation's ``seen`` mask) — unless fewer than ``slate_size`` unseen items are left, when the slate is
filled up with seen items, which the simulated user ignores. Policies are seeded with their own generator;
none touches global random state. Nothing here imports the environments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from recsim_personas.errors import ConfigError, unknown_choice

if TYPE_CHECKING:
    import pandas as pd

POLICIES = ("random", "pop")


@runtime_checkable
class Policy(Protocol):
    """Anything that recommends slates.

    Attributes:
        name: short label used in reports.
        slate_size: items per slate.
    """

    name: str
    slate_size: int

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One slate for one observation: int64 (slate_size,) of distinct, unseen item indices."""
        ...

    def act_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One slate per row of a batched observation (leading axis N): int64 (N, slate_size)."""
        ...


def top_k_unseen(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best-scored unseen items per row, best first (ties: lower index first).

    Rows with fewer than ``k`` unseen items are filled up with seen ones (as the other policies do).

    Args:
        scores: float (N, n_items).
        seen: bool (N, n_items).
        k: slate size.

    Returns:
        int64 (N, k).
    """
    masked = np.where(seen, -np.inf, scores)
    order = np.argsort(-masked, axis=1, kind="stable")
    return order[:, :k].astype(np.int64)


class SeenAwarePolicy:
    """Base of the built-in policies and of the RecBole policy: checks the sizes, serves one observation
    through :meth:`act_batch`, and reads the batch's checked ``seen`` mask (:meth:`_seen`).

    Args:
        n_items: number of items (indices ``0 .. n_items - 1``).
        slate_size: items per slate.
        seed: seed of the policy's generator (``self.rng``).
    """

    name = "policy"

    def __init__(self, n_items: int, slate_size: int, seed: int | np.random.SeedSequence | None = None) -> None:
        for field, value in (("n_items", n_items), ("slate_size", slate_size)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(f"{type(self).__name__}.{field} must be a positive integer, got {value!r}.")
        if slate_size > n_items:
            raise ConfigError(f"slate_size ({slate_size!r}) cannot exceed n_items ({n_items!r}).")
        self.n_items, self.slate_size = int(n_items), int(slate_size)
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | np.random.SeedSequence | None) -> None:
        """Restart the policy's generator from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        batch = {key: np.asarray(value)[None, ...] for key, value in obs.items()}
        return self.act_batch(batch)[0]

    def act_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def _seen(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The batch's seen mask as bool (N, n_items).

        Raises:
            ConfigError: the observation has no ``seen`` entry, or it is not of shape (N, n_items).
        """
        fix = "Fix: pass the environment's (batched) observation, whose 'seen' mask has one column per item."
        if "seen" not in obs:
            raise ConfigError(f"{self.name} policy: the observation has no 'seen' mask (keys: {sorted(obs)}). {fix}")
        seen = np.asarray(obs["seen"]).astype(bool, copy=False)
        if seen.ndim != 2 or seen.shape[1] != self.n_items:
            raise ConfigError(
                f"{self.name} policy: obs['seen'] must have shape (N, {self.n_items}), got {seen.shape}. {fix}"
            )
        return seen


class RandomPolicy(SeenAwarePolicy):
    """Uniformly random slates of distinct items the user has not seen.

    Args:
        n_items: number of items (indices ``0 .. n_items - 1``).
        slate_size: items per slate.
        seed: seed of the policy's generator.
    """

    name = "random"

    def act_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        seen = self._seen(obs)
        n, k, rng = seen.shape[0], self.slate_size, self.rng
        # Rejection sampling: i.i.d. uniform candidates, keeping the first k that are unseen and new in the row,
        # is sampling without replacement from the unseen items; rows left short fall back to an exact draw.
        m = 2 * k + 8
        cand = rng.integers(0, self.n_items, size=(n, m))
        keep = ~seen[np.arange(n)[:, None], cand]
        order = np.argsort(cand, axis=1, kind="stable")
        srt = np.take_along_axis(cand, order, axis=1)
        first = np.ones_like(keep)
        first[:, 1:] = srt[:, 1:] != srt[:, :-1]
        new = np.empty_like(first)
        np.put_along_axis(new, order, first, axis=1)
        keep &= new
        keep &= np.cumsum(keep, axis=1) <= k
        full = keep.sum(axis=1) == k
        out = np.empty((n, k), dtype=np.int64)
        out[full] = cand[full][keep[full]].reshape(-1, k)
        for row in np.flatnonzero(~full):
            unseen = np.flatnonzero(~seen[row])
            if unseen.size >= k:
                out[row] = rng.choice(unseen, size=k, replace=False)
            else:  # the user has seen nearly everything: fill up with seen items (which it ignores)
                filler = rng.choice(np.flatnonzero(seen[row]), size=k - unseen.size, replace=False)
                out[row] = np.concatenate([rng.permutation(unseen), filler])
        return out


class PopularPolicy(SeenAwarePolicy):
    """The most popular items the user has not seen, most popular first.

    Args:
        popularity: a popularity score per item index, e.g. the number of ratings in ``split.history()``,
            shape (n_items,).
        slate_size: items per slate.
        seed: breaks ties between equally popular items (a seeded random order, fixed at construction).
    """

    name = "pop"

    def __init__(
        self, popularity: np.ndarray, slate_size: int, seed: int | np.random.SeedSequence | None = None
    ) -> None:
        pop = np.asarray(popularity, dtype=np.float64)
        if pop.ndim != 1 or not np.isfinite(pop).all():
            raise ConfigError(f"popularity must be a finite 1-D array (one score per item), got shape {pop.shape}.")
        super().__init__(len(pop), slate_size, seed)
        self.popularity = pop
        self.order = np.lexsort((self.rng.permutation(len(pop)), -pop)).astype(np.int64)
        """Item indices by decreasing popularity."""

    @classmethod
    def from_history(
        cls,
        history: pd.DataFrame,
        item_ids: np.ndarray,
        slate_size: int,
        seed: int | np.random.SeedSequence | None = None,
    ) -> PopularPolicy:
        """Popularity = the number of ratings of each item in ``history`` (e.g. ``split.history()``).

        Args:
            history: ratings with an ``item_id`` column.
            item_ids: the environment's item ids (``env.unwrapped.item_ids``); index ``j`` ↔ ``item_ids[j]``.
        """
        counts = history["item_id"].value_counts().reindex(np.asarray(item_ids), fill_value=0)
        return cls(counts.to_numpy(dtype=np.float64), slate_size, seed)

    def act_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        seen = self._seen(obs)
        n, k = seen.shape[0], self.slate_size
        n_seen = seen.sum(axis=1)
        short = n_seen > self.n_items - k
        out = np.empty((n, k), dtype=np.int64)
        if (~short).any():
            # Only the first k + (most seen items of a row) positions of the ranking can be needed.
            width = min(self.n_items, k + int(n_seen[~short].max()))
            head = self.order[:width]
            ok = ~seen[~short][:, head]
            ok &= np.cumsum(ok, axis=1) <= k
            out[~short] = head[np.nonzero(ok)[1].reshape(-1, k)]
        if short.any():  # fewer than k unseen items: all of them, then the most popular seen ones
            ranked = np.argsort(seen[short][:, self.order], axis=1, kind="stable")[:, :k]
            out[short] = self.order[ranked]
        return out


def make_policy(
    name: str,
    *,
    n_items: int,
    slate_size: int,
    popularity: np.ndarray | None = None,
    seed: int | np.random.SeedSequence | None = None,
) -> Policy:
    """A policy by name: ``"random"`` or ``"pop"`` (needs ``popularity``, one score per item index)."""
    if name == "random":
        return RandomPolicy(n_items, slate_size, seed)
    if name == "pop":
        if popularity is None:
            raise ConfigError("the 'pop' policy needs popularity (one score per item index).")
        if len(popularity) != n_items:
            raise ConfigError(f"popularity has {len(popularity)} entries, expected one per item ({n_items}).")
        return PopularPolicy(popularity, slate_size, seed)
    raise unknown_choice("policy", name, POLICIES)
