from __future__ import annotations

import numpy as np
import pytest

from recsim_personas.agents.rater import (
    as_requests,
    check_distribution,
    expected_rating,
    most_likely_rating,
    rating_histogram,
    sample_ratings,
)
from recsim_personas.errors import RaterOutputError


def test_point_summaries():
    d = np.array([[0, 0, 0, 0, 1.0], [0.5, 0.5, 0, 0, 0], [0.1, 0.2, 0.4, 0.2, 0.1]])
    assert expected_rating(d).tolist() == pytest.approx([5.0, 1.5, 3.0])
    assert most_likely_rating(d).tolist() == [5, 1, 3]  # tie -> lower rating


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
