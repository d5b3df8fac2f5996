"""One page of many concurrent sessions: what the users do with the slates they are shown.

:func:`react_page` is the whole road of a rating request, as public functions: the unseen (user, item) pairs
of the slates go to the population's rater session in **one** ``predict`` call, the distributions are checked
(:func:`~recsim_personas.agents.rater.check_distribution`), and the behaviour functions of
:mod:`recsim_personas.envs.session` turn them into watch decisions, ratings and continue/exit decisions —
every draw from the generator it is given. It updates the :class:`~recsim_personas.envs.state.UserTable` (pages,
satisfaction, histories and seen sets) and reports the watches to the rater session; ending sessions (churn
bookkeeping) is the population's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recsim_personas.agents.rater import RATINGS, check_distribution
from recsim_personas.envs.session import (
    SessionConfig,
    continue_after_page,
    page_satisfaction,
    rate,
)

if TYPE_CHECKING:
    from recsim_personas.agents.rater import RaterSession
    from recsim_personas.choice.model import ChoiceSession
    from recsim_personas.envs.state import UserTable
    from recsim_personas.envs.world import World


@dataclass(frozen=True, eq=False)
class Reaction:
    """What ``N`` users did with one page each.

    Attributes:
        users: user indices, int64 (N,).
        slates: item indices shown, int64 (N, k).
        expected: the rater's expected rating of each shown item, float64 (N, k); 0 for items already seen
            (the rater is not asked about them).
        asked: bool (N, k): the shown items the rater was asked about (those the user had not seen).
        dist: the rater's rating distributions of the asked items, float64 (P, 5), ``P = asked.sum()``, in the
            row-major order of ``asked`` (``dist[j]`` belongs to the j-th True of ``asked.ravel()``).
        p_watch: the watch probabilities of the asked items, float64 (P,), in the same order.
        watched: bool (N, k).
        ratings: int64 (N, k): the rating of each watched item, 0 elsewhere.
        page_satisfaction: float64 (N,) in [-1, 1].
        satisfaction: session satisfaction after the page, float64 (N,).
        pages: pages shown in the session so far, including this one, int64 (N,).
        exited: the user chose to leave after this page, bool (N,).
        truncated: the session hit ``max_pages`` without the user leaving, bool (N,).
    """

    users: np.ndarray
    slates: np.ndarray
    expected: np.ndarray
    watched: np.ndarray
    ratings: np.ndarray
    page_satisfaction: np.ndarray
    satisfaction: np.ndarray
    pages: np.ndarray
    exited: np.ndarray
    truncated: np.ndarray
    asked: np.ndarray | None = None
    dist: np.ndarray | None = None
    p_watch: np.ndarray | None = None

    @property
    def ended(self) -> np.ndarray:
        """Sessions that are over after this page, bool (N,)."""
        return self.exited | self.truncated


def watch_chances(
    table: UserTable,
    world: World,
    rater: RaterSession,
    choice: ChoiceSession,
    cfg: SessionConfig,
    users: np.ndarray,
    items: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a page's users think of (user, item) pairs they have not seen, drawing nothing: one ``predict`` call.

    Args:
        table: the population's state (read).
        world: the simulation's inputs.
        rater: the population's rater session.
        choice: the population's choice session.
        cfg: the behaviour coefficients.
        users: user rows, int64 (P,).
        items: item indices, int64 (P,).

    Returns:
        ``(dist, expected, p_watch)``: the checked rating distributions float64 (P, 5), the expected ratings
        float64 (P,) and the watch probabilities float64 (P,).

    Raises:
        RaterOutputError: the rater returned something that is not a batch of distributions.
    """
    dist = rater.predict(world.user_ids[users], world.item_ids[items])
    dist = check_distribution(dist, users.size, source=f"rater {world.rater_name!r}")
    expected = dist @ RATINGS
    return dist, expected, choice.watch_probability(table, users, items, expected, cfg)


def react_page(
    table: UserTable,
    world: World,
    rater: RaterSession,
    choice: ChoiceSession,
    cfg: SessionConfig,
    rng: np.random.Generator,
    users: np.ndarray,
    slates: np.ndarray,
) -> Reaction:
    """Play one page of the sessions of ``users`` (already validated: distinct, in session, valid slates).

    Args:
        table: the population's state (updated in place).
        world: the simulation's inputs.
        rater: the population's rater session (asked once; told what was watched).
        choice: the population's choice session (decides the watches).
        cfg: the behaviour coefficients.
        rng: the population's generator.
        users: distinct user rows, int64 (N,).
        slates: item indices, int64 (N, k), distinct within a row.

    Raises:
        RaterOutputError: the rater returned something that is not a batch of distributions.
    """
    n, k = slates.shape
    rows = np.broadcast_to(users[:, None], (n, k))
    ask = ~table.seen[rows, slates]
    ru, ri = rows[ask], slates[ask]
    expected = np.zeros((n, k), dtype=np.float64)
    dist, p = np.zeros((0, RATINGS.size)), np.zeros(0)
    watched = np.zeros((n, k), dtype=bool)
    ratings = np.zeros((n, k), dtype=np.int64)
    if ru.size:
        dist, e, p = watch_chances(table, world, rater, choice, cfg, ru, ri)
        watch = rng.random(ru.size) < p
        r = np.zeros(ru.size, dtype=np.int64)
        if watch.any():
            r[watch] = rate(dist[watch], cfg.rating_mode, rng)
        expected[ask], watched[ask], ratings[ask] = e, watch, r

    pages = table.pages[users] + 1
    page_sat = page_satisfaction(watched, ratings, cfg)
    sat, p_cont = continue_after_page(
        watched, ratings, table.satisfaction[users], pages, table.session_watches[users], table.activity[users], cfg
    )
    table.session_watches[users] += watched.sum(axis=1)
    exited = rng.random(n) >= p_cont
    truncated = ~exited & (pages >= cfg.max_pages)
    table.pages[users] = pages
    table.satisfaction[users] = sat
    if watched.any():
        table.record(users, slates, watched, ratings)
        rater.observe(world.user_ids[rows[watched]], world.item_ids[slates[watched]], ratings[watched])
    return Reaction(
        users=users,
        slates=slates,
        expected=expected,
        watched=watched,
        ratings=ratings,
        page_satisfaction=page_sat,
        satisfaction=sat,
        pages=pages,
        exited=exited,
        truncated=truncated,
        asked=ask,
        dist=dist,
        p_watch=p,
    )
