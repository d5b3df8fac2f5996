from __future__ import annotations

import numpy as np
import pytest
from simkit import (  # noqa: F401  (fixtures)
    ALWAYS_EXIT,
    NEVER_EXIT,
    WATCH_ALL,
    BrokenRater,
    ObservingRater,
    config,
    tiny_split_dir_fixture,
    tiny_world_fixture,
    with_rater,
)

from recsim_personas.data import Split
from recsim_personas.envs import Population, UserView, check_slates, make_population
from recsim_personas.envs.metrics import REPORTED
from recsim_personas.envs.model import MINUTES_PER_DAY
from recsim_personas.envs.world import as_world
from recsim_personas.errors import (
    ArtifactError,
    ConfigError,
    InvalidActionError,
    RaterOutputError,
    RecsimPersonasError,
    UnknownUserError,
)
from recsim_personas.personas.traits import compute_traits
from recsim_personas.recommenders import PopularPolicy, RandomPolicy


def test_users_start_from_their_train_ratings_in_time_order(tiny_split_dir, tiny_world):
    split = Split.load(tiny_split_dir)
    pop = Population(tiny_world, seed=0)
    assert isinstance(pop.users[0], UserView) and len(pop.users) == len(split.user_ids)
    traits, _ = compute_traits(split.train, split.items)
    for user in pop.users:
        rows = split.train[split.train.user_id == user.user_id].sort_values(["timestamp", "item_id"])
        assert user.history_items.tolist() == rows.item_id.tolist()
        assert user.history_ratings.tolist() == rows.rating.tolist()
        assert user.seen_items == set(rows.item_id.tolist())
        t = traits.set_index("user_id").loc[user.user_id]
        assert user.traits.activity == t.activity and user.traits.activity_level == t.activity_level
        assert user.traits.diversity_score == pytest.approx(t.diversity_score)
    with pytest.raises(UnknownUserError, match="user id 9999 is not one of the 20"):
        pop.user(9999)
    with pytest.raises(ValueError, match="read-only"):  # the world is shared: populations copy what they change
        tiny_world.history_items[0][0] = 1


def test_days_are_recorded_by_the_datacollector(tiny_world):
    pop = Population(tiny_world, seed=0)
    summary = pop.run_days(6, RandomPolicy(tiny_world.n_items, 5, seed=0), progress=False)
    assert set(pop.datacollector.model_vars) == {"day", *REPORTED}
    days = summary["days"]
    assert [d["day"] for d in days] == [1, 2, 3, 4, 5, 6] and pop.day == 6
    for d in days:
        assert d["items_shown"] == 5 * d["pages"]
        assert d["likes"] <= d["items_watched"] <= d["items_shown"]
        assert d["mean_rating"] is None or 1.0 <= d["mean_rating"] <= 5.0
    totals = summary["totals"]
    assert totals["sessions"] == sum(d["sessions"] for d in days) > 0
    assert totals["items_watched"] > 0 and 0 < totals["watch_rate"] < 1
    assert not any(u.in_session for u in pop.users)


def test_a_day_schedules_sessions_at_minutes_of_that_day(tiny_world):
    pop = Population(tiny_world, config(start_min=1.0, start_max=1.0), seed=0)
    pop.step()
    scheduled = pop.scheduled_sessions()
    assert sorted(u for _, u in scheduled) == list(range(tiny_world.n_users))  # everyone comes on day 1
    minutes = [t for t, _ in scheduled]
    assert minutes == sorted(minutes) and minutes[0] >= 0 and minutes[-1] < MINUTES_PER_DAY
    assert [u for _, u in scheduled] != sorted(u for _, u in scheduled)  # start order is not user order
    assert not pop.queue and all(u.in_session for u in pop.users)  # scheduled users count as busy
    pop.step()  # scheduled users are not scheduled twice
    assert len(pop.scheduled_sessions()) == tiny_world.n_users
    first_minute, first_user = scheduled[0]
    assert pop.next_session() == first_user and pop.minute == first_minute  # the clock moves to the start
    assert pop.state.in_session[first_user] and len(pop.scheduled_sessions()) == tiny_world.n_users - 1
    nobody = Population(tiny_world, config(start_min=0.0, start_max=0.0), seed=0)
    nobody.step()
    assert not nobody.scheduled_sessions()
    with pytest.raises(RecsimPersonasError, match="no user started a session in 5"):
        nobody.next_session(max_idle_days=5)


def test_starting_a_scheduled_session_early_cancels_its_event(tiny_world):
    pop = Population(tiny_world, config(start_min=1.0, start_max=1.0), seed=0)
    pop.step()
    _, user = pop.scheduled_sessions()[-1]
    pop.start_session(user)  # e.g. a reset with options={"user_id": ...}
    assert user not in [u for _, u in pop.scheduled_sessions()]
    served = [pop.next_session() for _ in range(tiny_world.n_users - 1)]
    assert user not in served and sorted([*served, user]) == list(range(tiny_world.n_users))


class _ClockPolicy:
    """A random policy that records, for every call, the population's clock and the users it served."""

    def __init__(self, population, n_items, slate_size=5):
        self.population, self.inner, self.slate_size = population, RandomPolicy(n_items, slate_size, seed=0), slate_size
        self.calls: list[tuple[float, list[int]]] = []

    def act_batch(self, obs):
        self.calls.append((self.population.minute, obs["user_index"].tolist()))
        return self.inner.act_batch(obs)


def test_sessions_interleave_on_the_clock_in_run_days(tiny_world):
    cfg = config(start_min=1.0, start_max=1.0, page_minutes=7, **NEVER_EXIT)  # every session runs 10 pages
    pop = Population(tiny_world, cfg, seed=0)
    policy = _ClockPolicy(pop, tiny_world.n_items)
    pop.run_days(1, policy, progress=False)
    pages: dict[int, list[float]] = {}
    for minute, users in policy.calls:
        for u in users:
            pages.setdefault(u, []).append(minute)
    assert sorted(pages) == list(range(tiny_world.n_users)) and all(len(p) == 10 for p in pages.values())
    for times in pages.values():  # each session's pages are page_minutes apart
        assert np.diff(times).tolist() == [7.0] * 9
    minutes = [m for m, _ in policy.calls]
    assert minutes == sorted(minutes)  # served in clock order
    assert len(policy.calls) < sum(len(p) for p in pages.values())  # pages due at the same minute: one call
    starts = sorted((times[0], u) for u, times in pages.items())
    first, second = starts[0], starts[1]
    assert second[0] < pages[first[1]][-1]  # the second session starts before the first has ended: overlap
    assert pop.summary()["totals"]["sessions"] == tiny_world.n_users


def test_a_session_started_late_ends_on_the_next_day(tiny_world):
    cfg = config(start_min=1.0, start_max=1.0, page_minutes=300, **NEVER_EXIT)  # ten pages take 50 hours
    pop = Population(tiny_world, cfg, seed=0)
    summary = pop.run_days(3, _ClockPolicy(pop, tiny_world.n_items), progress=False)
    days = summary["days"]
    assert days[0]["sessions"] == tiny_world.n_users  # all started on day 1 ...
    assert days[1]["sessions"] == 0  # ... and were still going on day 2, so nobody started another
    assert days[1]["pages"] > 0 and days[2]["pages"] > 0  # their pages are booked on the days they happen
    # every session (those of day 1, and new ones of users whose first ended on day 2) ran to its page limit,
    # the last ones after the end of day 3
    assert sum(d["page_limit"] for d in days) == summary["totals"]["sessions"] > tiny_world.n_users
    assert not pop.state.in_session.any()


def test_active_users_come_back_more_often(tiny_world):
    cfg = config(start_min=0.0, start_max=0.8, unsatisfied_below=-1.0, **ALWAYS_EXIT)  # no churn
    pop = Population(tiny_world, cfg, seed=1)
    policy = _ClockPolicy(pop, tiny_world.n_items)
    pop.run_days(200, policy, progress=False)
    counts = np.bincount([u for _, users in policy.calls for u in users], minlength=tiny_world.n_users)
    activity = tiny_world.trait_scores[:, 0]
    assert np.corrcoef(activity, counts)[0, 1] > 0.9


def test_same_seed_same_days_other_seed_differs(tiny_world):
    def run(seed):
        return make_population(tiny_world, seed=seed).run_days(
            4, PopularPolicy(tiny_world.item_popularity, 5, seed=0), progress=False
        )

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_unsatisfied_sessions_lower_the_return_probability(tiny_world):
    cfg = config(unsatisfied_below=1.0, churn_patience=2, churn_decay=0.5, churn_floor=0.1, **ALWAYS_EXIT)
    pop = Population(tiny_world, cfg, seed=0)
    user = pop.users[0]
    before = user.start_probability
    for session in range(3):
        pop.start_session(0)
        reaction = pop.react([0], [np.arange(5)])
        assert reaction.exited[0] and not user.in_session
        assert user.unsatisfied_streak == session + 1
    assert user.return_propensity == pytest.approx(0.25)
    assert user.start_probability == pytest.approx(0.25 * before)
    assert pop.churned_users() == 1
    # a satisfied session resets the streak
    happy = Population(tiny_world, config(unsatisfied_below=-1.0, **ALWAYS_EXIT), seed=0)
    happy.start_session(0)
    happy.react([0], [np.arange(5)])
    assert happy.users[0].unsatisfied_streak == 0 and happy.churned_users() == 0


def test_watching_updates_history_and_seen_once(tiny_world):
    rater = ObservingRater(tiny_world.rater)
    pop = Population(with_rater(tiny_world, rater), config(**WATCH_ALL, **NEVER_EXIT), seed=0)
    user = pop.users[2]
    unseen = np.flatnonzero(~user.seen_mask)[:4]
    before = user.history_items.tolist()
    pop.start_session(2)
    first = pop.react([2], [unseen])
    assert first.watched.all() and (first.ratings >= 1).all()
    assert user.history_items.tolist() == before + tiny_world.item_ids[unseen].tolist()
    assert user.history_ratings[-4:].tolist() == first.ratings[0].tolist()
    assert set(tiny_world.item_ids[unseen].tolist()) <= user.seen_items
    assert rater.calls == [4]
    (uids, iids, ratings) = rater.observed[0]
    assert uids.tolist() == [user.user_id] * 4 and iids.tolist() == tiny_world.item_ids[unseen].tolist()
    assert ratings.tolist() == first.ratings[0].tolist()
    again = pop.react([2], [unseen])  # already seen: not watched, not asked, not recorded again
    assert not again.watched.any() and (again.expected == 0).all()
    assert rater.calls == [4] and len(rater.observed) == 1
    assert len(user.history_items) == len(before) + 4


def test_observation_pads_and_takes_the_latest_history(tiny_world):
    pop = Population(tiny_world, seed=0)
    lengths = np.array([len(h) for h in tiny_world.history_items])
    short, long_ = int(np.argmin(lengths)), int(np.argmax(lengths))
    obs = pop.observe([short, long_], history_len=lengths.max() + 2)
    n_short = lengths[short]
    row = obs["history_items"][0]
    assert (row[: len(row) - n_short] == -1).all()
    assert row[len(row) - n_short :].tolist() == tiny_world.history_items[short].tolist()
    assert (obs["history_ratings"][0][: len(row) - n_short] == 0).all()
    latest = pop.observe([long_], history_len=3)
    assert latest["history_items"][0].tolist() == tiny_world.history_items[long_][-3:].tolist()
    assert obs["seen"].dtype == np.int8 and obs["seen"][1].sum() == len(set(tiny_world.history_items[long_]))
    assert obs["traits"].dtype == np.float32 and obs["user_index"].tolist() == [short, long_]


def test_history_grows_beyond_its_first_capacity(tiny_world):
    cfg = config(**WATCH_ALL, **NEVER_EXIT)
    pop = Population(tiny_world, cfg, seed=0)
    before = [u.history_items.tolist() for u in pop.users]
    cap = pop.state.hist_items.shape[1]
    pop.start_session(0)
    shown = []
    while pop.state.hist_len[0] <= cap:  # watch every unseen item, 1 per page, past the first capacity
        unseen = np.flatnonzero(~pop.state.seen[0])
        if unseen.size == 0:
            break
        shown.append(int(unseen[0]))
        pop.react([0], [[unseen[0]]])
        if not pop.state.in_session[0]:
            pop.start_session(0)
    if pop.state.hist_len[0] > cap:
        assert pop.state.hist_items.shape[1] >= 2 * cap
    assert pop.users[0].history_items.tolist() == before[0] + tiny_world.item_ids[shown].tolist()
    assert [u.history_items.tolist() for u in pop.users[1:]] == before[1:]


@pytest.mark.parametrize("kind", ["shape", "sum", "nan", "rows"])
def test_malformed_rater_output_is_refused(tiny_world, kind):
    pop = Population(with_rater(tiny_world, BrokenRater(kind)), seed=0)
    pop.start_session(0)
    unseen = np.flatnonzero(~pop.users[0].seen_mask)[:3]
    with pytest.raises(RaterOutputError, match="rater 'broken' returned"):
        pop.react([0], unseen[None, :])


def test_react_refuses_bad_batches(tiny_world):
    pop = Population(tiny_world, seed=0)
    with pytest.raises(RecsimPersonasError, match="is not in a session"):
        pop.react([0], [[1, 2]])
    pop.start_session(0)
    with pytest.raises(RecsimPersonasError, match="already in a session"):
        pop.start_session(0)
    with pytest.raises(RecsimPersonasError, match="appears twice"):
        pop.react([0, 0], [[1, 2], [3, 4]])
    with pytest.raises(InvalidActionError, match="got 1 users but 2 slates"):
        pop.react([0], [[1, 2], [3, 4]])
    with pytest.raises(RecsimPersonasError, match="n_days must be a positive integer"):
        pop.run_days(0, RandomPolicy(tiny_world.n_items, 5))


def test_factory_refuses_ambiguous_or_unknown_inputs(tiny_split_dir, tiny_world):
    with pytest.raises(ConfigError, match="a World already holds its rater"):
        make_population(tiny_world, rater="bias")
    with pytest.raises(ConfigError, match=r"either split=\.\.\. or world=\.\.\."):
        as_world(tiny_split_dir, world=tiny_world)
    with pytest.raises(ConfigError, match="no split given"):
        as_world()
    with pytest.raises(ConfigError, match=r"unknown rater 'bais'\. Did you mean 'bias'"):
        make_population(tiny_split_dir, rater="bais")
    with pytest.raises(ArtifactError, match="is not a trained persona-agent directory"):
        make_population(tiny_split_dir, rater="agents:/some/dir")
    with pytest.raises(ConfigError, match="object with predict"):
        make_population(tiny_split_dir, rater=object())
    with pytest.raises(ArtifactError, match="is not a split"):
        make_population(tiny_split_dir / "missing")
    pop = make_population(tiny_split_dir, rater="item", seed=0)
    assert pop.world.rater_name == "item" and pop.world.n_users == 20


@pytest.mark.parametrize(
    ("slates", "message"),
    [
        ([1, 2, 3], r"slates must have shape \(N, k\), got an array of shape \(3,\)"),
        ([[1.0, 2.0]], "must hold integer item indices, got dtype float64"),
        ([[True, False]], "must hold integer item indices, got dtype bool"),
        ([[1, 60]], r"slates\[0, 1\] = 60 is not an item index in \[0, 60\)"),
        ([[1, 2], [-1, 3]], r"slates\[1, 0\] = -1 is not an item index"),
        ([[1, 2], [7, 3], [7, 7]], r"slates\[2\] shows item index 7 more than once \(positions \[0, 1\]\)"),
        ([[4, 9, 4]], r"slates\[0\] shows item index 4 more than once \(positions \[0, 2\]\)"),
    ],
)
def test_check_slates_names_the_bad_value(slates, message):
    with pytest.raises(InvalidActionError, match=message):
        check_slates(slates, 60)
