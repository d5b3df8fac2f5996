from __future__ import annotations

import numpy as np
import pytest

from recsim_personas.agents.rater import (
    as_requests,
    check_distribution,
    expected_rating,
    median_rating,
    most_likely_rating,
    rating_histogram,
    sample_ratings,
)
from recsim_personas.errors import RaterOutputError


def test_point_summaries():
    d = np.array([[0, 0, 0, 0, 1.0], [0.5, 0.5, 0, 0, 0], [0.1, 0.2, 0.4, 0.2, 0.1]])
    assert expected_rating(d).tolist() == pytest.approx([5.0, 1.5, 3.0])
    assert most_likely_rating(d).tolist() == [5, 1, 3]  # tie -> lower rating
    assert median_rating(d).tolist() == [5, 1, 3]  # P(<= 1) = 0.5 reaches one half
    skewed = np.array([[0.3, 0.0, 0.0, 0.0, 0.7], [0.2, 0.2, 0.05, 0.05, 0.5]])
    assert median_rating(skewed).tolist() == [5, 4]  # mode 5 / 5, mean 3.8 / 3.55


def test_median_minimises_the_expected_absolute_error():
    rng = np.random.default_rng(0)
    d = rng.dirichlet(np.ones(5), size=200)
    loss = np.stack([(d * np.abs(np.arange(1, 6) - k)).sum(axis=1) for k in range(1, 6)], axis=1)
    best = loss[np.arange(200), median_rating(d) - 1]
    assert np.all(best <= loss.min(axis=1) + 1e-12)


def test_sampling_is_reproducible_and_follows_the_distribution():
    p = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    d = np.tile(p, (40_000, 1))
    a = sample_ratings(d, np.random.default_rng(7))
    b = sample_ratings(d, np.random.default_rng(7))
    assert (a == b).all()
    assert not (a == sample_ratings(d, np.random.default_rng(8))).all()
    assert set(np.unique(a)) <= {1, 2, 3, 4, 5}
    np.testing.assert_allclose(rating_histogram(a), p, atol=0.01)
    # a one-hot distribution is always sampled at its rating
    assert (sample_ratings(np.eye(5), np.random.default_rng(0)) == np.arange(1, 6)).all()


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.ones((3, 4)) / 4, r"shape \(3, 4\)"),
        (np.full((2, 5), 0.3), "summing to"),
        (np.array([[1.2, -0.2, 0, 0, 0]]), "negative"),
        (np.array([[np.nan, 0, 0, 0, 1]]), "non-finite"),
    ],
)
def test_check_distribution_rejects_malformed_output(bad, match):
    with pytest.raises(RaterOutputError, match=match):
        check_distribution(bad)


def test_check_distribution_checks_the_row_count():
    with pytest.raises(RaterOutputError, match=r"expected \(4, 5\)"):
        check_distribution(np.full((3, 5), 0.2), 4)
    assert check_distribution(np.full((3, 5), 0.2), 3).dtype == np.float64


def test_requests_validation():
    u, i = as_requests([1, 2], np.array([3, 4], dtype=np.int32))
    assert u.dtype == np.int64 and i.dtype == np.int64
    with pytest.raises(ValueError, match="equal length"):
        as_requests([1, 2], [3])
    with pytest.raises(ValueError, match="integer ids"):
        as_requests([1.5], [3])
