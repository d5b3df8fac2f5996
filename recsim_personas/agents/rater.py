"""The Rater contract every simulated-user model implements, and helpers on rating distributions.

A rater answers a batch of (user_id, item_id) requests with a rating *distribution* over the five
ratings 1..5: a float64 array of shape ``(n, 5)``, each row non-negative and summing to 1. Column ``k``
is the probability of rating ``k + 1``. Point predictions, samples and histograms all derive from it.

Classical raters (:mod:`recsim_personas.agents.classical`) and the SLM agents implement the same
protocol, so the environment and the evaluation take any of them unchanged.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from recsim_personas.errors import RaterInputError, RaterOutputError

RATINGS = np.arange(1, 6, dtype=np.float64)
"""The rating scale, shape (5,): ``[1., 2., 3., 4., 5.]``."""
N_LEVELS = 5


@runtime_checkable
class Rater(Protocol):
    """Anything that predicts rating distributions for (user, item) pairs.

    Attributes:
        name: short label used in reports.
    """

    name: str

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Rating distributions for a batch of requests.

        Args:
            users: user ids, shape (n,), integer.
            items: item ids, shape (n,), integer.

        Returns:
            float64 array of shape (n, 5); row ``j`` is the distribution of the rating user
            ``users[j]`` gives item ``items[j]`` (column ``k`` = P(rating = k + 1)).
        """
        ...


@runtime_checkable
class RaterSession(Protocol):
    """One simulation's handle on a rater: its predictions, and the watches the simulation reports back.

    A simulation (a :class:`~recsim_personas.envs.model.Population`) opens one session when it starts and asks
    it, never the shared rater, for rating distributions; what its users watch goes to :meth:`observe`. State a
    rater keeps about a simulation (e.g. memories of watched movies) lives in the session, so two simulations
    on one rater never see each other's watches.
    """

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Rating distributions, float64 (n, 5), as :meth:`Rater.predict`, given what was observed so far."""
        ...

    def observe(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        """The users watched these items and rated them (ids int (n,), ratings int (n,) in 1..5)."""
        ...


@runtime_checkable
class StatefulRater(Rater, Protocol):
    """A rater whose predictions depend on what a simulation showed it: it hands each simulation a session."""

    def session(self) -> RaterSession:
        """A fresh session: nothing observed yet (predictions as :meth:`Rater.predict`)."""
        ...


class StatelessSession:
    """The session of a rater that learns nothing from a simulation: ``predict`` forwards, ``observe`` ignores.

    Args:
        rater: any :class:`Rater`.
    """

    def __init__(self, rater: Rater) -> None:
        self.rater = rater

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.rater.predict(users, items)

    def observe(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        return None


def open_session(rater: Rater) -> RaterSession:
    """A new :class:`RaterSession` of ``rater``: its own (:class:`StatefulRater`), or a :class:`StatelessSession`."""
    if isinstance(rater, StatefulRater):
        return rater.session()
    return StatelessSession(rater)


def as_requests(users: object, items: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a batch of requests to two int64 arrays of equal length.

    Raises:
        RaterInputError: (a ``ValueError``) not two 1-D arrays of equal length, or ids that are not integers.
    """
    u = np.asarray(users)
    i = np.asarray(items)
    if u.ndim != 1 or i.ndim != 1 or u.shape != i.shape:
        raise RaterInputError(
            f"users and items must be 1-D arrays of equal length, got shapes {u.shape} and {i.shape}. Fix: pass one"
            " user id and one item id per request."
        )
    for name, arr in (("users", u), ("items", i)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise RaterInputError(
                f"{name} must hold integer ids, got dtype {arr.dtype}: {arr[:5].tolist()!r}. Fix: pass MovieLens ids"
                " as integers."
            )
    return u.astype(np.int64, copy=False), i.astype(np.int64, copy=False)


def check_distribution(dist: object, n: int | None = None, *, atol: float = 1e-6, source: str = "rater") -> np.ndarray:
    """Check that ``dist`` is a valid batch of rating distributions and return it as float64.

    Raises:
        RaterOutputError: wrong shape, NaN/inf, negative entries, or rows not summing to 1.
    """
    arr = np.asarray(dist, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != N_LEVELS or (n is not None and arr.shape[0] != n):
        want = f"({n if n is not None else 'n'}, {N_LEVELS})"
        raise RaterOutputError(f"{source} returned an array of shape {arr.shape}; expected {want}.")
    if not np.isfinite(arr).all():
        row = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise RaterOutputError(f"{source} returned a non-finite probability in row {row}: {arr[row].tolist()}.")
    if (arr < -atol).any():
        row = int(np.argwhere(arr < -atol)[0, 0])
        raise RaterOutputError(f"{source} returned a negative probability in row {row}: {arr[row].tolist()}.")
    sums = arr.sum(axis=1)
    bad = np.abs(sums - 1.0) > atol
    if bad.any():
        row = int(np.argmax(bad))
        raise RaterOutputError(f"{source} returned row {row} summing to {sums[row]!r}, not 1: {arr[row].tolist()}.")
    return arr


def expected_rating(dist: np.ndarray) -> np.ndarray:
    """Mean of each distribution. ``dist`` (n, 5) → float64 (n,) in [1, 5]."""
    return np.asarray(dist, dtype=np.float64) @ RATINGS


def most_likely_rating(dist: np.ndarray) -> np.ndarray:
    """Mode of each distribution (ties → lower rating). ``dist`` (n, 5) → int64 (n,) in 1..5."""
    return np.argmax(np.asarray(dist), axis=1).astype(np.int64) + 1


def median_rating(dist: np.ndarray) -> np.ndarray:
    """Median of each distribution: the lowest rating whose cumulative probability reaches 1/2 (the point that
    minimises the expected absolute error). ``dist`` (n, 5) → int64 (n,) in 1..5."""
    cdf = np.cumsum(np.asarray(dist, dtype=np.float64), axis=1)
    return np.minimum((cdf < 0.5 - 1e-12).sum(axis=1), N_LEVELS - 1).astype(np.int64) + 1


def sample_ratings(dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one rating per row from ``rng``. ``dist`` (n, 5) → int64 (n,) in 1..5.

    Uses one uniform per row (inverse CDF), so the draw for row ``j`` does not depend on other rows'
    values, only on their count.
    """
    cdf = np.cumsum(np.asarray(dist, dtype=np.float64), axis=1)
    u = rng.random(cdf.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), N_LEVELS - 1).astype(np.int64) + 1


def rating_histogram(ratings: np.ndarray) -> np.ndarray:
    """Share of each rating 1..5 among integer ``ratings``. Returns float64 (5,) summing to 1."""
    counts = np.bincount(np.asarray(ratings, dtype=np.int64) - 1, minlength=N_LEVELS)[:N_LEVELS]
    total = counts.sum()
    return counts / total if total else np.full(N_LEVELS, 1.0 / N_LEVELS)
