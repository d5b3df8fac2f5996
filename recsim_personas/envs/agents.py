"""One simulated MovieLens user: a Mesa agent.

A :class:`SimulatedUser` carries its identity (``user_id``, ``index`` in the population), its
:class:`Traits`, a reference to the shared rater, and its state: the rating history (item ids and ratings,
starting with its train ratings in time order), the set of items it has seen (rated or watched), and the
state of its current session. The state lives in population-wide arrays owned by
:class:`~recsim_personas.envs.model.Population` (one row per user), and the agent's attributes read and
write its own row: that keeps the attributes on the user object while letting the vector environment
gather the state of many users with one fancy index instead of a Python loop.

Every random draw comes from the model's generator (``self.model.rng``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mesa
import numpy as np

from recsim_personas.envs.session import start_probability

if TYPE_CHECKING:
    from recsim_personas.agents.rater import Rater
    from recsim_personas.envs.model import Population, Reaction


@dataclass(frozen=True)
class Traits:
    """A user's trait statistics (see :mod:`recsim_personas.personas.traits`).

    Attributes:
        activity: number of train ratings.
        conformity: mean squared deviation from the items' historical averages (small = conformist).
        diversity: number of genres covering 80% of the user's genre share.
        activity_level, conformity_level, diversity_level: ``"low"`` / ``"medium"`` / ``"high"``.
        activity_score, conformity_score, diversity_score: percentile ranks in [0, 1] (1 = most active,
            most conformist, most diverse); the simulation uses these.
        top_genres: the genres covering 80% of the user's genre share, largest first.
    """

    activity: int
    conformity: float
    diversity: int
    activity_level: str
    conformity_level: str
    diversity_level: str
    activity_score: float
    conformity_score: float
    diversity_score: float
    top_genres: tuple[str, ...]

    def scores(self) -> np.ndarray:
        """``[activity_score, conformity_score, diversity_score]``, float64 (3,)."""
        return np.array([self.activity_score, self.conformity_score, self.diversity_score], dtype=np.float64)


class SimulatedUser(mesa.Agent):
    """A simulated user of the population.

    Args:
        model: the population.
        index: the user's row in the population (``model.world.user_ids[index]`` is its id).

    Attributes:
        index: row of the user in the population's arrays.
        user_id: the MovieLens user id.
        traits: the user's :class:`Traits`.
        rater: the shared rater that predicts its rating distributions.
    """

    model: Population

    def __init__(self, model: Population, index: int) -> None:
        super().__init__(model)
        self.index = int(index)
        self.user_id = int(model.world.user_ids[index])
        self.traits: Traits = model.world.traits[index]
        self.rater: Rater = model.world.rater

    # ---------------------------------------------------------------------------------- state (views)
    @property
    def history_items(self) -> np.ndarray:
        """Item ids the user rated (train) or watched (simulation), oldest first. int64 (n,)."""
        m = self.model
        return m.world.item_ids[m._hist_items[self.index, : m._hist_len[self.index]]]

    @property
    def history_ratings(self) -> np.ndarray:
        """The ratings matching :attr:`history_items`. int64 (n,) in 1..5."""
        m = self.model
        return m._hist_ratings[self.index, : m._hist_len[self.index]].astype(np.int64)

    @property
    def seen_items(self) -> set[int]:
        """Ids of the items the user has rated or watched (never recommended to be watched again)."""
        m = self.model
        return {int(i) for i in m.world.item_ids[np.flatnonzero(m._seen[self.index])]}

    @property
    def seen_mask(self) -> np.ndarray:
        """True for each item index the user has seen; a read-only view, bool (n_items,)."""
        view = self.model._seen[self.index]
        view.flags.writeable = False
        return view

    @property
    def in_session(self) -> bool:
        """Whether the user is in a session now (being served, or queued to be)."""
        return bool(self.model._in_session[self.index] or self.model._queued[self.index])

    @property
    def session_pages(self) -> int:
        """Pages shown in the current (or last) session."""
        return int(self.model._pages[self.index])

    @property
    def satisfaction(self) -> float:
        """Satisfaction of the current (or last) session, in [-1, 1]."""
        return float(self.model._satisfaction[self.index])

    @property
    def unsatisfied_streak(self) -> int:
        """Sessions in a row that ended unsatisfied."""
        return int(self.model._unsat_streak[self.index])

    @property
    def return_propensity(self) -> float:
        """Factor in (0, 1] on the daily session probability; lowered by unsatisfied sessions."""
        return float(self.model._return_prop[self.index])

    @property
    def start_probability(self) -> float:
        """Probability of starting a session on a day (see :func:`~recsim_personas.envs.session.start_probability`)."""
        m = self.model
        return float(start_probability(m._activity[self.index], m._return_prop[self.index], m.config))

    # ------------------------------------------------------------------------------------- behaviour
    def step(self) -> None:
        """One simulated day: a user not already in a session starts one with :attr:`start_probability`.

        The day's uniform draw of every user comes from the model's generator in one call at the start of
        the day (``model.day_uniform[index]``), so a decision does not depend on the shuffled order.
        """
        m, i = self.model, self.index
        if not m._day_busy[i] and m._day_u[i] < m._day_p[i]:
            m.queue_session(i)

    def react(self, slate: np.ndarray) -> Reaction:
        """React to one page of the current session: watch, rate, continue or exit.

        Args:
            slate: item indices (into ``model.world.item_ids``), int (k,), distinct.

        Returns:
            the population's :class:`~recsim_personas.envs.model.Reaction` for this one session.
        """
        return self.model.react(np.array([self.index], dtype=np.int64), np.asarray(slate)[None, :])

    def __repr__(self) -> str:
        return f"SimulatedUser(user_id={self.user_id}, history={int(self.model._hist_len[self.index])})"
