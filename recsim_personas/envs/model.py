"""The Mesa model: a population of simulated users living through days, their sessions scheduled as events.

:class:`Population` is a ``mesa.Model`` with a discrete-event clock (``mesa.experimental.devs.DEVSimulator``,
in minutes since the start). Each :meth:`Population.step` is one day: every user who is not already in a
session starts one with its daily probability, at a minute of the day drawn uniformly (a hand-set choice),
and that start is scheduled as an event. What happens at a start depends on who serves the sessions:

- :meth:`Population.run_days` serves them with a policy: a session's pages are events ``page_minutes``
  apart, and the pages due at the same minute — of every session open then — are served together (one
  ``act_batch`` call to the policy, one ``predict`` call to the rater), so sessions overlap and interleave
  in time, and one that starts before midnight may end the next day;
- the Gymnasium environments serve them themselves: :meth:`Population.next_session` advances the clock to
  the next start (simulating days as needed) and hands that user to the environment, which plays its pages.

The users' state is the vectorised :class:`~recsim_personas.envs.state.UserTable` (a row per user, see there
why), one page is :func:`~recsim_personas.envs.reaction.react_page`, and the population asks the shared
rater only through its own session (:func:`~recsim_personas.agents.rater.open_session`), so what its users
watch never leaks into another population on the same world. A ``mesa.DataCollector`` records the metrics of
each day (:mod:`~recsim_personas.envs.metrics`; an event is booked on the day during which it happens).

Randomness: every draw comes from the model's generator (``Model(seed=...)`` or ``Model(rng=...)`` →
``self.rng``); nothing touches global random state.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from recsim_personas.agents.rater import RaterSession, open_session
from recsim_personas.choice.model import ChoiceSession, open_choice
from recsim_personas.envs._mesa import DEVSimulator, Priority, mesa
from recsim_personas.envs.metrics import DayStats, reporters, summarise
from recsim_personas.envs.reaction import Reaction, react_page
from recsim_personas.envs.session import SessionConfig, return_propensity, start_probability
from recsim_personas.envs.spaces import check_slates
from recsim_personas.envs.state import UserTable, UserView
from recsim_personas.errors import ConfigError, InvalidActionError, RecsimPersonasError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mesa.experimental.devs import SimulationEvent

    from recsim_personas.envs.trace import Tracer
    from recsim_personas.envs.world import World

logger = logging.getLogger(__name__)

MINUTES_PER_DAY = 1440
MAX_IDLE_DAYS = 100_000


class BatchPolicy(Protocol):
    """What :meth:`Population.run_days` needs of a policy (see :mod:`recsim_personas.recommenders`)."""

    slate_size: int

    def act_batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class _Serving:
    """:meth:`Population.run_days`' state while it serves sessions: the policy and the pages due per minute."""

    policy: BatchPolicy
    history_len: int
    due: dict[float, list[int]] = field(default_factory=dict)


class Population(mesa.Model):
    """The simulated users of a world; one :meth:`step` = one day, sessions scheduled as Mesa events.

    Args:
        world: the simulation's inputs (from :func:`~recsim_personas.envs.world.make_world`), shared.
        config: behaviour coefficients.
        seed: seed of the model's generators (Mesa's ``seed``), or
        rng: a ``numpy.random.Generator`` (or seed-like) to draw from (Mesa's ``rng``); not both.

    Attributes:
        world: the :class:`~recsim_personas.envs.world.World`.
        config: the :class:`~recsim_personas.envs.session.SessionConfig`.
        state: the users' :class:`~recsim_personas.envs.state.UserTable` (owned by this population).
        rater: this population's :class:`~recsim_personas.agents.rater.RaterSession` of ``world.rater``.
        simulator: the Mesa discrete-event simulator; its ``time`` is minutes since the start.
        queue: users whose session start has come but who are not served yet, in start order.
        day_start_probability: each user's session probability today, float64 (n_users,).
        day_stats: counters of the current day.
        datacollector: one row per finished day: ``day`` and :data:`~recsim_personas.envs.metrics.REPORTED`.
        tracer: a :class:`~recsim_personas.envs.trace.Tracer` recording a sample of users' pages, or None.
    """

    def __init__(
        self,
        world: World,
        config: SessionConfig | None = None,
        *,
        seed: int | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        super().__init__(seed=seed, rng=rng)
        if config is not None and not isinstance(config, SessionConfig):
            raise ConfigError(f"config must be a SessionConfig, got {type(config).__name__}.")
        self.world = world
        self.config = config or world.session_config or SessionConfig()
        self.state = UserTable(world)
        self.rater: RaterSession = open_session(world.rater)
        self.choice: ChoiceSession = open_choice(world)
        self.simulator = DEVSimulator()
        self.simulator.setup(self)
        self.queue: deque[int] = deque()
        self._start_events: dict[int, SimulationEvent] = {}
        self._serving: _Serving | None = None
        self.day_start_probability = np.zeros(world.n_users, dtype=np.float64)
        self.day_stats = DayStats()
        self._day_open = False
        self._views: list[UserView] | None = None
        self._ended: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []
        self.tracer: Tracer | None = None
        self.datacollector = mesa.DataCollector(model_reporters=reporters(self))

    # -------------------------------------------------------------------------------------- days
    @property
    def day(self) -> int:
        """Days simulated so far (Mesa's ``steps``); the current day while one is open."""
        return int(self.steps)

    @property
    def minute(self) -> float:
        """The clock: minutes since the start of the simulation (day ``d`` is ``[(d-1)·1440, d·1440)``)."""
        return float(self.simulator.time)

    def step(self) -> None:
        """One simulated day begins: close the previous day's record, then schedule today's session starts.

        A user not in a session (and not already scheduled) starts one today with its start probability
        (:func:`~recsim_personas.envs.session.start_probability`); the start minute is uniform over the day.
        All of the day's draws come from the model's generator in one call each, in user order, so the
        decisions do not depend on the order the events later run in.
        """
        self.close_day()
        self.day_stats = DayStats(day=self.day)
        self._day_open = True
        st, n = self.state, self.world.n_users
        self.day_start_probability = start_probability(st.activity, st.return_prop, self.config)
        uniform = self.rng.random(n)
        starters = np.flatnonzero(~(st.in_session | st.scheduled) & (uniform < self.day_start_probability))
        minutes = self.rng.integers(0, MINUTES_PER_DAY, size=starters.size)
        day_start = (self.day - 1) * MINUTES_PER_DAY
        now = self.minute
        for user, minute in zip(starters.tolist(), minutes.tolist(), strict=True):
            st.scheduled[user] = True
            self._start_events[user] = self.simulator.schedule_event_absolute(
                self._session_starts, max(float(day_start + minute), now), Priority.HIGH, function_args=[user]
            )

    def close_day(self) -> None:
        """Record the current day in the DataCollector (once; a no-op before the first day or if closed).

        Sessions started explicitly before the first simulated day (e.g. ``reset(options={"user_id": ...})``
        right after a seeded reset) go to day 0.
        """
        if self._day_open:
            self.datacollector.collect(self)
            self._day_open = False

    def churned_users(self) -> int:
        """Users who stopped returning: at least ``churn_patience`` unsatisfied sessions in a row."""
        return int((self.state.unsat_streak >= self.config.churn_patience).sum())

    # ---------------------------------------------------------------------------------- sessions
    def user(self, user_id: Any) -> UserView:
        """A read-only view of ``user_id``'s state (raises :class:`~recsim_personas.errors.UnknownUserError`)."""
        return self.users[self.world.user_index(user_id)]

    @property
    def users(self) -> list[UserView]:
        """Read-only views of every user's state, ``users[u]`` for row ``u``."""
        if self._views is None:
            rule = self._start_probability_of
            self._views = [UserView(self.state, self.world, u, rule) for u in range(self.world.n_users)]
        return self._views

    def _start_probability_of(self, user: int) -> float:
        st = self.state
        return float(start_probability(st.activity[user], st.return_prop[user], self.config))

    def scheduled_sessions(self) -> list[tuple[float, int]]:
        """The session starts scheduled and not yet due: ``(minute, user row)``, in the order they will run."""
        pending = [(e.time, e.priority, e.unique_id, u) for u, e in self._start_events.items()]
        return [(float(t), u) for t, _, _, u in sorted(pending)]

    def _session_starts(self, user: int) -> None:
        """Event: ``user``'s session start has come (served at once by run_days, else queued)."""
        del self._start_events[user]
        if self._serving is not None:
            self.state.scheduled[user] = False
            self.start_session(user)
            self._pages_due([user], self.minute)
        else:
            self.queue.append(user)

    def start_session(self, user: int) -> None:
        """Start serving a session of user row ``user`` now (cancelling its scheduled start, if any)."""
        st = self.state
        if st.in_session[user]:
            raise RecsimPersonasError(f"user {int(self.world.user_ids[user])} is already in a session.")
        if st.scheduled[user]:
            event = self._start_events.pop(int(user), None)
            if event is not None:
                self.simulator.cancel_event(event)
            else:
                self.queue.remove(int(user))
            st.scheduled[user] = False
        if not self._day_open:
            self.day_stats = DayStats(day=self.day)
            self._day_open = True
        st.in_session[user] = True
        st.pages[user] = 0
        st.session_watches[user] = 0
        st.satisfaction[user] = 0.0
        self.day_stats.sessions += 1

    def next_session(self, max_idle_days: int = MAX_IDLE_DAYS) -> int:
        """Start the next session in start order, advancing the clock (and the days) until one starts.

        Returns:
            the user row whose session was started.

        Raises:
            RecsimPersonasError: no user started a session in ``max_idle_days`` days (everyone busy).
        """
        idle = 0
        while not self.queue:
            if self._start_events:
                self.simulator.run_next_event()
                continue
            if idle >= max_idle_days:
                raise RecsimPersonasError(
                    f"no user started a session in {max_idle_days} simulated days"
                    f" ({int(self.state.in_session.sum())} of {self.world.n_users} users are already in a session)."
                    " Fix: use fewer concurrent sessions."
                )
            self.step()
            idle += 1
        user = self.queue[0]
        self.start_session(user)
        return user

    def abandon_session(self, user: int) -> None:
        """End a session without a decision of the user (e.g. an environment reset mid-session); no churn."""
        if self.state.in_session[user]:
            self.state.in_session[user] = False
            self.day_stats.abandoned += 1

    def react(self, users: Any, slates: Any) -> Reaction:
        """Play one page of the sessions of ``users``: watch, rate, then continue or exit.

        Validates the input, then :func:`~recsim_personas.envs.reaction.react_page` (one rater call for every
        unseen shown item; histories, seen sets and the rater session updated), books the page in today's
        counters and ends the sessions that are over (churn bookkeeping).

        Args:
            users: distinct user rows, all in a session, int (N,).
            slates: item indices shown to each, int (N, k), distinct within a row.

        Raises:
            InvalidActionError: malformed slates (see :func:`~recsim_personas.envs.spaces.check_slates`) or a
                number of slates other than of users.
            RaterOutputError: the rater returned something that is not a batch of distributions.
            RecsimPersonasError: a user is not in a session, or appears twice.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        slates = check_slates(slates, self.world.n_items)
        if slates.shape[0] != users.shape[0]:
            raise InvalidActionError(f"got {users.shape[0]} users but {slates.shape[0]} slates.")
        in_session = self.state.in_session[users]
        if not in_session.all():
            bad = int(users[~in_session][0])
            raise RecsimPersonasError(f"user {int(self.world.user_ids[bad])} is not in a session; start one first.")
        if np.unique(users).size != users.size:
            raise RecsimPersonasError("a user appears twice in one batch; each user has at most one session.")
        return self.react_unchecked(users, slates)

    def react_unchecked(self, users: np.ndarray, slates: np.ndarray) -> Reaction:
        """:meth:`react` for input already validated (int64 rows in session, checked slates): the environments
        validate once themselves."""
        cfg = self.config
        r = react_page(self.state, self.world, self.rater, self.choice, cfg, self.rng, users, slates)
        if self.tracer is not None:
            self.tracer.record(self.day, self.minute, r, cfg.like_threshold)
        n, k = slates.shape
        s = self.day_stats
        s.pages += n
        s.items_shown += n * k
        n_watched = int(r.watched.sum())
        s.items_watched += n_watched
        s.rating_sum += int(r.ratings.sum())
        s.likes += int((r.ratings >= cfg.like_threshold).sum())
        s.early_exits += int((r.exited & (r.pages < cfg.max_pages)).sum())
        s.page_limit += int(r.truncated.sum())
        ended = r.ended
        if ended.any():
            self._end_sessions(users[ended], r.satisfaction[ended])
        return r

    def _end_sessions(self, users: np.ndarray, satisfaction: np.ndarray) -> None:
        """Close sessions; an unsatisfied ending extends the user's streak and may lower its return propensity."""
        st = self.state
        unsatisfied = satisfaction < self.config.unsatisfied_below
        streak = np.where(unsatisfied, st.unsat_streak[users] + 1, 0)
        st.unsat_streak[users] = streak
        st.return_prop[users] = return_propensity(streak, self.config)
        st.in_session[users] = False
        self._ended.append((users.copy(), self.day, st.pages[users].copy(), st.session_watches[users].copy()))
        self.day_stats.unsatisfied += int(unsatisfied.sum())

    # ------------------------------------------------------------------------------- observation
    def observe(self, users: Any, history_len: int) -> dict[str, np.ndarray]:
        """What a recommender may see of ``users`` (fresh arrays).

        Args:
            users: user rows, int (N,).
            history_len: how many of the latest history entries to return.

        Returns:
            ``user_index`` int64 (N,); ``history_items`` int64 (N, history_len): the latest item indices,
            oldest first, left-padded with -1; ``history_ratings`` int64 (N, history_len), padded with 0;
            ``traits`` float32 (N, 3) = [activity, conformity, diversity] scores; ``seen`` int8
            (N, n_items), 1 for items the user has seen.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        items, ratings = self.state.latest(users, history_len)
        return {
            "user_index": users.copy(),
            "history_items": items,
            "history_ratings": ratings,
            "traits": self.world.trait_scores[users].astype(np.float32),
            "seen": self.state.seen[users].view(np.int8),
        }

    def ended_sessions(self) -> dict[str, np.ndarray]:
        """The sessions that ended (by the user's decision or the page limit), in the order they ended:
        ``user_id``, ``day``, ``pages`` and ``watches`` (int64, equal lengths). Sessions abandoned by an
        environment reset are not among them."""
        if not self._ended:
            empty = np.zeros(0, dtype=np.int64)
            return {"user_id": empty, "day": empty, "pages": empty, "watches": empty}
        users = np.concatenate([u for u, _, _, _ in self._ended])
        return {
            "user_id": self.world.user_ids[users],
            "day": np.concatenate([np.full(len(u), d, dtype=np.int64) for u, d, _, _ in self._ended]),
            "pages": np.concatenate([p for _, _, p, _ in self._ended]).astype(np.int64),
            "watches": np.concatenate([w for _, _, _, w in self._ended]).astype(np.int64),
        }

    def watches(self) -> dict[str, np.ndarray]:
        """What the users watched in this simulation: ``user_id``, ``item_id``, ``rating`` (int64, equal
        lengths; in watch order within each user)."""
        rows, items, ratings = self.state.watches()
        return {"user_id": self.world.user_ids[rows], "item_id": self.world.item_ids[items], "rating": ratings}

    # ---------------------------------------------------------------------------------------- runs
    def run_days(
        self, n_days: int, policy: BatchPolicy, *, history_len: int = 20, progress: bool = True
    ) -> dict[str, Any]:
        """Simulate ``n_days`` days, serving every session with ``policy`` as its events come.

        Each day's session starts and pages run in clock order; the pages due at the same minute are asked of
        the policy in one ``act_batch`` call and of the rater in one ``predict`` call. After the last day the
        sessions still open are played to their end (booked on the last day). Sessions the environments had
        queued and not served yet are served from the first day on.

        Returns:
            :meth:`summary` after the last day.
        """
        if isinstance(n_days, bool) or not isinstance(n_days, int) or n_days < 1:
            raise RecsimPersonasError(f"n_days must be a positive integer, got {n_days!r}.")
        self._serving = _Serving(policy, int(history_len))
        try:
            for _ in tqdm(range(n_days), desc="simulating", unit="day", disable=not progress):
                self.step()
                while self.queue:
                    user = self.queue[0]
                    self.start_session(user)
                    self._pages_due([user], self.minute)
                self.simulator.run_until(self.day * MINUTES_PER_DAY - 0.5)
            while self._serving.due:  # the sessions still open at the end of the last day
                self.simulator.run_next_event()
            self.close_day()
        finally:
            self._serving = None
        return self.summary()

    def _pages_due(self, users: list[int] | np.ndarray, minute: float) -> None:
        """Book the next page of ``users``' sessions at ``minute`` (one serving event per minute)."""
        assert self._serving is not None
        due = self._serving.due
        if minute not in due:
            due[minute] = []
            self.simulator.schedule_event_absolute(self._serve_pages, minute, function_args=[minute])
        due[minute].extend(int(u) for u in users)

    def _serve_pages(self, minute: float) -> None:
        """Event: the pages due now, of every open session, in one policy call and one rater call."""
        serving = self._serving
        assert serving is not None
        users = np.array(serving.due.pop(minute), dtype=np.int64)
        slates = serving.policy.act_batch(self.observe(users, serving.history_len))
        reaction = self.react(users, slates)
        going_on = users[~reaction.ended]
        if going_on.size:
            self._pages_due(going_on, minute + self.config.page_minutes)

    def summary(self) -> dict[str, Any]:
        """The DataCollector's per-day rows and totals over them (see
        :func:`~recsim_personas.envs.metrics.summarise`)."""
        return summarise(self.datacollector.model_vars)


def make_population(
    split: Any,
    rater: Any = None,
    *,
    seed: int | None = None,
    config: SessionConfig | None = None,
) -> Population:
    """A :class:`Population` of a split's users.

    Args:
        split: a split directory, a loaded ``Split``, or a :class:`~recsim_personas.envs.world.World` (which
            holds its own rater).
        rater: a classical rater's name (fitted on the split's history; default ``"bias"``) or a Rater.
        seed: seed of the population's generators.
        config: behaviour coefficients (default :class:`~recsim_personas.envs.session.SessionConfig`).
    """
    from recsim_personas.envs.world import as_world

    return Population(as_world(split, rater), config, seed=seed)
