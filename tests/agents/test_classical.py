from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsim_personas.agents import (
    BiasRater,
    MFConfig,
    MFRater,
    Rater,
    check_distribution,
    evaluate_fidelity,
    expected_rating,
    make_rater,
)
from recsim_personas.agents.classical import (
    BlendRater,
    ItemKNNRater,
    NotFittedError,
    load_rater,
    mean_matched_distribution,
    save_rater,
    temporal_holdout,
)
from recsim_personas.errors import ArtifactError, ConfigError


def _frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def structured(n_users=60, n_items=80, per_user=40, rank=2, seed=0):
    """Ratings from biases + a low-rank interaction, observed on a random subset."""
    rng = np.random.default_rng(seed)
    ub, ib = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    P, Q = rng.normal(0, 0.8, (n_users, rank)), rng.normal(0, 0.8, (n_items, rank))
    rows = []
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            r = 3.2 + ub[u] + ib[i] + P[u] @ Q[i] + rng.normal(0, 0.3)
            rows.append((u + 1, int(i) + 1, int(np.clip(np.rint(r), 1, 5)), 1000 + k))
    return _frame(rows)


def test_mean_matched_distribution_keeps_the_mean():
    mu = np.array([1.0, 1.3, 2.5, 3.7, 4.9, 5.0, 7.0])
    d = mean_matched_distribution(mu, 1.1)
    check_distribution(d, len(mu))
    np.testing.assert_allclose(expected_rating(d), np.clip(mu, 1, 5), atol=2e-3)
    # a wider sigma spreads the mass
    assert mean_matched_distribution(np.array([3.0]), 2.0)[0, 0] > mean_matched_distribution(np.array([3.0]), 0.5)[0, 0]


def test_temporal_holdout_takes_each_users_latest():
    df = _frame([(1, i, 3, t) for i, t in zip(range(10), [5, 1, 2, 9, 3, 4, 6, 7, 8, 0], strict=True)])
    mask = temporal_holdout(df, 0.2)
    assert sorted(df.loc[mask, "timestamp"]) == [8, 9]


@pytest.mark.parametrize("name", ["global", "user", "item", "bias", "mf", "knn", "blend"])
def test_every_classical_rater_honours_the_contract(name):
    train = structured(n_users=20, n_items=30, per_user=15)
    rater = make_rater(name)
    assert isinstance(rater, Rater)
    with pytest.raises(NotFittedError, match="fit"):
        rater.predict(np.array([1]), np.array([1]))
    rater.fit(train)
    users = np.array([1, 2, 999, 3])  # 999: unknown user
    items = np.array([1, 5, 2, 999])  # 999: unknown item
    d = check_distribution(rater.predict(users, items), 4)
    np.testing.assert_allclose(expected_rating(d), rater.predict_point(users, items), atol=2e-3)
    assert rater.predict(np.array([], dtype=int), np.array([], dtype=int)).shape == (0, 5)
    assert 0.3 <= rater.sigma <= 2.5


def test_bias_rater_recovers_user_and_item_effects():
    rows = []
    for u in range(1, 41):
        for i in range(1, 41):
            rows.append((u, i, int(np.clip(3 + (u > 20) - (i > 20) + ((u + i) % 3 == 0), 1, 5)), u * 100 + i))
    train = _frame(rows)
    rater = BiasRater(reg_user=0.1, reg_item=0.1).fit(train)
    gen_u, harsh_u = (
        rater.predict_point(np.array([30]), np.array([10]))[0],
        rater.predict_point(np.array([5]), np.array([10]))[0],
    )
    assert gen_u - harsh_u == pytest.approx(1.0, abs=0.1)
    good_i, bad_i = (
        rater.predict_point(np.array([5]), np.array([5]))[0],
        rater.predict_point(np.array([5]), np.array([35]))[0],
    )
    assert good_i - bad_i == pytest.approx(1.0, abs=0.1)


def test_mf_learns_interactions_the_bias_model_cannot():
    data = structured(seed=1)
    hold = temporal_holdout(data, 0.25)
    train, test = data[~hold], data[hold]
    report = evaluate_fidelity([BiasRater(), MFRater(MFConfig(dim=4, reg=0.02, max_epochs=400))], test, fit_on=train)
    bias, mf = report.rows
    assert mf.rmse_expected < bias.rmse_expected - 0.05


def test_mf_is_deterministic_under_its_seed():
    train = structured(n_users=20, n_items=30, per_user=15)
    u, i = train.user_id.to_numpy(), train.item_id.to_numpy()
    a = MFRater(MFConfig(seed=3, max_epochs=50)).fit(train).predict(u, i)
    b = MFRater(MFConfig(seed=3, max_epochs=50)).fit(train).predict(u, i)
    np.testing.assert_array_equal(a, b)


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match=r"rater 'bais'.*'bias'"):
        make_rater("bais")
    with pytest.raises(ConfigError, match="reg_user"):
        BiasRater(reg_user=-1)
    with pytest.raises(ConfigError, match="dim"):
        MFConfig(dim=0)
    with pytest.raises(ConfigError, match="lacks columns"):
        BiasRater().fit(pd.DataFrame({"user_id": [1]}))


@pytest.mark.movielens
def test_bias_rater_reaches_the_papers_baseline_on_ml100k(ml100k_split):
    report = evaluate_fidelity([BiasRater()], ml100k_split.test, fit_on=ml100k_split.history())
    row = report.rows[0]
    assert row.rmse_expected == pytest.approx(0.97, abs=0.02)
    assert row.mae_expected == pytest.approx(0.77, abs=0.02)
    assert row.n == 11474


@pytest.mark.parametrize("name", ["global", "user", "item", "bias", "mf", "knn", "blend"])
def test_every_classical_rater_round_trips_through_its_files(name, tmp_path):
    train = structured(n_users=20, n_items=30, per_user=15)
    rater = make_rater(name).fit(train)
    hashes = save_rater(rater, tmp_path / name)
    assert set(hashes) == {"rater.json", "rater.npz"}
    back = load_rater(tmp_path / name)
    assert type(back) is type(rater) and back.sigma == rater.sigma
    users = np.array([1, 2, 999, 3, 7])
    items = np.array([1, 5, 2, 999, 30])
    np.testing.assert_allclose(back.predict(users, items), rater.predict(users, items), rtol=0, atol=1e-12)


def test_a_damaged_rater_file_is_named(tmp_path):
    rater = make_rater("knn").fit(structured(n_users=20, n_items=30, per_user=15))
    save_rater(rater, tmp_path)
    with pytest.raises(NotFittedError):
        save_rater(make_rater("bias"), tmp_path / "unfitted")
    doc = json.loads((tmp_path / "rater.json").read_text())
    (tmp_path / "rater.json").write_text(json.dumps({**doc, "arrays": [*doc["arrays"], "extra"]}))
    with pytest.raises(ArtifactError, match=r"rater.npz lacks arrays \['extra'\]"):
        load_rater(tmp_path)
    (tmp_path / "rater.json").write_text(json.dumps({**doc, "rater": "svd"}))
    with pytest.raises(ArtifactError, match="unknown rater 'svd'"):
        load_rater(tmp_path)
    with pytest.raises(ArtifactError, match="cannot read"):
        load_rater(tmp_path / "nowhere")


def test_knn_uses_the_users_similar_items():
    """Two item groups with opposite tastes of two user groups: a bias model cannot see it, item-kNN can."""
    rows = []
    rng = np.random.default_rng(0)
    for u in range(1, 61):
        for i in rng.choice(np.arange(1, 41), 25, replace=False):
            likes = (u <= 30) == (i <= 20)
            rows.append((u, int(i), 5 if likes else 2, int(rng.integers(10**6))))
    data = _frame(rows)
    hold = temporal_holdout(data, 0.2)
    report = evaluate_fidelity([BiasRater(), ItemKNNRater(neighbors=10)], data[hold], fit_on=data[~hold])
    bias, knn = report.rows
    assert knn.rmse_expected < 0.5 * bias.rmse_expected


def test_blend_weights_come_from_the_hold_out_and_beat_a_lone_member():
    data = structured(seed=2)
    hold = temporal_holdout(data, 0.25)
    blend = BlendRater(("bias", "knn"))
    report = evaluate_fidelity([BiasRater(), blend], data[hold], fit_on=data[~hold])
    assert blend.weights_.shape == (3,)
    assert report.rows[1].rmse_expected < report.rows[0].rmse_expected
    with pytest.raises(ConfigError, match="members"):
        BlendRater(("mf", "blend"))


@pytest.mark.movielens
def test_knn_beats_the_bias_rater_on_ml100k(ml100k_split):
    report = evaluate_fidelity([BiasRater(), ItemKNNRater()], ml100k_split.test, fit_on=ml100k_split.history())
    bias, knn = report.rows
    assert knn.rmse_expected < bias.rmse_expected - 0.01
