"""EASE (Steck, 2019): the closed-form item-item model behind the choice model's collaborative features.

``B = argmin ||X - X B||² + λ ||B||²`` subject to ``diag(B) = 0``, solved in closed form:
``P = (XᵀX + λI)⁻¹``, ``B = -P / diag(P)`` column-wise, ``diag(B) = 0``. A user's score for item ``j`` is
``Σ_{i in history} B[i, j]``, so it follows the history as the simulation adds watches — which a model
scored at its training-time history (RecBole's EASE scores users through the interaction matrix it was
trained on) cannot. Column ``j`` of ``B`` is the ridge regression of item ``j``'s column on the other items'
columns; the tests check it against scikit-learn's ``Ridge``.
"""

from __future__ import annotations

import numpy as np


def fit_ease(x: np.ndarray, l2: float) -> np.ndarray:
    """The EASE weights of a user-item matrix.

    Args:
        x: interactions, float or bool (n_users, n_items) (1 = the user rated the item).
        l2: the L2 penalty λ (> 0).

    Returns:
        float32 (n_items, n_items) with a zero diagonal: ``B[i, j]`` is what having item ``i`` adds to item
        ``j``'s score.
    """
    x = np.asarray(x, dtype=np.float64)
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += float(l2)
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)
