"""Plackett-Luce sampling and probabilities against brute-force enumeration of every slate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from recsim_personas.errors import ConfigError
from recsim_personas.recommenders.plackett_luce import (
    position_log_probs,
    sample_slates,
    slate_log_prob,
    torch_position_log_probs,
)


def _brute(logits: np.ndarray, k: int, allowed: np.ndarray) -> dict[tuple[int, ...], float]:
    """P(slate) for every ordered slate of allowed items, by the definition."""
    w = np.where(allowed, np.exp(logits), 0.0)
    out = {}
    for slate in itertools.permutations(np.flatnonzero(allowed), k):
        p, left = 1.0, w.copy()
        for i in slate:
            p *= left[i] / left.sum()
            left[i] = 0.0
        out[tuple(int(i) for i in slate)] = p
    return out


def test_slate_probabilities_match_enumeration():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 6)) * 2
    allowed = np.array([[True, True, False, True, True, True]])
    probs = _brute(logits[0], 3, allowed[0])
    assert sum(probs.values()) == pytest.approx(1.0)
    slates = np.array(list(probs))
    lp = slate_log_prob(np.repeat(logits, len(slates), 0), slates, np.repeat(allowed, len(slates), 0))
    np.testing.assert_allclose(np.exp(lp), list(probs.values()), rtol=1e-10)
    # prefixes: P(first two) is the sum over the third
    pos = position_log_probs(np.repeat(logits, len(slates), 0), slates, np.repeat(allowed, len(slates), 0))
    prefix = {}
    for slate, p in probs.items():
        prefix[slate[:2]] = prefix.get(slate[:2], 0.0) + p
    np.testing.assert_allclose(np.exp(pos[:, :2].sum(1)), [prefix[tuple(s[:2])] for s in slates], rtol=1e-10)


def test_disallowed_item_has_zero_probability_and_temperature_scales():
    logits = np.array([[0.0, 1.0, 2.0, 3.0]])
    lp = slate_log_prob(logits, np.array([[0, 1]]), np.array([[False, True, True, True]]))
    assert np.isneginf(lp[0])
    np.testing.assert_allclose(
        slate_log_prob(logits, np.array([[3, 2]]), temperature=0.5), slate_log_prob(logits * 2, np.array([[3, 2]]))
    )


def test_sampling_frequencies_match_probabilities():
    rng = np.random.default_rng(1)
    logits = np.array([[0.5, -0.3, 1.2, 0.0, 0.8]])
    allowed = np.array([[True, True, True, False, True]])
    probs = _brute(logits[0], 2, allowed[0])
    n = 40_000
    draws = sample_slates(np.repeat(logits, n, 0), 2, rng, np.repeat(allowed, n, 0))
    assert not (draws == 3).any()
    keys, counts = np.unique(draws, axis=0, return_counts=True)
    freq = {tuple(int(x) for x in key): c / n for key, c in zip(keys, counts, strict=True)}
    for slate, p in probs.items():
        assert freq.get(slate, 0.0) == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / n) + 1e-3)


def test_short_rows_are_filled_with_disallowed_items_and_slates_are_distinct():
    rng = np.random.default_rng(2)
    allowed = np.zeros((50, 8), dtype=bool)
    allowed[:, :2] = True
    draws = sample_slates(np.zeros((50, 8)), 4, rng, allowed)
    assert set(draws[:, :2].ravel()) <= {0, 1}
    assert all(len(set(row)) == 4 for row in draws)


def test_torch_log_probs_equal_numpy_and_have_gradients():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 9))
    allowed = rng.random((5, 9)) > 0.2
    allowed[:, :4] = True
    slates = np.stack([rng.permutation(4)[:3] for _ in range(5)])
    t = torch.tensor(logits, requires_grad=True)
    got = torch_position_log_probs(t, torch.tensor(slates), torch.tensor(allowed))
    np.testing.assert_allclose(got.detach().numpy(), position_log_probs(logits, slates, allowed), rtol=1e-10)
    got.sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()
    assert (t.grad.numpy()[~allowed] == 0).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="temperature"):
        sample_slates(np.zeros((1, 3)), 2, np.random.default_rng(), temperature=0)
    with pytest.raises(ConfigError, match="k must be"):
        sample_slates(np.zeros((1, 3)), 4, np.random.default_rng())
    with pytest.raises(ConfigError, match="slates must have shape"):
        position_log_probs(np.zeros((2, 3)), np.zeros((3, 2), dtype=int))
