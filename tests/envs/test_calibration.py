from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from simkit import WATCH_ALL, config, tiny_split_dir_fixture, tiny_world_fixture  # noqa: F401  (fixtures)

from recsim_personas.envs import Population
from recsim_personas.envs.calibration import (
    SessionFit,
    activity_scale,
    fit_sessions,
    fit_split_sessions,
    sessionize,
)
from recsim_personas.envs.session import (
    SessionConfig,
    continue_after_page,
    continue_probability,
    page_satisfaction,
    return_propensity,
    sigmoid,
    update_satisfaction,
)
from recsim_personas.errors import ArtifactError, ConfigError, DataFormatError

DAY = 86_400
T0 = 880_000_000 - 880_000_000 % DAY  # midnight UTC


def ratings_frame(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


# ------------------------------------------------------------------------------------------ sessionize
def test_sessionize_splits_only_past_the_gap_and_numbers_positions():
    frame = ratings_frame(
        [
            (1, 10, 4, T0 + 1800),  # same second as item 5: ties go by item id
            (1, 5, 3, T0 + 1800),
            (1, 7, 5, T0),
            (1, 8, 2, T0 + 1800 + 1800),  # exactly 30 minutes later: same session
            (1, 9, 2, T0 + 3600 + 1801),  # 30 min + 1 s: a new session
            (2, 1, 5, T0 + 10),
        ]
    )
    out = sessionize(frame, gap_minutes=30)
    assert out["item_id"].tolist() == [7, 5, 10, 8, 9, 1]
    assert out["session"].tolist() == [0, 0, 0, 0, 1, 2]
    assert out["position"].tolist() == [1, 2, 3, 4, 1, 1]
    assert out["session_size"].tolist() == [4, 4, 4, 4, 1, 1]
    assert out["rating"].tolist() == [5, 3, 4, 2, 2, 5]  # other columns travel with their rows
    assert sessionize(frame, gap_minutes=31)["session"].tolist() == [0, 0, 0, 0, 0, 1]


def test_sessionize_rejects_bad_input_naming_it():
    frame = ratings_frame([(1, 1, 4, T0)])
    with pytest.raises(DataFormatError, match="no column 'timestamp'"):
        sessionize(frame.drop(columns="timestamp"))
    with pytest.raises(ConfigError, match="gap_minutes must be a number > 0, got 0"):
        sessionize(frame, gap_minutes=0)
    with pytest.raises(ConfigError, match="got -5"):
        sessionize(frame, gap_minutes=-5)
    with pytest.raises(DataFormatError, match=r"\['timestamp'\] holds nan at row 0"):
        sessionize(frame.assign(timestamp=np.nan))


def test_activity_scale_is_the_simulators_percentile_rank():
    ref = np.array([5, 9, 9, 12, 40, 7])
    scale = activity_scale(ref)
    expected = pd.Series(ref).rank(pct=True, method="average").to_numpy()
    np.testing.assert_allclose(scale(ref), expected)
    assert scale(np.array([0]))[0] == pytest.approx(0.5 / 6) and scale(np.array([1000]))[0] == 1.0
    assert scale(np.array([8]))[0] == pytest.approx(2.5 / 6)  # between 7 and 9


# ------------------------------------------------------------------------------- synthetic histories
def simulate_history(
    n_users: int,
    n_days: int,
    start_min: float,
    start_max: float,
    cont: SessionConfig,
    seed: int,
    ratings: tuple[int, ...] = (1, 2, 3, 4, 5),
) -> tuple[pd.DataFrame, pd.Series, int]:
    """Users living the fitted model: a session on day 0, then one on each later day with the start
    probability (times the return propensity of ``cont``'s churn rule); in a session one rating a minute,
    continuing after each with ``cont``'s logistic rule.

    Returns (history, activity by user id, window end).
    """
    rng = np.random.default_rng(seed)
    act = rng.random(n_users)
    p_start = start_min + (start_max - start_min) * act
    streak = np.zeros(n_users, dtype=np.int64)
    user_ids = np.arange(1, n_users + 1)
    rows: list[np.ndarray] = []
    for day in range(n_days):
        starting = np.flatnonzero((rng.random(n_users) < p_start * return_propensity(streak, cont)) | (day == 0))
        n = starting.size
        sat, alive, pos = np.zeros(n), np.ones(n, dtype=bool), np.zeros(n, dtype=np.int64)
        minute0 = rng.integers(0, 600, size=n)
        while alive.any():
            idx = np.flatnonzero(alive)
            r = rng.choice(ratings, size=idx.size)
            pos[idx] += 1
            sat[idx] = cont.satisfaction_memory * sat[idx] + (1 - cont.satisfaction_memory) * (r - 3) / 2
            ts = T0 + day * DAY + 60 * (minute0[idx] + pos[idx])
            rows.append(np.column_stack([user_ids[starting[idx]], 100_000 * day + pos[idx], r, ts]))
            p = continue_probability(sat[idx], pos[idx], act[starting[idx]], cont)
            alive[idx] = (rng.random(idx.size) < p) & (pos[idx] < 200)
        streak[starting] = np.where(sat < cont.unsatisfied_below, streak[starting] + 1, 0)
    history = ratings_frame([tuple(x) for x in np.concatenate(rows).tolist()])
    return history, pd.Series(act, index=user_ids), T0 + n_days * DAY - 1


def test_start_rates_are_recovered_and_churn_is_not_invented():
    cont = SessionConfig(continue_bias=0.0, satisfaction_weight=0.0, activity_weight=0.0, fatigue=0.0)
    history, act, end = simulate_history(500, 80, 0.02, 0.3, cont, seed=1, ratings=(4, 5))
    fit = fit_sessions(history, act, window_end=end, memory_grid=(0.5,))
    assert fit.config.start_min == pytest.approx(0.02, abs=0.012)
    assert fit.config.start_max == pytest.approx(0.3, abs=0.03)
    # every session is satisfied (ratings 4 and 5): churn is not identified and stays hand-set
    assert "churn" not in fit.groups and "flat likelihood" in fit.handset["churn_decay"]
    assert fit.config.churn_decay == SessionConfig().churn_decay
    starts = fit.groups["starts"]
    assert starts.loglik_fitted > starts.loglik_default
    assert fit.real.daily_start_rate == pytest.approx(0.02 + 0.28 * 0.5, abs=0.02)


def test_churn_is_recovered_when_unsatisfied_users_come_back_less():
    truth = SessionConfig(
        satisfaction_memory=0.5, continue_bias=1.0, activity_weight=0.0, churn_patience=1, churn_decay=0.5
    )
    history, act, end = simulate_history(500, 60, 0.1, 0.4, truth, seed=4)
    fit = fit_sessions(history, act, window_end=end)
    assert "churn" in fit.groups and "churn_decay" in fit.fitted
    assert fit.config.churn_patience == 1
    assert fit.config.churn_decay == pytest.approx(0.5, abs=0.1)
    assert fit.config.start_min == pytest.approx(0.1, abs=0.03)
    assert fit.config.start_max == pytest.approx(0.4, abs=0.05)
    churn = fit.groups["churn"]
    assert churn.loglik_fitted > churn.alternatives["no churn (decay=1)"] + 2


def test_continue_coefficients_are_recovered():
    truth = SessionConfig(
        satisfaction_memory=0.5, continue_bias=1.5, satisfaction_weight=2.0, activity_weight=1.0, fatigue=0.1
    )
    history, act, end = simulate_history(300, 20, 0.3, 0.3, truth, seed=2)
    fit = fit_sessions(history, act, window_end=end + DAY)
    cfg = fit.config
    assert cfg.continue_unit == "watch" and cfg.fatigue_curve == "linear"
    assert cfg.satisfaction_memory == 0.5
    assert cfg.continue_bias == pytest.approx(1.5, abs=0.2)
    assert cfg.satisfaction_weight == pytest.approx(2.0, abs=0.3)
    assert cfg.activity_weight == pytest.approx(1.0, abs=0.25)
    assert cfg.fatigue == pytest.approx(0.1, abs=0.03)
    assert fit.n_censored == 0
    cont = fit.groups["continue"]
    assert cont.loglik_fitted >= max(cont.alternatives.values()) - 1e-6
    assert set(fit.fitted) | set(fit.handset) == set(SessionConfig().to_dict())


def test_the_last_session_is_censored_when_the_window_ends_inside_it():
    history = ratings_frame([(1, 1, 4, T0), (1, 2, 4, T0 + 60), (1, 3, 2, T0 + 3 * DAY), (2, 1, 3, T0)])
    fit = fit_sessions(history, {1: 0.2, 2: 0.8}, window_end={1: T0 + 3 * DAY}, returns_only=False)
    assert fit.n_censored == 1 and fit.n_sessions == 3  # user 1's window ends at its last rating
    # 4 ratings, one exit unobserved (and far too few decisions to fit anything)
    assert "2 observed exits and 1 continues" in fit.handset["continue_bias"]
    with pytest.raises(ConfigError, match="before its last rating"):
        fit_sessions(history, {1: 0.2, 2: 0.8}, window_end=T0)
    with pytest.raises(ConfigError, match="no score for user 2"):
        fit_sessions(history, {1: 0.2})
    with pytest.raises(DataFormatError, match="no column 'rating'"):
        fit_sessions(history.drop(columns="rating"), {1: 0.2, 2: 0.8})


def test_groups_the_logs_cannot_identify_stay_hand_set_with_the_reason():
    # one session per user: nobody comes back, so start rates (and churn) cannot be fitted
    users = range(1, 61)
    history = ratings_frame([(u, i, 1 + (u + i) % 5, T0 + 60 * i + 7 * u) for u in users for i in range(1, 4 + u % 5)])
    activity = {u: u / 61 for u in users}
    fit = fit_sessions(history, activity, window_end=T0 + 3 * DAY, returns_only=False)
    assert set(fit.groups) == {"continue"}
    assert "0 session starts in 180 daily trials" in fit.handset["start_min"]
    assert fit.handset["churn_decay"] == fit.handset["start_min"]
    assert (fit.config.start_min, fit.config.start_max) == (SessionConfig().start_min, SessionConfig().start_max)
    assert fit.real.daily_start_rate == 0.0 and fit.real.one_session_share == 1.0
    # every exit censored: the continue decision is not identified either
    fit = fit_sessions(history, activity)
    assert fit.groups == {} and fit.fitted == () and fit.config == SessionConfig()
    assert "0 observed exits" in fit.handset["continue_bias"]


# ----------------------------------------------------------------------------------- the fit artifact
@pytest.fixture(scope="module", name="small_fit")
def small_fit_fixture() -> SessionFit:
    history, act, end = simulate_history(60, 10, 0.2, 0.5, SessionConfig(), seed=3)
    return fit_sessions(history, act, window_end=end)


def test_session_fit_round_trips_through_json(small_fit, tmp_path):
    path = small_fit.save(tmp_path / "fit.json")
    assert SessionFit.load(path) == small_fit
    assert SessionFit.from_dict(json.loads(json.dumps(small_fit.to_dict()))) == small_fit
    assert json.loads(path.read_text())["versions"]["recsim_personas"]
    assert set(small_fit.method) == set(small_fit.groups)


def test_a_damaged_session_fit_is_refused_naming_the_file_and_the_fix(small_fit, tmp_path):
    path = tmp_path / "fit.json"
    with pytest.raises(ArtifactError, match="no such file"):
        SessionFit.load(path)
    path.write_text('{"config": ', encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"fit\.json: the session fit is damaged \(Expecting value.*Fix: fit"):
        SessionFit.load(path)
    d = small_fit.to_dict()
    del d["real"]
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"fit\.json: the session fit is damaged.*no 'real' entry"):
        SessionFit.load(path)
    d = small_fit.to_dict()
    d["config"]["start_min"] = 2.0
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ArtifactError, match="start_min must be in"):
        SessionFit.load(path)
    d = small_fit.to_dict()
    d["fitted"] = d["fitted"][1:]
    with pytest.raises(ConfigError, match="neither fitted nor hand-set"):
        SessionFit.from_dict(d)


# ------------------------------------------------------------------------------------ the watch unit
def test_watch_unit_multiplies_the_continue_probabilities_of_the_watched_items():
    cfg = SessionConfig(
        continue_unit="watch",
        satisfaction_memory=0.5,
        continue_bias=1.0,
        satisfaction_weight=2.0,
        activity_weight=4.0,
        fatigue=0.5,
    )
    watched = np.array([[True, False, True]])
    ratings = np.array([[5, 0, 1]])
    sat, p = continue_after_page(watched, ratings, np.zeros(1), np.array([2]), np.array([2]), np.array([0.5]), cfg)
    # item 1: S = 0.5·0 + 0.5·1 = 0.5, position 3: logit 1 + 2·0.5 - 0.5·2 = 1
    # item 3: S = 0.5·0.5 + 0.5·(-1) = -0.25, position 4: logit 1 - 0.5 - 0.5·3 = -1
    assert sat[0] == pytest.approx(-0.25)
    assert p[0] == pytest.approx(sigmoid(1.0) * sigmoid(-1.0))
    log_cfg = SessionConfig(**{**cfg.to_dict(), "fatigue_curve": "log"})
    _, p_log = continue_after_page(
        watched, ratings, np.zeros(1), np.array([2]), np.array([2]), np.array([0.5]), log_cfg
    )
    assert p_log[0] == pytest.approx(sigmoid(2.0 - 0.5 * math.log(3)) * sigmoid(0.5 - 0.5 * math.log(4)))


@pytest.mark.parametrize(("memory", "curve"), [(0.0, "linear"), (0.3, "log"), (0.9, "linear")])
def test_watch_unit_matches_the_item_by_item_definition(memory, curve):
    """The closed-form EMA equals updating the satisfaction and the continue product one watched item at a time."""
    cfg = SessionConfig(continue_unit="watch", satisfaction_memory=memory, fatigue_curve=curve, fatigue=0.3)
    rng = np.random.default_rng(1)
    n, k = 200, 8
    watched = rng.random((n, k)) < rng.random((n, 1))
    ratings = rng.integers(1, 6, size=(n, k))
    prev, watches, act = rng.uniform(-1, 1, n), rng.integers(0, 12, n), rng.random(n)
    sat, p = continue_after_page(watched, ratings, prev, np.ones(n, int), watches, act, cfg)
    for r in range(n):
        s, pos, prod = prev[r], watches[r], 1.0
        for j in np.flatnonzero(watched[r]):
            s = memory * s + (1 - memory) * (ratings[r, j] - 3) / 2
            pos += 1
            prod *= continue_probability(np.array([s]), np.array([pos]), act[r : r + 1], cfg)[0]
        if not watched[r].any():
            s = memory * s + (1 - memory) * cfg.empty_page_satisfaction
            prod = continue_probability(np.array([s]), np.array([max(pos, 1)]), act[r : r + 1], cfg)[0]
        assert sat[r] == pytest.approx(s, abs=1e-12)
        assert p[r] == pytest.approx(prod, rel=1e-12)


def test_watch_unit_empty_page_is_one_decision_with_the_empty_page_satisfaction():
    cfg = SessionConfig(
        continue_unit="watch",
        satisfaction_memory=0.5,
        empty_page_satisfaction=-0.6,
        continue_bias=1.0,
        satisfaction_weight=2.0,
        activity_weight=1.0,
        fatigue=0.25,
    )
    watched = np.zeros((2, 4), dtype=bool)
    sat, p = continue_after_page(
        watched,
        np.zeros((2, 4), int),
        np.array([0.4, 0.4]),
        np.array([3, 3]),
        np.array([0, 5]),
        np.array([1.0, 0.0]),
        cfg,
    )
    np.testing.assert_allclose(sat, [0.5 * 0.4 - 0.5 * 0.6] * 2)
    # position max(watches, 1): 1 (no fatigue) for the first row, 5 for the second
    np.testing.assert_allclose(p, [sigmoid(1.0 - 0.2 + 0.5), sigmoid(1.0 - 0.2 - 0.5 - 0.25 * 4)])


def test_page_unit_is_todays_rule_exactly():
    rng = np.random.default_rng(0)
    cfg = SessionConfig()
    watched = rng.random((50, 5)) < 0.4
    ratings = rng.integers(1, 6, size=(50, 5))
    prev, pages, act = rng.uniform(-1, 1, 50), rng.integers(1, 10, 50), rng.random(50)
    sat, p = continue_after_page(watched, ratings, prev, pages, rng.integers(0, 9, 50), act, cfg)
    expected_sat = update_satisfaction(prev, page_satisfaction(watched, ratings, cfg), cfg)
    assert np.array_equal(sat, expected_sat)
    assert np.array_equal(p, continue_probability(expected_sat, pages, act, cfg))


def test_config_validates_the_new_choices():
    with pytest.raises(ConfigError, match=r"continue_unit 'watches'.*Did you mean 'watch'"):
        SessionConfig(continue_unit="watches")
    with pytest.raises(ConfigError, match="fatigue_curve 'logs'"):
        SessionConfig(fatigue_curve="logs")


def test_population_counts_watches_per_session_in_the_watch_unit(tiny_world):
    pop = Population(tiny_world, config(continue_unit="watch", continue_bias=40.0, fatigue=0.0, **WATCH_ALL), seed=0)
    user = pop.next_session()
    rng = np.random.default_rng(0)
    total = 0
    for _ in range(3):
        unseen = np.flatnonzero(~pop.state.seen[user])
        r = pop.react([user], rng.choice(unseen, size=3, replace=False)[None, :])
        total += int(r.watched.sum())
        assert not r.exited[0]
    assert total > 0 and pop.state.session_watches[user] == total
    pop.abandon_session(user)
    pop.start_session(user)
    assert pop.state.session_watches[user] == 0


# -------------------------------------------------------------------------------------- real data
def test_fit_on_the_real_ml100k_split(ml100k_split):
    fit = fit_split_sessions(ml100k_split)
    assert isinstance(fit.config, SessionConfig) and fit.config.continue_unit == "watch"
    assert fit.n_users == ml100k_split.history()["user_id"].nunique()
    assert fit.n_censored >= len(ml100k_split.user_ids)  # every sampled user's train part ends mid-window
    assert 0.0 <= fit.config.start_min <= fit.config.start_max < 0.2  # ML-100K users rarely come back
    for g in fit.groups.values():
        assert g.loglik_fitted >= g.loglik_default


def test_sign_up_sessions_are_left_out_of_the_continue_fit():
    truth = SessionConfig(
        satisfaction_memory=0.5, continue_bias=1.5, satisfaction_weight=2.0, activity_weight=1.0, fatigue=0.1
    )
    history, act, end = simulate_history(300, 20, 0.3, 0.3, truth, seed=2)
    # every user first rates 120 remembered movies in one sitting the day before: a sign-up session
    signup = [(int(u), 900_000 + k, 5, T0 - DAY + 30 * k) for u in history["user_id"].unique() for k in range(120)]
    with_signup = pd.concat([ratings_frame(signup), history], ignore_index=True)
    returns = fit_sessions(with_signup, act, window_end=end + DAY)
    assert returns.config.continue_bias == pytest.approx(1.5, abs=0.2)
    assert returns.config.satisfaction_weight == pytest.approx(2.0, abs=0.3)
    every = fit_sessions(with_signup, act, window_end=end + DAY, returns_only=False)
    assert abs(every.config.continue_bias - 1.5) > 0.3 or abs(every.config.fatigue - 0.1) > 0.05


def test_a_negative_fatigue_is_allowed_on_the_log_curve_only():
    assert SessionConfig(fatigue=-0.5, fatigue_curve="log").fatigue == -0.5
    with pytest.raises(ConfigError, match="allowed on the 'log' curve only"):
        SessionConfig(fatigue=-0.5)


def test_a_heavy_tail_is_fitted_as_a_negative_fatigue_on_the_log_curve():
    truth = SessionConfig(
        satisfaction_memory=0.5,
        continue_bias=0.5,
        satisfaction_weight=0.0,
        activity_weight=0.0,
        fatigue=-0.8,
        fatigue_curve="log",
    )
    history, act, end = simulate_history(300, 20, 0.3, 0.3, truth, seed=3)
    fit = fit_sessions(history, act, window_end=end + DAY)
    assert fit.config.fatigue_curve == "log"
    assert fit.config.fatigue == pytest.approx(-0.8, abs=0.15)
