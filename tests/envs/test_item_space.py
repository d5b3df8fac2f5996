"""Item factors: co-rated items are close, bad inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest

from recsim_personas.envs.item_space import item_factors
from recsim_personas.errors import ConfigError


def test_items_rated_by_the_same_users_are_closer_than_others():
    # two taste groups: users 0-19 rate items 0-4, users 20-39 rate items 5-9
    users = np.repeat(np.arange(40), 5)
    items = np.concatenate([np.arange(5) if u < 20 else np.arange(5, 10) for u in range(40)])
    f = item_factors(users, items, n_items=11, dim=2)
    assert f.shape == (11, 2) and f.dtype == np.float32
    cos = (f @ f.T) / np.outer(np.linalg.norm(f, axis=1) + 1e-9, np.linalg.norm(f, axis=1) + 1e-9)
    assert cos[0, 1] > 0.99 and abs(cos[0, 7]) < 0.01
    assert np.allclose(f[10], 0.0)  # nobody rated item 10
    assert np.linalg.norm(f[:10], axis=1).mean() == pytest.approx(1.0, rel=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="dim must be"):
        item_factors(np.array([0, 1]), np.array([0, 1]), n_items=3, dim=5)
    with pytest.raises(ConfigError, match="item indices"):
        item_factors(np.array([0, 1]), np.array([0, 7]), n_items=3, dim=1)


def test_history_factors_follow_the_item_ids_and_refuse_unknown_items():
    import pandas as pd

    from recsim_personas.envs.item_space import history_item_factors

    users = np.repeat(np.arange(40), 5)
    items = np.concatenate([np.arange(5) if u < 20 else np.arange(5, 10) for u in range(40)])
    ids = np.arange(10) * 10 + 7  # item ids 7, 17, ..., 97
    history = pd.DataFrame({"user_id": users + 100, "item_id": ids[items]})
    np.testing.assert_allclose(
        history_item_factors(history, ids, dim=2), item_factors(users, items, n_items=10, dim=2), atol=1e-6
    )
    with pytest.raises(ConfigError, match=r"rated items \[7\]"):
        history_item_factors(history, ids[1:], dim=2)
