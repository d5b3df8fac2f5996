"""The fitted choice model: EASE against scikit-learn's ridge, the features on a hand-computed case, the fit
never seeing the test part, the artifact, and its use in a world."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.choice.config import ChoiceConfig
from recsim_personas.choice.ease import fit_ease
from recsim_personas.choice.features import (
    FEATURES,
    ItemSide,
    UserSide,
    daily_counts,
    feature_matrix,
    genre_shares,
    padded_histories,
)
from recsim_personas.choice.fit import fit_choice
from recsim_personas.choice.model import FittedChoice, HandsetChoice
from recsim_personas.data import load_split
from recsim_personas.envs.state import UserTable
from recsim_personas.envs.world import as_world, make_world
from recsim_personas.errors import ArtifactError, ConfigError


def test_ease_columns_are_ridge_regressions_on_the_other_items():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = (rng.random((40, 7)) < 0.4).astype(np.float64)
    b = fit_ease(x, 3.0)
    assert np.allclose(np.diag(b), 0.0)
    for j in range(7):
        others = [i for i in range(7) if i != j]
        ridge = Ridge(alpha=3.0, fit_intercept=False).fit(x[:, others], x[:, j])
        assert np.allclose(b[others, j], ridge.coef_, atol=1e-5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("holdout_share", 1.0, "holdout_share must be in (0, 1), got 1.0"),
        ("negatives_per_positive", 0, "negatives_per_positive must be an integer >= 1, got 0"),
        ("ease_l2", -1.0, "ease_l2 must be a finite number > 0, got -1.0"),
        ("negative_sampling", "popular", "Did you mean 'popularity'"),
    ],
)
def test_choice_config_names_the_bad_field(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ChoiceConfig(**{field: value})
    assert ChoiceConfig.from_dict(ChoiceConfig().to_dict()) == ChoiceConfig()


def test_features_of_a_hand_computed_case():
    ease = np.array([[0, 1, 2], [3, 0, 4], [5, 6, 0], [0, 0, 0]], dtype=np.float32)  # last row: padding
    counts, first = daily_counts(np.array([0, 0, 1, 2]), np.array([100, 101, 101, 130]), 3)
    genres = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float64)
    items = ItemSide(
        ease=ease,
        log_popularity=np.log1p(np.array([2.0, 1.0, 1.0])),
        daily_counts=counts,
        first_day=first,
        year=np.array([1950.0, 1960.0, 1965.0]),
        genres=genres,
        recent_items=1,
        trend_days=10,
    )
    hist, lengths = padded_histories(np.array([0, 0, 1]), np.array([0, 1, 2]), 2)
    assert hist.tolist() == [[0, 1], [2, -1]] and lengths.tolist() == [2, 1]
    share = genre_shares(np.array([0, 0, 1]), np.array([0, 1, 2]), genres, 2)
    assert np.allclose(share, [[2 / 3, 1 / 3], [0, 1]])
    users = UserSide(
        ref_day=np.array([101, 130]),
        genre_share=share,
        traits=np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]),
        hist_items=hist,
        hist_len=lengths,
    )
    f = feature_matrix(items, users, np.array([0, 1]), np.array([2, 0]), np.array([3.5, 4.0]))
    col = {name: k for k, name in enumerate(FEATURES)}
    assert f.shape == (2, len(FEATURES))
    assert f[:, col["ease"]].tolist() == [2.0 + 4.0, 5.0]  # user 0 rated items 0, 1; user 1 rated item 2
    assert f[:, col["ease_recent"]].tolist() == [4.0, 5.0]  # the latest item only
    # item 2 rated on day 130, user 0's window (91, 101] misses it; item 0: days 100, 101 within (120, 130]? no
    assert f[:, col["trend"]].tolist() == [0.0, 0.0]
    f2 = feature_matrix(items, users, np.array([0]), np.array([0]), np.array([3.0]))
    assert f2[0, col["trend"]] == pytest.approx(np.log1p(2.0))  # days 100 and 101 within (91, 101]
    user_year = 1970 + 101 / 365.25
    assert f[0, col["age"]] == pytest.approx(user_year - 1965.0)
    assert f[0, col["log_age"]] == pytest.approx(np.log1p(user_year - 1965.0))
    assert f[0, col["genre_match"]] == pytest.approx(1 / 3)  # item 2 is genre 1 only
    assert f[1, col["genre_match"]] == pytest.approx(0.0)
    assert f[:, col["expected_rating"]].tolist() == [3.5, 4.0]
    assert f[1, col["conformity_x_popularity"]] == pytest.approx(0.5 * np.log1p(2.0))


@pytest.fixture(scope="module", name="tiny_split")
def tiny_split_fixture(tiny_split_dir):
    return load_split(tiny_split_dir)


@pytest.fixture(scope="module", name="fitted")
def fitted_fixture(tiny_split):
    return fit_choice(tiny_split, ChoiceConfig(validation_share=0.3))


def test_the_fit_never_reads_the_test_part(tiny_split, fitted):
    test = tiny_split.test.copy()
    test["item_id"] = test["item_id"].sample(frac=1.0, random_state=1).to_numpy()  # another test part
    test["rating"] = 1
    other = fit_choice(dataclasses.replace(tiny_split, test=test), ChoiceConfig(validation_share=0.3))
    assert np.array_equal(other.coef, fitted.coef) and other.intercept == fitted.intercept
    report = fitted.report
    assert report["positives"] > 0 and report["negatives"] == report["positives"]  # 1 per positive
    assert set(report["coefficients"]) == {*FEATURES, "intercept"}


def test_training_set_holds_out_next_choices_and_keeps_validation_users_apart(tiny_split):
    from recsim_personas.choice.fit import training_set

    config = ChoiceConfig(validation_share=0.3, max_positives_per_user=3)
    data = training_set(tiny_split, config)
    history = tiny_split.history()
    pos = data.y == 1

    def pairs(users, items) -> set:
        return set(zip(np.asarray(users).tolist(), np.asarray(items).tolist(), strict=True))

    pos_pairs = pairs(data.user_ids[data.users[pos]], data.item_ids[data.items[pos]])
    known_pairs = pairs(data.known["user_id"], data.known["item_id"])
    rated = pairs(history["user_id"], history["item_id"])
    assert pos_pairs <= rated and not pos_pairs & known_pairs  # positives: rated, but after the known part
    assert np.bincount(data.users[pos]).max() <= 3
    neg_pairs = pairs(data.user_ids[data.users[~pos]], data.item_ids[data.items[~pos]])
    assert not neg_pairs & rated
    # a user's pairs are all validation or all training
    by_user = {u: set(data.is_valid[data.users == u].tolist()) for u in np.unique(data.users)}
    assert all(len(v) == 1 for v in by_user.values())
    assert 0 < sum(v == {True} for v in by_user.values()) <= data.n_validation_users
    assert data.x.shape == (len(data.y), len(FEATURES))


def test_negatives_are_movies_the_user_never_rated(tiny_split):
    from recsim_personas.choice.fit import sample_negatives

    rated = np.zeros((3, 10), dtype=bool)
    rated[0, :8] = True
    users, items = sample_negatives(np.arange(3), np.array([5, 2, 0]), rated, None, np.random.default_rng(0))
    assert users.tolist().count(0) == 2  # only two items left for user 0
    assert set(items[users == 0].tolist()) == {8, 9}
    assert len(set(items[users == 1].tolist())) == 2


def test_saved_model_loads_identically_and_refuses_damage(tmp_path, tiny_split, fitted):
    out = fitted.save(tmp_path / "choice", sessions={"x": 1})
    loaded = FittedChoice.load(out, split_id=tiny_split.split_id)
    world = make_world(tiny_split, choice="handset")
    table = UserTable(world)
    users = np.repeat(np.arange(world.n_users), 3)
    items = np.tile(np.arange(3), world.n_users)
    e = np.full(len(users), 3.5)
    assert np.allclose(
        loaded.probability(loaded.user_side(world, table), users, items, e),
        fitted.probability(fitted.user_side(world, table), users, items, e),
    )
    with pytest.raises(ArtifactError, match="already exists"):
        fitted.save(out)
    with pytest.raises(ArtifactError, match="another split"):
        FittedChoice.load(out, split_id="0" * 64)
    (out / "choice.json").write_text(json.dumps({"features": []}))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        FittedChoice.load(out)


def test_world_choice_selection(tmp_path, tiny_split, fitted):
    handset = make_world(tiny_split, choice="handset")
    assert isinstance(handset.choice, HandsetChoice) and handset.session_config is None
    default = make_world(tiny_split)
    assert default.choice.name == "fitted" and default.session_config is not None
    # the tiny split has too few return sessions to fit continue/exit: that group stays hand-set (per page)
    assert default.session_config.continue_unit == "page"
    saved = fitted.save(tmp_path / "c2", sessions=None)
    from_dir = make_world(tiny_split, choice=str(saved))
    assert from_dir.choice.name == "fitted" and from_dir.session_config is None
    with pytest.raises(ConfigError, match="Did you mean 'fitted'"):
        make_world(tiny_split, choice="fited")
    with pytest.raises(ConfigError, match="choose with the 'handset' choice model"):
        as_world(world=handset, choice="fitted")


def test_a_session_follows_the_simulated_history_and_equals_the_feature_path(tiny_split, fitted):
    world = make_world(tiny_split, choice=fitted)
    assert world.choice.name == "fitted" and world.choice.model is fitted  # bound to the world's users
    table = UserTable(world)
    session = world.choice.session(world)
    other = world.choice.session(world)  # another simulation of the same world
    u = 0
    unseen = np.flatnonzero(~table.seen[u])
    users = np.full(unseen.size, u)
    e = np.linspace(1.0, 5.0, unseen.size)

    start = UserTable(world)  # the logged histories: the fixed part (ease included) is computed from them

    def reference() -> np.ndarray:
        x = feature_matrix(fitted.items, fitted.user_side(world, table), users, unseen, e)
        x0 = feature_matrix(fitted.items, fitted.user_side(world, start), users, unseen, e)
        x[:, FEATURES.index("ease")] = x0[:, FEATURES.index("ease")]
        return 1.0 / (1.0 + np.exp(-fitted.logits(x)))

    before = session.watch_probability(table, users, unseen, e, None)
    assert np.allclose(before, reference(), atol=1e-5)
    j = int(unseen[0])
    table.record(np.array([u]), np.array([[j]]), np.array([[True]]), np.array([[5]]))
    after = session.watch_probability(table, users, unseen, e, None)
    assert np.allclose(after, reference(), atol=1e-5)
    changed = np.flatnonzero(np.abs(fitted.items.ease[j, unseen]) > 1e-6)  # through ease_recent
    assert changed.size > 0 and not np.allclose(before[changed], after[changed])
    # another simulation (its own table) does not see the watch
    assert np.allclose(other.watch_probability(UserTable(world), users, unseen, e, None), before)


def test_standardisation_treats_a_rounding_level_spread_as_constant():
    """Every implicit rating is 4: the expected-rating column's spread is rounding error, so its scale is 1 (a
    later deviation of 1e-6 must not become a logit of thousands)."""
    from recsim_personas.choice.fit import standardisation

    rng = np.random.default_rng(0)
    x = np.column_stack([4.0 + rng.normal(0.0, 3e-12, 1000), rng.normal(2.0, 0.5, 1000), np.zeros(1000)])
    mean, scale = standardisation(x)
    assert np.allclose(mean, x.mean(axis=0)) and scale[0] == 1.0 and scale[2] == 1.0
    assert scale[1] == pytest.approx(x[:, 1].std())
    assert standardisation(np.array([[1e-6], [3e-6]]))[1][0] == pytest.approx(1e-6)  # small but real spread kept
