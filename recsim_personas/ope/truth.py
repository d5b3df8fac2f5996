"""The simulator's ground truth: the exact expected reward of showing an item to a user, now.

On a page, :func:`~recsim_personas.envs.reaction.react_page` decides every shown item the user has not seen on
its own: a Bernoulli watch with the choice session's probability (given the rater's expected rating and the
user's history as it is at that page), then a rating drawn from the rater's distribution (or its rounded mean or
its mode, per ``rating_mode``); seen items are never watched. Nothing depends on the slot or on the other items of
the page. So the expected reward of a slate is the sum over its items of

    q(x, i) = P(watch i | x) · E[reward of a watched i | x],

with ``E[...]`` = ``P(rating ≥ like_threshold)`` (``"likes"``), 1 (``"watches"``) or the expected rating
(``"rating"``). :func:`expected_item_rewards` computes ``q`` from the population's own rater session and choice
session, reading its :class:`~recsim_personas.envs.state.UserTable` — it changes nothing and draws nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recsim_personas.envs.reaction import watch_chances
from recsim_personas.envs.session import REWARD_MODES
from recsim_personas.errors import unknown_choice

if TYPE_CHECKING:
    from recsim_personas.envs.model import Population


def expected_item_rewards(population: Population, users: np.ndarray, items: np.ndarray, mode: str) -> np.ndarray:
    """``q(x, i)`` of (user, item) pairs for the users' state now (see the module docstring).

    Args:
        population: the running population (read only).
        users: user rows, int (N,).
        items: item indices, int (N, M) (any number per user; repeats allowed).
        mode: the reward, ``"likes"``, ``"watches"`` or ``"rating"``.

    Returns:
        float64 (N, M); 0 for items the user has seen.
    """
    if mode not in REWARD_MODES:
        raise unknown_choice("reward", str(mode), REWARD_MODES)
    world, table, cfg = population.world, population.state, population.config
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    items = np.asarray(items, dtype=np.int64)
    rows = np.broadcast_to(users[:, None], items.shape)
    out = np.zeros(items.shape, dtype=np.float64)
    ask = ~table.seen[rows, items]
    if not ask.any():
        return out
    dist, expected, p_watch = watch_chances(
        table, world, population.rater, population.choice, cfg, rows[ask], items[ask]
    )
    if mode == "watches":
        gain = np.ones_like(expected)
    else:
        if cfg.rating_mode == "sample":
            levels = None
        elif cfg.rating_mode == "expected":
            levels = np.clip(np.rint(expected), 1, 5)
        else:  # "mode"
            levels = np.argmax(dist, axis=1).astype(np.float64) + 1
        if mode == "likes":
            gain = dist[:, cfg.like_threshold - 1 :].sum(axis=1) if levels is None else levels >= cfg.like_threshold
        else:
            gain = expected if levels is None else levels
    out[ask] = p_watch * np.asarray(gain, dtype=np.float64)
    return out
