"""How a simulated user behaves in a session: the coefficients and the pure decision functions.

The defaults are hand-set; :func:`~recsim_personas.envs.calibration.fit_sessions` fits the session coefficients
(starts, continue/exit, satisfaction memory, churn) to the MovieLens timestamps and says which ones it left
hand-set. Everything here is a vectorised function of
arrays (one row per concurrent session, one column per slate position) and of a frozen :class:`SessionConfig`;
nothing holds state and nothing draws randomness except through the generator it is given.
:func:`~recsim_personas.envs.reaction.react_page` and :class:`~recsim_personas.envs.model.Population` string
them together.

The behaviour model (Agent4Rec-like), with ``a``, ``c``, ``d`` the user's activity, conformity and diversity
scores in [0, 1] (percentile ranks from :func:`~recsim_personas.personas.traits.compute_traits`) and
``σ(x) = 1 / (1 + exp(-x))``:

1. **Coming back** (once per simulated day, :func:`start_probability`): a user who is not already in a
   session starts one with probability ``ρ · (start_min + (start_max - start_min) · a)``, where ``ρ`` is its
   return propensity (below), at a minute of the day drawn uniformly; its pages are ``page_minutes`` apart.
2. **Watching** (per slate item, :func:`watch_probability`): the rater's expected rating ``E`` is blended with
   the item's historical average ``h`` by conformity, ``m = (1 - w) E + w h`` with ``w = conformity_weight · c``;
   an item sharing no genre with the user's top genres (those covering 80% of its train ratings) gets
   ``m += novelty_bonus · d - taste_penalty · (1 - d)``; then ``P(watch) = σ(watch_slope · (m - watch_threshold))``.
   Items the user has already rated or watched are never watched again (probability 0).
3. **Rating** (:func:`rate`): a watched item's rating is drawn from the rater's distribution
   (``rating_mode="sample"``), or is its rounded mean (``"expected"``) or its mode (``"mode"``).
4. **Page satisfaction** (:func:`page_satisfaction`): ``(mean rating of the watched items - 3) / 2`` in
   [-1, 1], or ``empty_page_satisfaction`` when nothing on the page was watched. The session satisfaction is
   an exponential moving average ``S ← memory · S + (1 - memory) · s``, starting at 0, over pages
   (``continue_unit="page"``, ``s`` the page satisfaction) or over watched items in slate order
   (``continue_unit="watch"``, ``s = (rating - 3) / 2`` per item).
5. **Continuing** (:func:`continue_after_page`): with ``g(S, t) = σ(continue_bias + satisfaction_weight · S +
   activity_weight · (a - 1/2) - fatigue · f(t))``, where ``f(t) = t - 1`` (``fatigue_curve="linear"``) or
   ``ln t`` (``"log"``):

   - ``continue_unit="page"``: after page ``t`` the user asks for another page with probability ``g(S, t)``
     (:func:`continue_probability`);
   - ``continue_unit="watch"`` (the unit the logs show, see :mod:`~recsim_personas.envs.calibration`): after
     each watched item, ``t`` = items watched in the session so far, the user would go on with probability
     ``g(S, t)`` (``S`` updated with that item), so a page with ``m`` watched items continues with the
     product of its ``m`` probabilities; a page where nothing was watched is one decision ``g(S', max(t, 1))``
     with ``S'`` updated by ``empty_page_satisfaction`` (hand-set: the logs have no empty pages).

   Otherwise the user exits. The session is cut after ``max_pages`` pages.
6. **Churn** (:func:`return_propensity`): a session that ends with ``S < unsatisfied_below`` is
   *unsatisfied*. After ``k`` unsatisfied sessions in a row the return propensity is
   ``ρ = max(churn_floor, churn_decay ** (k - churn_patience + 1))`` once ``k ≥ churn_patience`` (else 1); a
   satisfied session resets ``k`` to 0. A user with ``k ≥ churn_patience`` counts as having stopped returning.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from recsim_personas.agents.rater import N_LEVELS, RATINGS, sample_ratings
from recsim_personas.errors import ConfigError, config_from_dict, unknown_choice

RatingMode = Literal["sample", "expected", "mode"]
RewardMode = Literal["rating", "likes", "watches"]
ContinueUnit = Literal["page", "watch"]
FatigueCurve = Literal["linear", "log"]
RATING_MODES: tuple[str, ...] = ("sample", "expected", "mode")
REWARD_MODES: tuple[str, ...] = ("rating", "likes", "watches")
CONTINUE_UNITS: tuple[str, ...] = ("page", "watch")
FATIGUE_CURVES: tuple[str, ...] = ("linear", "log")
_CHOICES: dict[str, tuple[str, ...]] = {
    "rating_mode": RATING_MODES,
    "continue_unit": CONTINUE_UNITS,
    "fatigue_curve": FATIGUE_CURVES,
}


@dataclass(frozen=True)
class SessionConfig:
    """Every coefficient of the behaviour model (see the module docstring for the formulas).

    Attributes:
        start_min: daily session probability of the least active user (activity score 0).
        start_max: daily session probability of the most active user (activity score 1).
        conformity_weight: weight on the item's historical average for the most conformist user.
        novelty_bonus: rating points added to an off-taste item for the most diverse user.
        taste_penalty: rating points taken from an off-taste item for the least diverse user.
        watch_threshold: blended rating at which an item is watched with probability 1/2.
        watch_slope: steepness of the watch probability per rating point.
        rating_mode: ``"sample"`` (draw from the distribution), ``"expected"`` (rounded mean) or ``"mode"``.
        like_threshold: ratings at or above it count as likes.
        empty_page_satisfaction: page satisfaction when nothing on the page was watched, in [-1, 1].
        satisfaction_memory: weight of earlier pages (or watched items) in the session satisfaction, in [0, 1).
        continue_bias: logit of going on for a neutral, medium-active user after its first page (or item).
        satisfaction_weight: logit gained per unit of session satisfaction.
        activity_weight: logit gained from the most active vs the least active user (centred at 1/2).
        fatigue: logit lost per unit of ``f(t)``, ``t`` the pages seen (or items watched) so far.
        fatigue_curve: ``f``: ``"linear"`` (``t - 1``) or ``"log"`` (``ln t``).
        continue_unit: ``"page"`` (one continue/exit decision per page) or ``"watch"`` (one per watched item,
            as fitted by :func:`~recsim_personas.envs.calibration.fit_sessions`; see the module docstring).
        max_pages: pages per session at most (the session is truncated there).
        page_minutes: minutes a page takes (looking at it, watching, rating): the clock on which concurrent
            sessions interleave in :meth:`~recsim_personas.envs.model.Population.run_days`.
        unsatisfied_below: a session ending with satisfaction below this is unsatisfied.
        churn_patience: unsatisfied sessions in a row before the return propensity drops.
        churn_decay: factor on the return propensity per further unsatisfied session, in (0, 1].
        churn_floor: the return propensity never drops below this, in (0, 1].
    """

    start_min: float = 0.05
    start_max: float = 0.5
    conformity_weight: float = 0.5
    novelty_bonus: float = 0.25
    taste_penalty: float = 0.75
    watch_threshold: float = 4.0
    watch_slope: float = 3.0
    rating_mode: RatingMode = "sample"
    like_threshold: int = 4
    empty_page_satisfaction: float = -1.0
    satisfaction_memory: float = 0.5
    continue_bias: float = 1.5
    satisfaction_weight: float = 2.0
    activity_weight: float = 2.0
    fatigue: float = 0.25
    fatigue_curve: FatigueCurve = "linear"
    continue_unit: ContinueUnit = "page"
    max_pages: int = 10
    page_minutes: int = 2
    unsatisfied_below: float = 0.0
    churn_patience: int = 3
    churn_decay: float = 0.5
    churn_floor: float = 0.1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _CHOICES:
                if value not in _CHOICES[f.name]:
                    raise unknown_choice(f"SessionConfig.{f.name}", str(value), _CHOICES[f.name])
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"SessionConfig.{f.name} must be a finite number, got {value!r}.")
        for name in ("start_min", "start_max", "conformity_weight"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if self.start_min > self.start_max:
            raise ConfigError(
                f"SessionConfig.start_min ({self.start_min!r}) must be <= start_max ({self.start_max!r})."
            )
        for name in ("novelty_bonus", "taste_penalty", "satisfaction_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SessionConfig.{name} must be >= 0, got {getattr(self, name)!r}.")
        if self.fatigue < 0 and self.fatigue_curve != "log":
            raise ConfigError(
                f"SessionConfig.fatigue must be >= 0 with fatigue_curve={self.fatigue_curve!r}, got"
                f" {self.fatigue!r} (a negative fatigue, a session that grows likelier to go on, is allowed on the"
                " 'log' curve only)."
            )
        _check_range("watch_threshold", self.watch_threshold, 1.0, 5.0)
        if self.watch_slope <= 0:
            raise ConfigError(f"SessionConfig.watch_slope must be > 0, got {self.watch_slope!r}.")
        if not isinstance(self.like_threshold, int) or not 1 <= self.like_threshold <= N_LEVELS:
            raise ConfigError(f"SessionConfig.like_threshold must be an integer in 1..5, got {self.like_threshold!r}.")
        _check_range("empty_page_satisfaction", self.empty_page_satisfaction, -1.0, 1.0)
        _check_range("unsatisfied_below", self.unsatisfied_below, -1.0, 1.0)
        if not 0.0 <= self.satisfaction_memory < 1.0:
            raise ConfigError(f"SessionConfig.satisfaction_memory must be in [0, 1), got {self.satisfaction_memory!r}.")
        for name in ("max_pages", "churn_patience", "page_minutes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"SessionConfig.{name} must be an integer >= 1, got {value!r}.")
        for name in ("churn_decay", "churn_floor"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"SessionConfig.{name} must be in (0, 1], got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionConfig:
        return config_from_dict(cls, d, "SessionConfig field")


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"SessionConfig.{name} must be in [{lo:g}, {hi:g}], got {value!r}.")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, elementwise; float64 array of the shape of ``x``."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# ------------------------------------------------------------------------------------------ coming back
def start_probability(activity: np.ndarray, return_prop: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """Daily probability of starting a session.

    Args:
        activity: activity scores in [0, 1], shape (n,).
        return_prop: return propensities in (0, 1], shape (n,).

    Returns:
        float64 (n,): ``return_prop · (start_min + (start_max - start_min) · activity)``.
    """
    return np.asarray(return_prop) * (cfg.start_min + (cfg.start_max - cfg.start_min) * np.asarray(activity))


def return_propensity(unsatisfied_streak: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """Return propensity after ``unsatisfied_streak`` unsatisfied sessions in a row. int (n,) → float64 (n,)."""
    over = np.maximum(0, np.asarray(unsatisfied_streak, dtype=np.int64) - cfg.churn_patience + 1)
    return np.maximum(cfg.churn_floor, cfg.churn_decay ** over.astype(np.float64))


# ---------------------------------------------------------------------------------------------- watching
def watch_probability(
    expected: np.ndarray,
    hist_avg: np.ndarray,
    off_taste: np.ndarray,
    seen: np.ndarray,
    conformity: np.ndarray,
    diversity: np.ndarray,
    cfg: SessionConfig,
) -> np.ndarray:
    """Probability that a user watches each shown item.

    Args:
        expected: the rater's expected ratings, float (...,), any shape.
        hist_avg: the items' historical average ratings, float, same shape.
        off_taste: True where the item shares no genre with the user's top genres, bool, same shape.
        seen: True where the user has already rated or watched the item, bool, same shape.
        conformity: the users' conformity scores, float, broadcastable to the same shape.
        diversity: the users' diversity scores, float, broadcastable to the same shape.

    Returns:
        float64 array of the common shape, in [0, 1); exactly 0 where ``seen``.
    """
    w = cfg.conformity_weight * np.asarray(conformity, dtype=np.float64)
    appeal = (1.0 - w) * expected + w * hist_avg
    d = np.asarray(diversity, dtype=np.float64)
    appeal = appeal + np.where(off_taste, cfg.novelty_bonus * d - cfg.taste_penalty * (1.0 - d), 0.0)
    p = sigmoid(cfg.watch_slope * (appeal - cfg.watch_threshold))
    return np.where(seen, 0.0, p)


# ------------------------------------------------------------------------------------------------ rating
def rate(dist: np.ndarray, mode: RatingMode, rng: np.random.Generator) -> np.ndarray:
    """Ratings of watched items from their distributions.

    Args:
        dist: rating distributions, float64 (n, 5).
        mode: ``"sample"`` (one inverse-CDF draw per row from ``rng``), ``"expected"`` (the mean rounded half
            to even) or ``"mode"`` (the most likely rating, ties → lower).

    Returns:
        int64 (n,) in 1..5.
    """
    if mode == "sample":
        return sample_ratings(dist, rng)
    if mode == "expected":
        return np.clip(np.rint(dist @ RATINGS), 1, N_LEVELS).astype(np.int64)
    if mode == "mode":
        return np.argmax(dist, axis=1).astype(np.int64) + 1
    raise unknown_choice("rating mode", str(mode), RATING_MODES)


# ------------------------------------------------------------------------------------------ satisfaction
def page_satisfaction(watched: np.ndarray, ratings: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """Satisfaction with one page, in [-1, 1].

    Args:
        watched: bool (n, k).
        ratings: int (n, k), ratings of the watched items (other entries ignored).

    Returns:
        float64 (n,): ``(mean rating of the watched items - 3) / 2``, or ``empty_page_satisfaction`` for a
        page where nothing was watched.
    """
    n_watched = watched.sum(axis=1)
    total = np.where(watched, ratings, 0).sum(axis=1).astype(np.float64)
    mean = total / np.maximum(n_watched, 1)
    return np.where(n_watched > 0, (mean - 3.0) / 2.0, cfg.empty_page_satisfaction)


def update_satisfaction(previous: np.ndarray, page: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """Session satisfaction after a page: ``memory · previous + (1 - memory) · page``. float64 (n,)."""
    return cfg.satisfaction_memory * np.asarray(previous) + (1.0 - cfg.satisfaction_memory) * np.asarray(page)


def fatigue_position(position: np.ndarray, cfg: SessionConfig) -> np.ndarray:
    """``f(t)`` of the continue logit: ``t - 1`` (``fatigue_curve="linear"``) or ``ln t`` (``"log"``).

    Args:
        position: pages seen (or items watched) so far, ≥ 1, int or float (...,).

    Returns:
        an array of the shape of ``position`` (int for ``"linear"`` on int input, else float64), 0 at ``t = 1``.
    """
    if cfg.fatigue_curve == "log":
        return np.log(np.asarray(position, dtype=np.float64))
    return np.asarray(position) - 1


def continue_probability(
    satisfaction: np.ndarray, pages: np.ndarray, activity: np.ndarray, cfg: SessionConfig
) -> np.ndarray:
    """Probability of going on after a page (or, with ``continue_unit="watch"``, after a watched item).

    Args:
        satisfaction: session satisfaction after the page (item), float (n,).
        pages: pages seen (items watched) so far including this one (≥ 1), int (n,).
        activity: activity scores in [0, 1], float (n,).

    Returns:
        float64 (n,) in (0, 1): ``σ(continue_bias + satisfaction_weight · S + activity_weight · (a - 1/2)
        - fatigue · f(t))``.
    """
    logit = (
        cfg.continue_bias
        + cfg.satisfaction_weight * np.asarray(satisfaction)
        + cfg.activity_weight * (np.asarray(activity) - 0.5)
        - cfg.fatigue * fatigue_position(pages, cfg)
    )
    return sigmoid(logit)


def continue_after_page(
    watched: np.ndarray,
    ratings: np.ndarray,
    satisfaction: np.ndarray,
    pages: np.ndarray,
    watches: np.ndarray,
    activity: np.ndarray,
    cfg: SessionConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Session satisfaction after a page and the probability of asking for another one.

    With ``continue_unit="page"``: :func:`update_satisfaction` with :func:`page_satisfaction`, then
    :func:`continue_probability` at ``pages``. With ``"watch"``: the satisfaction is updated per watched item
    in slate order (``s = (rating - 3) / 2``), and the page continues with the product over its watched items
    of :func:`continue_probability` at the item's position in the session (``watches`` + its rank among the
    page's watched items); a page with nothing watched is one decision, after updating the satisfaction with
    ``empty_page_satisfaction`` (hand-set), at position ``max(watches, 1)``. See the module docstring.

    Args:
        watched: bool (n, k).
        ratings: int (n, k), ratings of the watched items (other entries ignored).
        satisfaction: session satisfaction before the page, float (n,).
        pages: pages seen so far including this one (≥ 1), int (n,).
        watches: items watched in the session before this page, int (n,).
        activity: activity scores in [0, 1], float (n,).

    Returns:
        ``(satisfaction, p_continue)``: float64 (n,) each — the session satisfaction after the page and the
        probability of asking for another page, in (0, 1).
    """
    if cfg.continue_unit == "page":
        sat = update_satisfaction(satisfaction, page_satisfaction(watched, ratings, cfg), cfg)
        return sat, continue_probability(sat, pages, activity, cfg)
    # The satisfaction after each slot (a slot left unwatched carries the previous value), then one
    # continue_probability over all slots: the sequential definition with one vector operation per slot.
    m = cfg.satisfaction_memory
    watched = np.asarray(watched, dtype=bool)
    sat = np.asarray(satisfaction, dtype=np.float64)
    item_sat = (np.asarray(ratings, dtype=np.float64) - 3.0) / 2.0
    sat_at = np.empty(watched.shape, dtype=np.float64)
    for j in range(watched.shape[1]):
        sat = np.where(watched[:, j], m * sat + (1.0 - m) * item_sat[:, j], sat)
        sat_at[:, j] = sat
    count = np.cumsum(watched, axis=1)  # watched items up to and including each slot
    position = np.asarray(watches, dtype=np.int64)[:, None] + count
    p_item = continue_probability(sat_at, np.maximum(position, 1), np.asarray(activity)[:, None], cfg)
    p_cont = np.where(watched, p_item, 1.0).prod(axis=1)
    empty = ~watched.any(axis=1)
    if empty.any():  # nothing watched: the position is still the session's watches before the page
        sat = np.where(empty, m * sat + (1.0 - m) * cfg.empty_page_satisfaction, sat)
        p_empty = continue_probability(sat, np.maximum(np.asarray(watches, dtype=np.int64), 1), activity, cfg)
        p_cont = np.where(empty, p_empty, p_cont)
    return sat, p_cont


# ------------------------------------------------------------------------------------------------ reward
def item_rewards(watched: np.ndarray, ratings: np.ndarray, mode: RewardMode, like_threshold: int = 4) -> np.ndarray:
    """Each shown item's part of its page's reward (the page reward, :func:`reward`, is their sum).

    Args:
        watched: bool (n, k).
        ratings: int (n, k), ratings of the watched items (other entries ignored).
        mode: ``"rating"`` (a watched item's rating), ``"likes"`` (1 for a watched item rated at least
            ``like_threshold``) or ``"watches"`` (1 for a watched item).

    Returns:
        float64 (n, k); 0 for items not watched.
    """
    watched = np.asarray(watched, dtype=bool)
    if mode == "rating":
        return np.where(watched, ratings, 0).astype(np.float64)
    if mode == "likes":
        return (watched & (np.asarray(ratings) >= like_threshold)).astype(np.float64)
    if mode == "watches":
        return watched.astype(np.float64)
    raise unknown_choice("reward", str(mode), REWARD_MODES)


def reward(watched: np.ndarray, ratings: np.ndarray, mode: RewardMode, like_threshold: int = 4) -> np.ndarray:
    """Reward of each page: the sum of :func:`item_rewards` over the page (``"rating"``: the watched items'
    ratings; ``"likes"``: watched items rated at least ``like_threshold``; ``"watches"``: items watched).

    Args:
        watched: bool (n, k).
        ratings: int (n, k), ratings of the watched items (other entries ignored).
        mode: ``"rating"``, ``"likes"`` or ``"watches"``.

    Returns:
        float64 (n,).
    """
    return item_rewards(watched, ratings, mode, like_threshold).sum(axis=1)
