"""Fitting the simulated users' session behaviour (:class:`~recsim_personas.envs.session.SessionConfig`) to the
MovieLens timestamps.

A user's ratings are cut into **sessions** (:func:`sessionize`): sorted by time (ties by item id), a new session
starts when the gap to the user's previous rating exceeds ``gap_minutes``. Each user ``u`` has an activity score
``a_u`` in [0, 1] on the simulator's scale (the percentile rank of its train ratings among the sampled users,
:func:`~recsim_personas.personas.traits.compute_traits`); a user outside the sample is put on that scale by its
count of history ratings through the sampled users' empirical CDF (:func:`activity_scale`), so the fit can use
every history user. :func:`fit_sessions` then fits three groups of coefficients, each by maximum likelihood
(``σ(x) = 1 / (1 + exp(-x))``):

a. **Session starts** (``start_min``, ``start_max``). Days are UTC calendar days (``timestamp // 86400``).
   Every day after the user's first session day up to the end of its observation window (``window_end``) is a
   Bernoulli trial, a success when at least one session starts on it:
   ``P(start on day d) = ρ_d · (start_min + (start_max - start_min) · a_u)``, ``ρ_d`` the return propensity of
   (c). ``log L = Σ_trials y log p + (1 - y) log(1 - p)`` is maximised under
   ``0 ≤ start_min ≤ start_max ≤ 1`` (L-BFGS-B on ``start_max`` and ``start_min / start_max`` in [0, 1]).
b. **Continue / exit and satisfaction** (``continue_bias``, ``satisfaction_weight``, ``activity_weight``,
   ``fatigue``, ``fatigue_curve``, ``satisfaction_memory``; ``continue_unit`` becomes ``"watch"``). After its
   ``t``-th rated item a session goes on (``y = 1``) or ends (``y = 0``), with
   ``P(y = 1) = σ(continue_bias + satisfaction_weight · S_t + activity_weight · (a_u - 1/2) - fatigue · f(t))``,
   ``S_t = m · S_{t-1} + (1 - m) · (r_t - 3) / 2``, ``S_0 = 0``, ``m`` = ``satisfaction_memory`` and
   ``f(t) = t - 1`` (``"linear"``) or ``ln t`` (``"log"``). Only the users' *return* sessions are used by
   default (``returns_only``): each user's first session is its sign-up sitting. The logistic log-likelihood
   is maximised with ``satisfaction_weight ≥ 0`` and, on the linear curve, ``fatigue ≥ 0`` (on the log curve
   the fatigue may be negative: the longer a sitting has gone on, the likelier it goes on, the heavy tail of
   rating sessions) (L-BFGS-B with bounds, analytic gradient) for each ``m`` of
   :data:`MEMORY_GRID` and each ``f``; the pair with the highest likelihood wins (near-ties, :data:`TIE`, go to
   the earlier candidate: smaller ``m``, ``"linear"`` before ``"log"``). The last item of a user's last
   session is *censored* (no exit observed) when its window ends within ``gap_minutes`` of it — always so for
   the sampled users, whose train part ends where their test part begins.
c. **Churn** (``churn_patience``, ``churn_decay``). A session is unsatisfied when its final ``S`` (with the
   fitted ``m``) is below ``unsatisfied_below``; ``k_d`` = unsatisfied sessions in a row among the sessions
   started before day ``d``; ``ρ_d = max(churn_floor, churn_decay ** (k_d - churn_patience + 1))`` once
   ``k_d ≥ churn_patience``, else 1. ``(start_min, start_max, churn_decay)`` are fitted jointly on the daily
   trials of (a) for each patience of :data:`PATIENCE_GRID` (``churn_floor`` hand-set). If the best of them does
   not beat no churn (``churn_decay = 1``) by a likelihood-ratio statistic of at least
   :data:`CHURN_LR_THRESHOLD` (χ²₁ at 5%), the data do not identify churn: ``churn_patience`` and
   ``churn_decay`` stay hand-set (``handset`` says why) and (a) is refitted under the hand-set churn, the rule
   the simulator will apply.

A group the data cannot identify stays hand-set, with the reason in :attr:`SessionFit.handset`: (a) and (c)
with fewer than :data:`EVENTS_PER_COEFFICIENT` session starts per coefficient (with none at all, the MLE — a
start rate of 0 — would never start a session), (b) with fewer than that many observed exits or continues per
coefficient.

Each group's ``loglik_default`` is the same likelihood with that group's fields at the ``base`` (hand-set)
values and the other groups as fitted. Every other field (watching, rating, ``empty_page_satisfaction``,
``max_pages``, ``page_minutes``, ``unsatisfied_below``, ``churn_floor``) is copied from ``base`` and listed in
:attr:`SessionFit.handset` with the reason the logs cannot fit it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from recsim_personas._io import write_json
from recsim_personas.envs.session import FATIGUE_CURVES, SessionConfig, fatigue_position
from recsim_personas.errors import ArtifactError, ConfigError, DataFormatError, config_from_dict

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
MEMORY_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98)
"""The ``satisfaction_memory`` values compared by likelihood."""
TIE = 1e-6
"""Relative log-likelihood difference under which a later candidate does not replace an earlier one (so with
``fatigue`` at its bound 0, where both curves fit alike, ``"linear"`` is kept)."""
PATIENCE_GRID: tuple[int, ...] = (1, 2, 3)
"""The ``churn_patience`` values compared by likelihood."""
CHURN_LR_THRESHOLD = 3.84
"""Likelihood-ratio statistic (χ²₁ at 5%) churn must reach over no churn to count as identified."""
EVENTS_PER_COEFFICIENT = 10
"""The rarer outcome of a fit (starts, or exits/continues) must occur this often per fitted coefficient."""
QUANTILES: tuple[int, ...] = (10, 25, 50, 75, 90)
FORMAT = "recsim-personas/session-fit"
FORMAT_VERSION = 1
FIX = "fit it again with `fit_sessions(...)` (or `fit_split_sessions(split)`) and `.save(path)`"

STARTS_FIELDS = ("start_min", "start_max")
CONTINUE_FIELDS = (
    "continue_unit",
    "satisfaction_memory",
    "continue_bias",
    "satisfaction_weight",
    "activity_weight",
    "fatigue",
    "fatigue_curve",
)
CHURN_FIELDS = ("churn_patience", "churn_decay")
HANDSET_REASONS: dict[str, str] = {
    "conformity_weight": "watch model: the logs record ratings, not what was shown and not watched",
    "novelty_bonus": "watch model: the logs record ratings, not what was shown and not watched",
    "taste_penalty": "watch model: the logs record ratings, not what was shown and not watched",
    "watch_threshold": "watch model: the logs record ratings, not what was shown and not watched",
    "watch_slope": "watch model: the logs record ratings, not what was shown and not watched",
    "rating_mode": "the rater's business, not the session's",
    "like_threshold": "a reporting convention",
    "empty_page_satisfaction": "the logs have no empty pages",
    "max_pages": "the logs have no pages",
    "page_minutes": "the logs have no pages",
    "unsatisfied_below": "defines an unsatisfied session; kept as the convention churn is fitted under",
    "churn_floor": "kept as the floor churn is fitted under",
}


# ---------------------------------------------------------------------------------------------- sessions
def _check_gap(gap_minutes: float) -> None:
    if isinstance(gap_minutes, bool) or not isinstance(gap_minutes, int | float) or not gap_minutes > 0:
        raise ConfigError(f"gap_minutes must be a number > 0, got {gap_minutes!r}.")
    if not math.isfinite(gap_minutes):
        raise ConfigError(f"gap_minutes must be finite, got {gap_minutes!r}.")


def _check_ratings(frame: Any, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataFormatError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}.")
    for column in columns:
        if column not in frame.columns:
            raise DataFormatError(
                f"{what} has no column {column!r} (columns: {', '.join(map(str, frame.columns))}). Fix: pass"
                f" ratings with the columns {', '.join(columns)} (e.g. split.history())."
            )
    if frame.empty:
        raise DataFormatError(f"{what} holds no rating. Fix: pass a non-empty frame.")
    for column in columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise DataFormatError(f"{what}[{column!r}] must be numeric, got dtype {values.dtype}.")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = float(values.iloc[row])
            raise DataFormatError(f"{what}[{column!r}] holds {value!r} at row {row}; expected finite numbers.")
    if "rating" in columns:
        r = frame["rating"].to_numpy(dtype=np.float64)
        bad = (r < 1) | (r > 5)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataFormatError(f"{what}['rating'] holds {float(r[row])!r} at row {row}; expected ratings in 1..5.")


def sessionize(ratings: pd.DataFrame, gap_minutes: float = 30.0) -> pd.DataFrame:
    """Cut each user's ratings into sessions.

    A user's ratings are sorted by ``timestamp`` (unix seconds), ties by ``item_id``; a new session starts
    when the gap to the user's previous rating is *more* than ``gap_minutes`` (a gap of exactly
    ``gap_minutes`` does not split).

    Args:
        ratings: a frame with at least ``user_id``, ``item_id`` and ``timestamp`` (numeric); other columns
            are kept.
        gap_minutes: the longest pause within a session, > 0.

    Returns:
        one row per rating, sorted by user, time and item, with a fresh ``RangeIndex`` and three added int64
        columns: ``session`` (global id, 0.., increasing with user then time), ``position`` (1-based rank
        within the session) and ``session_size``.

    Raises:
        DataFormatError: a column is missing, not numeric or holds NaN, or the frame is empty.
        ConfigError: ``gap_minutes`` is not a number > 0.
    """
    _check_gap(gap_minutes)
    _check_ratings(ratings, ("user_id", "item_id", "timestamp"), "ratings")
    out = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
    users = out["user_id"].to_numpy()
    ts = out["timestamp"].to_numpy(dtype=np.float64)
    n = len(out)
    new = np.ones(n, dtype=bool)
    new[1:] = (users[1:] != users[:-1]) | (np.diff(ts) > gap_minutes * 60.0)
    session = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, n))
    out["session"] = session.astype(np.int64)
    out["position"] = (np.arange(n) - starts[session] + 1).astype(np.int64)
    out["session_size"] = sizes[session].astype(np.int64)
    return out


def session_table(rated: pd.DataFrame) -> pd.DataFrame:
    """One row per session of :func:`sessionize`'s output: ``user_id``, ``start``, ``end`` (timestamps), ``size``."""
    g = rated.groupby("session", sort=True)
    return pd.DataFrame(
        {
            "user_id": g["user_id"].first(),
            "start": g["timestamp"].min().astype(np.int64),
            "end": g["timestamp"].max().astype(np.int64),
            "size": g.size().astype(np.int64),
        }
    )


# ------------------------------------------------------------------------------------------------- stats
@dataclass(frozen=True)
class Summary:
    """Mean and quantiles (10/25/50/75/90) of a sample; NaN for an empty one."""

    mean: float
    q10: float
    q25: float
    q50: float
    q75: float
    q90: float

    @classmethod
    def of(cls, values: np.ndarray) -> Summary:
        """Summary of a float array of shape (n,)."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return cls(*([math.nan] * 6))
        q = np.percentile(v, QUANTILES)
        return cls(float(v.mean()), *(float(x) for x in q))


@dataclass(frozen=True)
class SessionStats:
    """The real session behaviour the simulator is compared with.

    Attributes:
        items_per_session: ratings per session.
        sessions_per_user: sessions per user over its observation window.
        return_gap_days: days from the end of a session to the start of the user's next one.
        one_session_share: share of users with exactly one session.
        daily_start_rate: share of the daily trials of the start fit (days after the first session day) on
            which a session started.
    """

    items_per_session: Summary
    sessions_per_user: Summary
    return_gap_days: Summary
    one_session_share: float
    daily_start_rate: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionStats:
        d = dict(d)
        for name in ("items_per_session", "sessions_per_user", "return_gap_days"):
            if name in d:
                d[name] = config_from_dict(Summary, d[name], f"SessionStats.{name} field")
        return config_from_dict(cls, d, "SessionStats field")


def session_stats(rated: pd.DataFrame, daily_start_rate: float = math.nan) -> SessionStats:
    """:class:`SessionStats` of :func:`sessionize`'s output (``daily_start_rate`` is passed through)."""
    table = session_table(rated)
    per_user = table.groupby("user_id").size().to_numpy()
    same_user = table["user_id"].to_numpy()[1:] == table["user_id"].to_numpy()[:-1]
    gaps = (table["start"].to_numpy()[1:] - table["end"].to_numpy()[:-1])[same_user] / SECONDS_PER_DAY
    return SessionStats(
        items_per_session=Summary.of(table["size"].to_numpy()),
        sessions_per_user=Summary.of(per_user),
        return_gap_days=Summary.of(gaps),
        one_session_share=float(np.mean(per_user == 1)),
        daily_start_rate=float(daily_start_rate),
    )


# ---------------------------------------------------------------------------------------------- the fit
@dataclass(frozen=True)
class GroupFit:
    """How one group of coefficients was fitted.

    Attributes:
        fields: the :class:`SessionConfig` fields of the group.
        method: how, in a few words.
        loglik_fitted: the group's log-likelihood at the fitted values.
        loglik_default: the same with the group's fields at the hand-set (``base``) values.
        n_obs: observations of the likelihood (daily trials or continue/exit decisions).
        alternatives: log-likelihood of each candidate compared (grid points, curves, no churn).
        notes: what else is worth knowing (coefficients at a bound, ...).
    """

    fields: tuple[str, ...]
    method: str
    loglik_fitted: float
    loglik_default: float
    n_obs: int
    alternatives: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fields": list(self.fields), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupFit:
        d = dict(d)
        for name in ("fields", "notes"):
            if name in d:
                d[name] = tuple(d[name])
        return config_from_dict(cls, d, "GroupFit field")


@dataclass(frozen=True)
class SessionFit:
    """A :class:`SessionConfig` fitted to the logs, with what was fitted, how, and how well.

    Attributes:
        config: the fitted config (hand-set fields copied from ``base``).
        fitted: names of the config fields that were fitted (the union of the groups' ``fields``).
        handset: every other config field → why it is hand-set.
        groups: ``"starts"``, ``"continue"`` and ``"churn"`` → :class:`GroupFit`, each only when the data
            identify it (else its fields are in ``handset``, with the reason).
        gap_minutes: the session gap used.
        n_users, n_sessions, n_ratings: the data fitted on.
        n_censored: sessions whose exit is not observed (the window ends within ``gap_minutes`` of them).
        real: the real behaviour statistics the simulator is compared with.
        data_hash: sha256 of the ratings fitted on (``user_id``, ``item_id``, ``rating``, ``timestamp``, sorted).
    """

    config: SessionConfig
    fitted: tuple[str, ...]
    handset: dict[str, str]
    groups: dict[str, GroupFit]
    gap_minutes: float
    n_users: int
    n_sessions: int
    n_ratings: int
    n_censored: int
    real: SessionStats
    data_hash: str

    def __post_init__(self) -> None:
        if not isinstance(self.config, SessionConfig):
            raise ConfigError(f"SessionFit.config must be a SessionConfig, got {type(self.config).__name__}.")
        _check_gap(self.gap_minutes)
        names = {f.name for f in dataclasses.fields(SessionConfig)}
        unknown = (set(self.fitted) | set(self.handset)) - names
        if unknown:
            raise ConfigError(f"SessionFit names fields SessionConfig does not have: {sorted(unknown)!r}.")
        both = set(self.fitted) & set(self.handset)
        if both:
            raise ConfigError(f"SessionFit lists {sorted(both)!r} as both fitted and hand-set.")
        missing = names - set(self.fitted) - set(self.handset)
        if missing:
            raise ConfigError(f"SessionFit lists {sorted(missing)!r} as neither fitted nor hand-set.")
        grouped = [f for g in self.groups.values() for f in g.fields]
        if sorted(grouped) != sorted(self.fitted):
            raise ConfigError(
                f"SessionFit.fitted {sorted(self.fitted)!r} is not the union of its groups' fields {sorted(grouped)!r}."
            )

    @property
    def method(self) -> dict[str, str]:
        """Group name → how it was fitted."""
        return {name: g.method for name, g in self.groups.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "fitted": list(self.fitted),
            "handset": dict(self.handset),
            "groups": {name: g.to_dict() for name, g in self.groups.items()},
            "gap_minutes": self.gap_minutes,
            "n_users": self.n_users,
            "n_sessions": self.n_sessions,
            "n_ratings": self.n_ratings,
            "n_censored": self.n_censored,
            "real": self.real.to_dict(),
            "data_hash": self.data_hash,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionFit:
        """Inverse of :meth:`to_dict` (``format``/``format_version`` checked; ``versions`` ignored).

        Raises:
            ConfigError: a key is unknown or missing, or a value is invalid.
        """
        d = dict(d)
        fmt, version = d.pop("format", FORMAT), d.pop("format_version", FORMAT_VERSION)
        d.pop("versions", None)
        if fmt != FORMAT or version != FORMAT_VERSION:
            raise ConfigError(
                f"not a session fit: format {fmt!r} version {version!r}, expected {FORMAT!r} version {FORMAT_VERSION}."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(known - set(d))
        if missing:
            raise ConfigError(f"session fit has no {missing[0]!r} entry.")
        d["config"] = SessionConfig.from_dict(d["config"])
        d["fitted"] = tuple(d["fitted"])
        d["handset"] = dict(d["handset"])
        d["groups"] = {name: GroupFit.from_dict(g) for name, g in dict(d["groups"]).items()}
        d["real"] = SessionStats.from_dict(d["real"])
        return config_from_dict(cls, d, "SessionFit field")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fit as JSON to ``path`` atomically (with the library versions); return the path."""
        from recsim_personas.artifacts import library_versions

        path = Path(path)
        write_json(path, {**self.to_dict(), "versions": library_versions("pandas", "scipy")})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SessionFit:
        """Read a fit written by :meth:`save`.

        Raises:
            ArtifactError: the file is missing, unreadable, not JSON, not a session fit, or damaged (names the
                file and the fix).
        """
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{str(path)!r} is not a session fit (no such file). Fix: {FIX}.")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
            raise ArtifactError(f"{path}: the session fit is damaged ({reason}). Fix: {FIX}.") from exc
        except OSError as exc:
            raise ArtifactError(
                f"{path}: cannot read the session fit ({exc.strerror}). Fix: check its permissions."
            ) from exc
        if not isinstance(d, dict):
            raise ArtifactError(
                f"{path}: the session fit is damaged (a JSON {type(d).__name__}, not an object). Fix: {FIX}."
            )
        try:
            return cls.from_dict(d)
        except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ArtifactError(f"{path}: the session fit is damaged ({exc}). Fix: {FIX}.") from exc


def activity_scale(reference_counts: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The simulator's activity scale as a function of a user's rating count.

    The simulator scores a sampled user by the percentile rank (average ranks for ties) of its train count
    among the sampled users. The returned function maps any count ``x`` to
    ``(#{ref < x} + #{ref = x} / 2 + 1/2) / n`` clipped to [0, 1], which is exactly that rank for a count of
    the reference and the mid-point of the empirical CDF otherwise.

    Args:
        reference_counts: the sampled users' train counts, numbers ≥ 0 of shape (n,), n ≥ 1.

    Returns:
        ``scale(counts)``: float64 array of the shape of ``counts``, in [0, 1].
    """
    ref = np.sort(np.asarray(reference_counts, dtype=np.float64).reshape(-1))
    if ref.size == 0 or not np.all(np.isfinite(ref)) or (ref < 0).any():
        raise ConfigError(f"reference_counts must be a non-empty array of counts >= 0, got {ref[:5]!r}.")

    def scale(counts: np.ndarray) -> np.ndarray:
        c = np.asarray(counts, dtype=np.float64)
        less = np.searchsorted(ref, c, side="left")
        equal = np.searchsorted(ref, c, side="right") - less
        return np.clip((less + 0.5 * equal + 0.5) / ref.size, 0.0, 1.0)

    return scale


def _data_hash(history: pd.DataFrame) -> str:
    cols = ["user_id", "item_id", "rating", "timestamp"]
    frame = history[cols].astype(np.int64).sort_values(cols, kind="stable").reset_index(drop=True)
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def _user_activity(activity: Any, user_ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if callable(activity):
        scores = np.asarray(activity(counts), dtype=np.float64)
        if scores.shape != counts.shape:
            raise ConfigError(f"activity(counts) must return an array of shape {counts.shape}, got {scores.shape}.")
    elif isinstance(activity, Mapping | pd.Series):
        series = pd.Series(activity, dtype=np.float64) if isinstance(activity, Mapping) else activity.astype(float)
        absent = ~np.isin(user_ids, series.index.to_numpy())
        if absent.any():
            raise ConfigError(
                f"activity has no score for user {user_ids[absent][0].item()!r} ({int(absent.sum())} users"
                " missing). Fix: give every history user a score, or pass a function of the rating count"
                " (activity_scale(...))."
            )
        scores = series.reindex(user_ids).to_numpy(dtype=np.float64)
    else:
        raise ConfigError(
            f"activity must be a function of rating counts or a user_id → score mapping, got {type(activity).__name__}."
        )
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        raise ConfigError(
            f"activity scores must be in [0, 1]; user {user_ids[bad][0].item()!r} has {scores[bad][0].item()!r}."
        )
    return scores


def _window_ends(window_end: Any, user_ids: np.ndarray, last: np.ndarray, default: int) -> np.ndarray:
    if window_end is None:
        ends = np.full(user_ids.shape, default, dtype=np.int64)
    elif isinstance(window_end, Mapping | pd.Series):
        series = pd.Series(window_end) if isinstance(window_end, Mapping) else window_end
        ends = series.reindex(user_ids).fillna(default).to_numpy(dtype=np.float64).astype(np.int64)
    elif isinstance(window_end, int | np.integer) and not isinstance(window_end, bool):
        ends = np.full(user_ids.shape, int(window_end), dtype=np.int64)
    else:
        raise ConfigError(
            f"window_end must be a timestamp, a user_id → timestamp mapping or None, got {type(window_end).__name__}."
        )
    early = ends < last
    if early.any():
        u = int(np.flatnonzero(early)[0])
        raise ConfigError(
            f"window_end of user {user_ids[u].item()!r} ({int(ends[u])}) is before its last rating"
            f" ({int(last[u])}). Fix: a window must end at or after the user's last rating."
        )
    return ends


def _session_ema(item_sat: np.ndarray, starts: np.ndarray, sizes: np.ndarray, memory: float) -> np.ndarray:
    """``S_t`` after every rated item (rows grouped by session in position order), float64 (n_ratings,)."""
    out = np.empty_like(item_sat)
    order = np.argsort(-sizes, kind="stable")
    s_starts, s_sizes = starts[order], sizes[order]
    prev = np.zeros(order.size, dtype=np.float64)
    alive = order.size
    for p in range(int(s_sizes[0]) if s_sizes.size else 0):
        while alive and s_sizes[alive - 1] <= p:
            alive -= 1
        rows = s_starts[:alive] + p
        prev[:alive] = memory * prev[:alive] + (1.0 - memory) * item_sat[rows]
        out[rows] = prev[:alive]
    return out


def _logistic_nll(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = x @ theta
    nll = float(np.sum(np.logaddexp(0.0, z) - y * z))
    grad = x.T @ (1.0 / (1.0 + np.exp(-z)) - y)
    return nll, grad


def _continue_design(sat: np.ndarray, act: np.ndarray, position: np.ndarray, curve: str) -> np.ndarray:
    """Columns [1, S, a - 1/2, -f(t)] for θ = (continue_bias, satisfaction_weight, activity_weight, fatigue)."""
    f = fatigue_position(position, SessionConfig(fatigue_curve=curve))  # the simulator's own f
    return np.column_stack([np.ones_like(sat), sat, act - 0.5, -f])


def _fit_logistic(x: np.ndarray, y: np.ndarray, fatigue_bound: float | None) -> tuple[np.ndarray, float]:
    """θ maximising the logistic likelihood with ``satisfaction_weight >= 0`` and ``fatigue >= fatigue_bound``
    (unbounded when None); returns ``(θ, loglik)``."""
    bounds = [(None, None), (0.0, None), (None, None), (fatigue_bound, None)]
    theta0 = np.array([math.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3)), 0.0, 0.0, 0.0])
    res = minimize(_logistic_nll, theta0, args=(x, y), jac=True, method="L-BFGS-B", bounds=bounds)
    return res.x, -float(res.fun)


def _starts_loglik(params: tuple[float, float, float, int, float], cells: dict[str, np.ndarray]) -> float:
    s_min, s_max, decay, patience, floor = params
    over = np.maximum(0, cells["k"] - patience + 1).astype(np.float64)
    rho = np.maximum(floor, decay**over)
    p = np.clip(rho * (s_min + (s_max - s_min) * cells["a"]), 1e-12, 1.0 - 1e-12)
    return float(np.sum(cells["s"] * np.log(p) + (cells["n"] - cells["s"]) * np.log1p(-p)))


def _fit_starts(
    cells: dict[str, np.ndarray], patience: int, floor: float, decay: float | None
) -> tuple[float, float, float, float]:
    """Maximise over (start_min, start_max) — and ``churn_decay`` when ``decay`` is None. Returns
    ``(start_min, start_max, decay, loglik)``."""
    rate = float(cells["s"].sum() / max(cells["n"].sum(), 1))

    def nll(v: np.ndarray) -> float:
        s_max, ratio = v[0], v[1]
        d = v[2] if decay is None else decay
        return -_starts_loglik((ratio * s_max, s_max, d, patience, floor), cells)

    best = None
    for start_decay in (0.5, 0.9) if decay is None else (None,):
        x0 = [min(1.0, 2 * rate + 1e-3), 0.5] + ([start_decay] if decay is None else [])
        bounds = [(0.0, 1.0), (0.0, 1.0)] + ([(1e-6, 1.0)] if decay is None else [])
        res = minimize(nll, np.array(x0), method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    s_max, ratio = float(best.x[0]), float(best.x[1])
    d = float(best.x[2]) if decay is None else float(decay)
    return ratio * s_max, s_max, d, -float(best.fun)


def _daily_cells(
    session_start: np.ndarray, unsatisfied: np.ndarray, sess_user: np.ndarray, ends: np.ndarray, act: np.ndarray
) -> dict[str, np.ndarray]:
    """Daily start trials aggregated into runs of days of one user at one streak.

    Args:
        session_start: first timestamp of each session, int64 (n_sessions,), sessions sorted by user and time.
        unsatisfied: the session ended unsatisfied, bool (n_sessions,).
        sess_user: user index of each session, int64 (n_sessions,).
        ends: window end of each user, int64 (n_users,).
        act: activity score of each user, float64 (n_users,).

    Returns:
        ``a`` (activity), ``k`` (unsatisfied streak), ``n`` (trials), ``s`` (successes: 0 or 1, the run's last
        day), float64 except ``k`` int64, each (n_runs,).
    """
    day = session_start // SECONDS_PER_DAY
    a_out, k_out, n_out, s_out = [], [], [], []
    bounds = np.flatnonzero(np.r_[True, sess_user[1:] != sess_user[:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        u = int(sess_user[lo])
        streak, days, streaks = 0, [], []
        for i in range(lo, hi):
            streak = streak + 1 if unsatisfied[i] else 0
            if days and days[-1] == day[i]:
                streaks[-1] = streak
            else:
                days.append(int(day[i]))
                streaks.append(streak)
        end_day = int(ends[u] // SECONDS_PER_DAY)
        for j, (d, k) in enumerate(zip(days, streaks, strict=True)):
            nxt = days[j + 1] if j + 1 < len(days) else None
            n = (nxt - d) if nxt is not None else (end_day - d)
            if n > 0:
                a_out.append(act[u])
                k_out.append(k)
                n_out.append(n)
                s_out.append(1 if nxt is not None else 0)
    return {
        "a": np.asarray(a_out, dtype=np.float64),
        "k": np.asarray(k_out, dtype=np.int64),
        "n": np.asarray(n_out, dtype=np.float64),
        "s": np.asarray(s_out, dtype=np.float64),
    }


def fit_sessions(
    history: pd.DataFrame,
    activity: Callable[[np.ndarray], np.ndarray] | Mapping[Any, float] | pd.Series,
    *,
    window_end: int | Mapping[Any, int] | pd.Series | None = None,
    gap_minutes: float = 30.0,
    base: SessionConfig | None = None,
    memory_grid: Sequence[float] = MEMORY_GRID,
    patience_grid: Sequence[int] = PATIENCE_GRID,
    returns_only: bool = True,
) -> SessionFit:
    """Fit the session coefficients of :class:`SessionConfig` to rating logs (see the module docstring).

    Args:
        history: ratings to fit on (``user_id``, ``item_id``, ``rating`` in 1..5, ``timestamp`` in unix
            seconds), e.g. ``split.history()`` — never the test part.
        activity: each user's activity score in [0, 1]: a function of the users' history rating counts
            (int64 (n_users,) → float (n_users,), e.g. :func:`activity_scale` of the sampled users' train
            counts), or a ``user_id → score`` mapping / Series covering every user.
        window_end: where each user's observation window ends (unix seconds): one timestamp for all, a
            ``user_id → timestamp`` mapping / Series (users absent from it use the default), or None: the
            last timestamp of ``history``.
        gap_minutes: the session gap of :func:`sessionize`.
        base: the hand-set values (default :class:`SessionConfig`); fitted fields replace its values.
        memory_grid: ``satisfaction_memory`` values compared, each in [0, 1).
        patience_grid: ``churn_patience`` values compared, each an integer >= 1.
        returns_only: fit the continue/exit decisions (b) on the users' *return* sessions only, leaving out each
            user's first session. A first session on MovieLens is the sign-up: a user rates the movies it
            remembers, dozens to hundreds in one sitting (on ML-100K return sessions hold 8 ratings at the
            median of the sampled users' test part, sign-up sessions over 40). A simulation starts after the
            users' train histories, so every session it plays is a return visit.

    Returns:
        the :class:`SessionFit`.

    Raises:
        DataFormatError: ``history`` lacks a column or holds a bad value.
        ConfigError: a bad argument (activity scores outside [0, 1], a window ending before a user's last
            rating, ``gap_minutes <= 0``, a grid value out of range).
    """
    base = base or SessionConfig()
    if not isinstance(base, SessionConfig):
        raise ConfigError(f"base must be a SessionConfig, got {type(base).__name__}.")
    memory_grid = tuple(float(m) for m in memory_grid)
    if not memory_grid or any(not 0.0 <= m < 1.0 for m in memory_grid):
        raise ConfigError(f"memory_grid must hold values in [0, 1), got {memory_grid!r}.")
    patience_grid = tuple(patience_grid)
    if not patience_grid or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patience_grid):
        raise ConfigError(f"patience_grid must hold integers >= 1, got {patience_grid!r}.")
    _check_gap(gap_minutes)
    _check_ratings(history, ("user_id", "item_id", "rating", "timestamp"), "history")

    data = _prepare(history, activity, window_end, gap_minutes)
    cont, cont_values, cont_handset = _fit_continue(data, base, memory_grid, returns_only)
    memory = cont_values.get("satisfaction_memory", base.satisfaction_memory)
    starts, churn, start_values, start_handset, daily_rate = _fit_starts_and_churn(data, base, memory, patience_grid)
    candidates = {"starts": starts, "continue": cont, "churn": churn}
    groups = {name: g for name, g in candidates.items() if g is not None}
    config = dataclasses.replace(base, **cont_values, **start_values)
    handset = dict(HANDSET_REASONS) | cont_handset | start_handset
    fit = SessionFit(
        config=config,
        fitted=tuple(f for g in groups.values() for f in g.fields),
        handset=handset,
        groups=groups,
        gap_minutes=float(gap_minutes),
        n_users=int(data.user_ids.size),
        n_sessions=int(data.sizes.size),
        n_ratings=len(data.rated),
        n_censored=int(data.censored.sum()),
        real=session_stats(data.rated, daily_start_rate=daily_rate),
        data_hash=_data_hash(history),
    )
    for name, g in groups.items():
        logger.info(
            "session fit %s: loglik %.1f (hand-set %.1f) on %d obs", name, g.loglik_fitted, g.loglik_default, g.n_obs
        )
    return fit


@dataclass(frozen=True, eq=False)
class _Sessions:
    """The logs cut into sessions, as arrays (rows sorted by user, time, item; sessions by user, time)."""

    rated: pd.DataFrame  # sessionize's output
    user_ids: np.ndarray  # int64 (n_users,), ascending
    act: np.ndarray  # activity scores, float64 (n_users,)
    ends: np.ndarray  # window ends, int64 (n_users,)
    row_act: np.ndarray  # activity of each rating's user, float64 (n_ratings,)
    item_sat: np.ndarray  # (rating - 3) / 2, float64 (n_ratings,)
    position: np.ndarray  # 1-based position in the session, float64 (n_ratings,)
    y: np.ndarray  # 1 = another rating follows in the session, float64 (n_ratings,)
    observed: np.ndarray  # the continue/exit decision is observed (not a censored exit), bool (n_ratings,)
    first: np.ndarray  # the rating is in its user's first session, bool (n_ratings,)
    starts: np.ndarray  # first row of each session, int64 (n_sessions,)
    sizes: np.ndarray  # ratings per session, int64 (n_sessions,)
    session_start: np.ndarray  # first timestamp of each session, int64 (n_sessions,)
    session_user: np.ndarray  # user index of each session, int64 (n_sessions,)
    censored: np.ndarray  # the session's exit is not observed, bool (n_sessions,)


def _prepare(history: pd.DataFrame, activity: Any, window_end: Any, gap_minutes: float) -> _Sessions:
    rated = sessionize(history, gap_minutes)
    table = session_table(rated)
    user_ids, user_of_row = np.unique(rated["user_id"].to_numpy(), return_inverse=True)
    act = _user_activity(activity, user_ids, np.bincount(user_of_row).astype(np.int64))
    ts = rated["timestamp"].to_numpy(dtype=np.int64)
    last = np.zeros(user_ids.size, dtype=np.int64)
    np.maximum.at(last, user_of_row, ts)
    ends = _window_ends(window_end, user_ids, last, int(ts.max()))
    session_user = np.searchsorted(user_ids, table["user_id"].to_numpy())
    is_last_session = np.r_[session_user[1:] != session_user[:-1], True]
    censored = is_last_session & (ends[session_user] - table["end"].to_numpy() <= gap_minutes * 60.0)
    position = rated["position"].to_numpy().astype(np.float64)
    y = (position < rated["session_size"].to_numpy()).astype(np.float64)
    return _Sessions(
        rated=rated,
        user_ids=user_ids,
        act=act,
        ends=ends,
        row_act=act[user_of_row],
        item_sat=(rated["rating"].to_numpy(dtype=np.float64) - 3.0) / 2.0,
        position=position,
        y=y,
        observed=~(censored[rated["session"].to_numpy()] & (y == 0)),
        first=np.r_[True, session_user[1:] != session_user[:-1]][rated["session"].to_numpy()],
        starts=np.flatnonzero(position == 1),
        sizes=table["size"].to_numpy(),
        session_start=table["start"].to_numpy(),
        session_user=session_user,
        censored=censored,
    )


def _fit_continue(
    data: _Sessions, base: SessionConfig, memory_grid: tuple[float, ...], returns_only: bool = True
) -> tuple[GroupFit | None, dict[str, Any], dict[str, str]]:
    """(b): the logistic continue/exit model on every observed decision (of return sessions only, with
    ``returns_only``), for each memory and curve.

    Returns:
        the group (None when the data hold no exit or no continue decision), the fitted config values, and
        the fields left hand-set with the reason.
    """
    keep = data.observed & ~data.first if returns_only else data.observed
    y = data.y[keep]
    n_exit, n_cont = int((y == 0).sum()), int((y == 1).sum())
    needed = 4 * EVENTS_PER_COEFFICIENT
    if min(n_exit, n_cont) < needed:
        reason = (
            f"not identified: the logs hold {n_exit} observed exits and {n_cont} continues, {needed} of each are"
            " needed for 4 coefficients; the continue/exit decision stays hand-set per page"
        )
        return None, {}, dict.fromkeys(CONTINUE_FIELDS, reason)

    def design(memory: float, curve: str) -> np.ndarray:
        sat = _session_ema(data.item_sat, data.starts, data.sizes, memory)
        return _continue_design(sat[keep], data.row_act[keep], data.position[keep], curve)

    candidates: dict[str, float] = {}
    best: tuple[float, float, str, np.ndarray] | None = None
    for memory in memory_grid:
        for curve in FATIGUE_CURVES:
            # on the log curve the exit hazard may fall with the position (fatigue < 0: a sitting that has gone on
            # long is likelier to go on, as the heavy tail of rating sessions has it); on the linear one it may not
            theta, ll = _fit_logistic(design(memory, curve), y, fatigue_bound=None if curve == "log" else 0.0)
            candidates[f"memory={memory:g},curve={curve}"] = ll
            if best is None or ll > best[0] + TIE * abs(best[0]):
                best = (ll, memory, curve, theta)
    assert best is not None
    ll, memory, curve, theta = best
    theta_default = np.array([base.continue_bias, base.satisfaction_weight, base.activity_weight, base.fatigue])
    ll_default = -_logistic_nll(theta_default, design(base.satisfaction_memory, base.fatigue_curve), y)[0]
    notes = []
    if theta[1] <= 1e-8:
        notes.append("satisfaction_weight at its bound 0")
    if theta[3] <= 1e-8 and curve != "log":
        free = {c: _fit_logistic(design(memory, c), y, fatigue_bound=None) for c in FATIGUE_CURVES}
        c = max(free, key=lambda k: free[k][1])
        notes.append(
            f"fatigue at its bound 0; unconstrained, fatigue = {free[c][0][3]:.3g} on the {c} curve (loglik"
            f" {free[c][1]:.1f}): the exit hazard falls with the position, which SessionConfig cannot express"
        )
    if np.abs(theta).max() > 10:
        notes.append("a coefficient beyond ±10: the decisions are nearly separable, the fit is degenerate")
    notes.append(f"{int(data.censored.sum())} sessions censored (their window ends within gap_minutes of them)")
    group = GroupFit(
        fields=CONTINUE_FIELDS,
        method=(
            "maximum likelihood, logistic continue/exit after each rated item (L-BFGS-B, satisfaction_weight >= 0,"
            " fatigue >= 0 on the linear curve, free on the log curve); satisfaction_memory and fatigue_curve chosen"
            " on a grid by likelihood"
        ),
        loglik_fitted=ll,
        loglik_default=ll_default,
        n_obs=int(keep.sum()),
        alternatives=candidates,
        notes=tuple(notes),
    )
    values = {
        "continue_unit": "watch",
        "satisfaction_memory": float(memory),
        "continue_bias": float(theta[0]),
        "satisfaction_weight": float(max(theta[1], 0.0)),
        "activity_weight": float(theta[2]),
        "fatigue": float(theta[3] if curve == "log" else max(theta[3], 0.0)),
        "fatigue_curve": curve,
    }
    return group, values, {}


def _fit_starts_and_churn(
    data: _Sessions, base: SessionConfig, memory: float, patience_grid: tuple[int, ...]
) -> tuple[GroupFit | None, GroupFit | None, dict[str, Any], dict[str, str], float]:
    """(a) and (c): the daily start trials, with churn when the data identify it.

    Returns:
        the starts group and the churn group (None when left hand-set), the fitted config values, the fields
        left hand-set with the reason, and the share of daily trials with a session start.
    """
    final_sat = _session_ema(data.item_sat, data.starts, data.sizes, memory)[data.starts + data.sizes - 1]
    unsatisfied = final_sat < base.unsatisfied_below
    cells = _daily_cells(data.session_start, unsatisfied, data.session_user, data.ends, data.act)
    n_obs, n_success = int(cells["n"].sum()), int(cells["s"].sum())
    daily_rate = n_success / n_obs if n_obs else math.nan
    needed = 2 * EVENTS_PER_COEFFICIENT
    if min(n_success, n_obs - n_success) < needed:
        reason = (
            f"not identified: {n_success} session starts in {n_obs} daily trials after the users' first session"
            f" days, {needed} starts (and non-starts) are needed for 2 coefficients"
        )
        return None, None, {}, dict.fromkeys(STARTS_FIELDS + CHURN_FIELDS, reason), daily_rate
    floor = base.churn_floor
    s_min0, s_max0, _, ll_none = _fit_starts(cells, 1, floor, 1.0)
    alternatives: dict[str, float] = {"no churn (decay=1)": ll_none}
    best: tuple[float, int, float, float, float] | None = None
    for patience in patience_grid:
        s_min_p, s_max_p, decay_p, ll_p = _fit_starts(cells, patience, floor, None)
        alternatives[f"patience={patience}"] = ll_p
        if best is None or ll_p > best[0] + TIE * abs(best[0]):
            best = (ll_p, patience, decay_p, s_min_p, s_max_p)
    assert best is not None
    ll_churn, patience, decay, s_min, s_max = best
    lr = 2.0 * (ll_churn - ll_none)
    handset: dict[str, str] = {}
    values: dict[str, Any] = {}
    churn: GroupFit | None = None
    if lr >= CHURN_LR_THRESHOLD and decay < 1.0 - 1e-6:
        ll_starts = ll_churn
        values.update(churn_patience=int(patience), churn_decay=float(decay))
        churn = GroupFit(
            fields=CHURN_FIELDS,
            method=(
                "maximum likelihood, daily Bernoulli starts with return propensity max(floor, decay^(k-patience+1)),"
                " jointly with start_min/start_max; churn_patience chosen on a grid"
            ),
            loglik_fitted=ll_churn,
            loglik_default=_starts_loglik((s_min, s_max, base.churn_decay, base.churn_patience, floor), cells),
            n_obs=n_obs,
            alternatives=alternatives,
            notes=(f"likelihood ratio over no churn {lr:.2f} (threshold {CHURN_LR_THRESHOLD})",),
        )
    else:
        reason = (
            f"flat likelihood: the best churn (patience {patience}, decay {decay:.3g}) beats no churn by a likelihood"
            f" ratio of {lr:.2f} < {CHURN_LR_THRESHOLD}; start rates fitted under the hand-set churn"
        )
        handset = dict.fromkeys(CHURN_FIELDS, reason)
        patience, decay = base.churn_patience, base.churn_decay
        s_min, s_max, _, ll_starts = _fit_starts(cells, patience, floor, decay)
    values.update(start_min=float(min(s_min, s_max)), start_max=float(s_max))
    starts = GroupFit(
        fields=STARTS_FIELDS,
        method="maximum likelihood, daily Bernoulli starts (L-BFGS-B, 0 <= start_min <= start_max <= 1)",
        loglik_fitted=ll_starts,
        loglik_default=_starts_loglik((base.start_min, base.start_max, decay, patience, floor), cells),
        n_obs=n_obs,
        alternatives={"no churn (decay=1)": ll_none},
        notes=(f"without churn: start_min {s_min0:.4g}, start_max {s_max0:.4g}",),
    )
    return starts, churn, values, handset, daily_rate


def fit_split_sessions(split: Any, **kwargs: Any) -> SessionFit | None:
    """:func:`fit_sessions` on a protocol split's history (train + background; never its test part), or ``None``
    for a split of an implicit dataset (``ml-1m-implicit``): its pseudo-time is file order, which holds no sessions,
    so the session behaviour stays hand-set.

    The activity scale is the sampled users' train counts (:func:`activity_scale`); a sampled user's window
    ends at its last train rating (its test part starts there), a background user's at the history's last
    timestamp.

    Args:
        split: a split directory or a loaded ``Split``.
        **kwargs: further keyword arguments of :func:`fit_sessions` (``gap_minutes``, ``base``, grids).
    """
    from recsim_personas.data import load_split
    from recsim_personas.data.datasets import get_spec

    split = load_split(split)
    if get_spec(split.config.dataset).implicit:
        logger.info("%s has no timestamps (its pseudo-time is file order): no sessions to fit", split.config.dataset)
        return None
    train_counts = split.train.groupby("user_id").size()
    window_end = split.train.groupby("user_id")["timestamp"].max()
    return fit_sessions(split.history(), activity_scale(train_counts.to_numpy()), window_end=window_end, **kwargs)
