"""Plackett-Luce slates: sampling top-k without replacement from item scores, and their exact probabilities.

A Plackett-Luce (PL) policy with logits ``s`` (one per item; disallowed items — e.g. those the user has seen —
have probability 0) draws a slate ``a_1, ..., a_k`` one position at a time, each from a softmax over the
allowed items not drawn yet:

    P(a_j | a_1..a_{j-1}) = exp(s_{a_j}) / Σ_{i allowed, i ∉ {a_1..a_{j-1}}} exp(s_i)

The slate's probability is the product of its ``k`` conditionals and the probability of its first ``j``
items (a *prefix*) the product of the first ``j``. Sampling uses the Gumbel-top-k trick (the ``k`` largest
of ``s_i + G_i``, ``G_i`` i.i.d. standard Gumbel, are a PL sample in order). These functions are tested
against brute-force enumeration of every slate of small catalogues.

numpy functions serve policies and off-policy evaluation; :func:`torch_position_log_probs` is the
differentiable counterpart for policy-gradient training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    import torch


def _masked(logits: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    s = np.asarray(logits, dtype=np.float64)
    if s.ndim != 2:
        raise ConfigError(f"logits must be a 2-D array (N, n_items), got shape {s.shape}.")
    if allowed is None:
        return s
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape != s.shape:
        raise ConfigError(f"allowed must have the logits' shape {s.shape}, got {allowed.shape}.")
    return np.where(allowed, s, -np.inf)


def sample_slates(
    logits: np.ndarray,
    k: int,
    rng: np.random.Generator,
    allowed: np.ndarray | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Draw one PL slate of ``k`` distinct items per row (Gumbel-top-k).

    Args:
        logits: item scores, float (N, n_items).
        k: slate size.
        rng: the generator every draw comes from.
        allowed: bool (N, n_items), True for items that may be drawn (default: all). A row with fewer than ``k``
            allowed items is filled up with disallowed ones (which have probability 0 under the policy).
        temperature: the logits are divided by it (> 0; smaller is greedier).

    Returns:
        int64 (N, k): item indices in draw order.
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}.")
    s = _masked(logits, allowed) / temperature
    if not 1 <= k <= s.shape[1]:
        raise ConfigError(f"k must be in 1..{s.shape[1]} (the number of items), got {k!r}.")
    key = s + rng.gumbel(size=s.shape)
    # Disallowed items (-inf) go last, in a random order of their own, should a row need them.
    key = np.where(np.isneginf(key), -1e300 * (1.0 + rng.random(s.shape)), key)
    return top_k_of_keys(key, k)


def top_k_of_keys(key: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` largest keys along the last axis, largest first: int64 (..., k). With Gumbel-
    perturbed logits as keys, a Plackett-Luce sample (:func:`sample_slates`)."""
    top = np.argpartition(-key, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(key, top, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(top, order, axis=-1).astype(np.int64)


def position_log_probs(
    logits: np.ndarray, slates: np.ndarray, allowed: np.ndarray | None = None, temperature: float = 1.0
) -> np.ndarray:
    """The log-probability of each slate's item at each position given the items before it.

    Args:
        logits: item scores, float (N, n_items).
        slates: item indices in order, int (N, k), distinct within a row.
        allowed: bool (N, n_items) (default: all items allowed).
        temperature: the logits are divided by it.

    Returns:
        float64 (N, k): ``log P(a_j | a_1..a_{j-1})``; ``-inf`` where a disallowed item was shown. Their
        cumulative sum along axis 1 is the prefix log-probabilities, their sum the slate's.
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}.")
    s = _masked(logits, allowed) / temperature
    slates = np.asarray(slates, dtype=np.int64)
    if slates.ndim != 2 or slates.shape[0] != s.shape[0]:
        raise ConfigError(f"slates must have shape ({s.shape[0]}, k), got {slates.shape}.")
    rows = np.arange(s.shape[0])
    out = np.empty(slates.shape, dtype=np.float64)
    left = s.copy()
    for j in range(slates.shape[1]):
        m = left.max(axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        with np.errstate(divide="ignore"):
            log_z = np.log(np.exp(left - m).sum(axis=1)) + m[:, 0]
        chosen = left[rows, slates[:, j]]
        out[:, j] = np.where(np.isneginf(chosen), -np.inf, chosen - log_z)
        left[rows, slates[:, j]] = -np.inf
    return out


def slate_log_prob(
    logits: np.ndarray, slates: np.ndarray, allowed: np.ndarray | None = None, temperature: float = 1.0
) -> np.ndarray:
    """``log P(slate)`` under the PL policy, float64 (N,) (see :func:`position_log_probs`)."""
    return position_log_probs(logits, slates, allowed, temperature).sum(axis=1)


def torch_position_log_probs(logits: torch.Tensor, slates: torch.Tensor, allowed: torch.Tensor | None = None):
    """Differentiable :func:`position_log_probs` (temperature 1: scale the logits before).

    Args:
        logits: float tensor (N, n_items).
        slates: int64 tensor (N, k).
        allowed: bool tensor (N, n_items) or ``None``.

    Returns:
        float tensor (N, k) of conditional log-probabilities (gradients flow into ``logits``).
    """
    import torch

    neg = torch.finfo(logits.dtype).min
    left = logits if allowed is None else logits.masked_fill(~allowed, neg)
    taken = torch.zeros_like(left, dtype=torch.bool)
    out = []
    for j in range(slates.shape[1]):
        col = slates[:, j : j + 1]
        masked = left.masked_fill(taken, neg)
        out.append(masked.gather(1, col).squeeze(1) - torch.logsumexp(masked, dim=1))
        taken = taken.scatter(1, col, True)
    return torch.stack(out, dim=1)
