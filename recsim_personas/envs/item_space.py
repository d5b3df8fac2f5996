"""A low-dimensional item space: item factors from who rated what, for policies and action wrappers.

:func:`item_factors` is a truncated SVD (scikit-learn's ``TruncatedSVD``) of the binary user × item matrix of
the ratings it is given; items that two users' histories share end up close. Policies score items by a dot
product with a user vector in this space, and
:class:`~recsim_personas.envs.wrappers.ScoreSlateWrapper` lets an agent act with a preference vector in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.envs.world import World


def item_factors(
    user_rows: np.ndarray, item_rows: np.ndarray, n_items: int, dim: int = 32, seed: int = 0
) -> np.ndarray:
    """Item factors of a truncated SVD of the binary user × item matrix.

    Args:
        user_rows: a user index per rating, int (R,) (any non-negative integers).
        item_rows: the item index of each rating, int (R,) in ``[0, n_items)``.
        n_items: number of items (rows of the result; an item nobody rated gets a zero row).
        dim: factors per item (``1 <= dim < min(users, n_items)``).
        seed: the SVD's random state.

    Returns:
        float32 (n_items, dim): item factors scaled so that the mean row norm of rated items is 1.

    Raises:
        ConfigError: mismatched inputs, an item index out of range, or ``dim`` too large for the matrix.
    """
    from scipy.sparse import csr_matrix
    from sklearn.decomposition import TruncatedSVD

    users = np.asarray(user_rows, dtype=np.int64)
    items = np.asarray(item_rows, dtype=np.int64)
    if users.shape != items.shape or users.ndim != 1 or users.size == 0:
        raise ConfigError(
            f"user_rows and item_rows must be non-empty 1-D arrays of one length, got {users.shape} and {items.shape}."
        )
    if items.min() < 0 or items.max() >= n_items or users.min() < 0:
        raise ConfigError(f"item indices must be in [0, {n_items}) and user indices >= 0.")
    _, users = np.unique(users, return_inverse=True)
    n_users = int(users.max()) + 1
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim < min(n_users, n_items):
        raise ConfigError(
            f"dim must be an integer in [1, {min(n_users, n_items) - 1}] for a {n_users} x {n_items}"
            f" matrix, got {dim!r}."
        )
    matrix = csr_matrix((np.ones(users.size), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # duplicates count once
    svd = TruncatedSVD(n_components=dim, random_state=seed)
    svd.fit(matrix)
    factors = svd.components_.T * svd.singular_values_  # (n_items, dim)
    norms = np.linalg.norm(factors, axis=1)
    scale = norms[norms > 0].mean() if (norms > 0).any() else 1.0
    return (factors / scale).astype(np.float32)


def world_item_factors(world: World, dim: int = 32, seed: int = 0) -> np.ndarray:
    """:func:`item_factors` of the world's simulated users' train histories, float32 (n_items, dim)."""
    users = np.concatenate([np.full(len(h), u, dtype=np.int64) for u, h in enumerate(world.history_items)])
    items = np.concatenate(world.history_items).astype(np.int64)
    return item_factors(users, items, world.n_items, dim=dim, seed=seed)


def history_item_factors(history: pd.DataFrame, item_ids: np.ndarray, dim: int = 32, seed: int = 0) -> np.ndarray:
    """:func:`item_factors` of a ratings frame (e.g. ``split.history()``: every user's train and background
    ratings), rows in the order of ``item_ids`` (e.g. ``world.item_ids``, ascending). float32 (len(item_ids), dim).

    Raises:
        ConfigError: a rated item that is not in ``item_ids``.
    """
    ids = np.asarray(item_ids)
    rated = history["item_id"].to_numpy()
    pos = np.searchsorted(ids, rated).clip(max=len(ids) - 1)
    if not (ids[pos] == rated).all():
        missing = np.unique(rated[ids[pos] != rated])[:5].tolist()
        raise ConfigError(f"rated items {missing} are not among the item ids given; pass the world's item_ids.")
    return item_factors(history["user_id"].to_numpy(), pos, len(ids), dim=dim, seed=seed)
