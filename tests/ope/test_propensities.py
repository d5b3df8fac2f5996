"""Exact PL inclusion probabilities against brute-force enumeration and a slow direct integration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsim_personas.errors import ConfigError
from recsim_personas.ope.propensities import masked_softmax, pl_inclusion


def _enumerated(logits: np.ndarray, k: int, allowed: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(i ∈ slate) by summing the PL probability of every ordered slate, by the definition."""
    w = np.where(allowed, np.exp(logits / temperature), 0.0)
    incl = np.zeros(len(w))
    for slate in itertools.permutations(np.flatnonzero(allowed), k):
        p, left = 1.0, w.copy()
        for i in slate:
            p *= left[i] / left.sum()
            left[i] = 0.0
        incl[list(slate)] += p
    return incl


def _direct(logits: np.ndarray, k: int, temperature: float, nodes: int = 20000) -> np.ndarray:
    """The race integral with the Poisson-binomial count of the others built item by item (slow, simple)."""
    w = masked_softmax(logits[None], None, temperature)[0]
    u = np.linspace(np.log(1e-9), np.log(1e8), nodes)
    v = np.exp(u)
    p = -np.expm1(-np.outer(w, v))
    out = np.zeros(len(w))
    for i in range(len(w)):
        poly = np.zeros((k, nodes))
        poly[0] = 1.0
        for j in range(len(w)):
            if j != i:
                new = poly * (1 - p[j])
                new[1:] += poly[:-1] * p[j]
                poly = new
        out[i] = np.trapezoid(w[i] * v * np.exp(-w[i] * v) * poly.sum(axis=0), u)
    return out


@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
def test_inclusion_matches_enumeration_n6_k3(temperature):
    rng = np.random.default_rng(0)
    for _ in range(5):
        logits = rng.normal(size=6) * 2
        allowed = np.ones(6, dtype=bool)
        allowed[rng.integers(6)] = False  # 5 allowed, k = 3
        got = pl_inclusion(logits[None], np.arange(6)[None], 3, allowed[None], temperature)[0]
        np.testing.assert_allclose(got, _enumerated(logits, 3, allowed, temperature), atol=1e-8)
        assert got[~allowed].tolist() == [0.0]


@pytest.mark.parametrize(("n", "k"), [(4, 2), (7, 2), (7, 5), (8, 4)])
def test_inclusion_matches_enumeration_other_sizes(n, k):
    rng = np.random.default_rng(n * 10 + k)
    logits = rng.normal(size=n) * 3
    allowed = np.ones(n, dtype=bool)
    got = pl_inclusion(logits[None], np.arange(n)[None], k, allowed[None])[0]
    np.testing.assert_allclose(got, _enumerated(logits, k, allowed), atol=1e-8)


@pytest.mark.parametrize(("temperature", "k"), [(0.2, 5), (1.0, 8), (3.0, 4)])
def test_inclusion_matches_direct_integration_on_a_larger_catalogue(temperature, k):
    logits = np.random.default_rng(1).normal(size=25) * 2
    got = pl_inclusion(logits[None], np.arange(25)[None], k, None, temperature)[0]
    np.testing.assert_allclose(got, _direct(logits, k, temperature), rtol=1e-6, atol=1e-9)


def test_inclusions_sum_to_k_on_a_large_catalogue():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 400)) * np.array([[0.5], [2.0], [8.0]])  # flat, peaked, nearly deterministic
    allowed = rng.random((3, 400)) < 0.9
    got = pl_inclusion(logits, np.tile(np.arange(400), (3, 1)), 10, allowed)
    np.testing.assert_allclose(got.sum(axis=1), 10.0, atol=1e-6)
    assert (got[~allowed] == 0).all() and (got >= 0).all() and (got <= 1).all()


def test_repeated_items_k1_and_short_rows():
    logits = np.array([[0.0, 1.0, 2.0, 3.0, 0.5]])
    once = pl_inclusion(logits, np.array([[3, 1]]), 2)
    twice = pl_inclusion(logits, np.array([[3, 1, 3, 1]]), 2)
    np.testing.assert_allclose(twice, np.hstack([once, once]), atol=1e-12)
    np.testing.assert_allclose(pl_inclusion(logits, np.array([[0, 4]]), 1), masked_softmax(logits, None)[:, [0, 4]])
    allowed = np.array([[True, False, True, False, False]])  # 2 allowed items, k = 3: both surely shown
    assert pl_inclusion(logits, np.array([[0, 1, 2]]), 3, allowed).tolist() == [[1.0, 0.0, 1.0]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be an integer in 1..5"),
        ({"items": np.array([[7]])}, r"items must be indices in \[0, 5\)"),
        ({"items": np.array([1, 2])}, r"items must have shape \(1, r\)"),
        ({"temperature": 0.0}, "temperature must be > 0"),
    ],
)
def test_inclusion_refuses_bad_input(kwargs, message):
    args = {"logits": np.zeros((1, 5)), "items": np.array([[0]]), "k": 2} | kwargs
    with pytest.raises(ConfigError, match=message):
        pl_inclusion(**args)
