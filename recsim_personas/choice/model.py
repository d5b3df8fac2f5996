"""Who watches what: the choice models a simulated user decides with, and the fitted one's artifact.

Two implementations of :class:`ChoiceModel`, selected by name when a world is made
(``make_world(split, choice=...)``):

- ``"fitted"`` — :class:`FittedChoice`: a logistic model of P(watch | user, item) over the features of
  :mod:`.features`, fitted on the logs by :func:`~recsim_personas.choice.fit.fit_choice` (see there for the
  positives, the sampled negatives and why). Saved as a ``choice/`` artifact directory with a manifest.
- ``"handset"`` — :class:`HandsetChoice`: the formula with hand-set coefficients of
  :func:`~recsim_personas.envs.session.watch_probability` (the rater's expected rating blended with the item's
  historical average by conformity, a genre bonus or penalty, then a sigmoid), kept for comparison.

Each item on a page is decided on its own (a Bernoulli draw per item): the logs hold what users rated, not
what they were shown, so nothing in them says how items on one page compete, and the model does not claim to.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from recsim_personas._io import atomic_dir, write_json
from recsim_personas.artifacts import ArtifactKind, check_input, read_manifest, verify_files, write_manifest
from recsim_personas.choice.config import ChoiceConfig
from recsim_personas.choice.features import DAYS_PER_YEAR, FEATURES, ItemSide, UserSide, feature_matrix
from recsim_personas.errors import ArtifactError

if TYPE_CHECKING:
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.state import UserTable
    from recsim_personas.envs.world import World

logger = logging.getLogger(__name__)

CHOICE = ArtifactKind(
    format="recsim-personas/choice",
    version=1,
    what="choice model",
    fix="fit one with `recsim-personas choice fit --split DIR --out DIR`",
)
"""The choice-model artifact kind."""

ARRAYS_FILE = "choice.safetensors"
MODEL_FILE = "choice.json"


class ChoiceSession(Protocol):
    """The choice model as a simulation asks it, ready for one world's users. It reads what a user has watched
    from the population's table, so it keeps no simulation state: populations of one world may share it."""

    def watch_probability(
        self, table: UserTable, users: np.ndarray, items: np.ndarray, expected: np.ndarray, cfg: SessionConfig
    ) -> np.ndarray:
        """P(watch) of (user, item) pairs the user has not seen.

        Args:
            table: the population's state (histories as they are now).
            users: user rows, int64 (P,).
            items: item indices, int64 (P,).
            expected: the rater's expected rating of each pair, float64 (P,).
            cfg: the behaviour coefficients.

        Returns:
            float64 (P,) in [0, 1].
        """
        ...


@runtime_checkable
class ChoiceModel(Protocol):
    """Decides how likely a user is to watch each shown item; hands each simulation its own session."""

    name: str

    def session(self, world: World) -> ChoiceSession:
        """A fresh session for one simulation of ``world``'s users (their histories as in the world)."""
        ...


def open_choice(world: World) -> ChoiceSession:
    """The choice session of a new simulation of ``world`` (the hand-set formula when the world names none)."""
    return (world.choice or HandsetChoice()).session(world)


class HandsetChoice:
    """Today's hand-set formula (:func:`~recsim_personas.envs.session.watch_probability`, coefficients from
    :class:`~recsim_personas.envs.session.SessionConfig`); it keeps nothing, so its session is stateless."""

    name = "handset"

    def session(self, world: World) -> HandsetSession:
        return HandsetSession(world)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class HandsetSession:
    """The hand-set formula for one simulation (stateless: it reads the world and the population's table)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def watch_probability(self, table, users, items, expected, cfg) -> np.ndarray:
        from recsim_personas.envs.session import watch_probability

        w = self.world
        off_taste = (w.item_genres[items] & w.user_top_genres[users]) == 0
        return watch_probability(
            expected, w.item_hist_avg[items], off_taste, False, table.conformity[users], table.diversity[users], cfg
        )


DYNAMIC: tuple[str, ...] = ("ease_recent", "expected_rating")
"""The features a simulation recomputes at every page: what the user watched last (``ease_recent``) and the
rater's answer. The others are fixed per (user, item) for a simulation — ``ease`` included, the score of the
user's logged history: updating a user's score of every item after each simulated watch cost 3-5× the
environment's whole step at 64 concurrent sessions, while the recent-history score (the larger coefficient)
follows the watches at the cost of a 10-item gather."""


@dataclass(frozen=True, eq=False)
class FittedChoice:
    """A logistic choice model: ``P(watch) = σ(intercept + ((x - mean) / scale) · coef)``, ``x`` the features.

    Attributes:
        items: the item arrays of the features (:class:`~recsim_personas.choice.features.ItemSide`).
        item_ids: the items' ids, int64 (n_items,), ascending: a world of other items is refused.
        mean, scale: standardisation of the features, float64 (n_features,).
        coef: logistic coefficients on the standardised features, float64 (n_features,).
        intercept: logistic intercept.
        config: how it was fitted.
        split_id: the split it was fitted on.
        report: figures of the fit (validation log-likelihood and ROC-AUC beside the hand-set formula, counts).
    """

    items: ItemSide
    item_ids: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    config: ChoiceConfig
    split_id: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    name: str = "fitted"

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits of feature rows float64 (P, n_features) → float64 (P,)."""
        return self.intercept + ((features - self.mean) / self.scale) @ self.coef

    def probability(self, users_side: UserSide, users: np.ndarray, items: np.ndarray, expected: np.ndarray):
        """P(watch) float64 (P,) of (user row, item index) pairs given the users' arrays."""
        z = self.logits(feature_matrix(self.items, users_side, users, items, expected))
        return 1.0 / (1.0 + np.exp(-z))

    def user_side(self, world: World, table: UserTable) -> UserSide:
        """The user arrays of the features for ``world``'s users with the histories of ``table``."""
        return UserSide(
            ref_day=world.user_ref_day,
            genre_share=world.user_genre_share,
            traits=world.trait_scores,
            hist_items=table.hist_items,
            hist_len=table.hist_len,
        )

    def bind(self, world: World, *, dense: bool | None = None) -> BoundChoice:
        """The model ready for ``world``'s users: the fixed part of every (user, item) logit computed once
        (``dense``), or per page for the pairs asked (lazy; the default above
        :data:`DENSE_MAX_CELLS` cells). See :class:`BoundChoice`.

        Raises:
            ArtifactError: the world's items are not the ones the model was fitted on.
        """
        if len(world.item_ids) != len(self.item_ids) or not np.array_equal(world.item_ids, self.item_ids):
            raise ArtifactError(
                f"the choice model was fitted on {len(self.item_ids)} items that are not this world's"
                f" {world.n_items}. Fix: fit the choice model on the world's split."
            )
        return BoundChoice(self, world, dense=dense)

    def session(self, world: World) -> ChoiceSession:
        return self.bind(world).session(world)

    def coefficients(self) -> dict[str, float]:
        """``{feature: coefficient}`` on the standardised features, plus ``"intercept"``."""
        return {**dict(zip(FEATURES, self.coef.tolist(), strict=True)), "intercept": float(self.intercept)}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "split_id": self.split_id, "config": self.config.to_dict()}

    # --------------------------------------------------------------------------------------- artifact
    def save(self, out: str | os.PathLike[str], *, sessions: dict[str, Any] | None = None) -> Path:
        """Write the artifact directory ``out`` (atomically; the manifest last).

        Args:
            out: the directory to create (must not exist).
            sessions: the fitted session behaviour (a :class:`~recsim_personas.envs.calibration.SessionFit`'s
                ``to_dict()``), saved beside it as ``sessions.json``, its config also as ``session_config.json``.
        """
        from safetensors.numpy import save_file

        out = Path(out)
        if out.exists():
            raise ArtifactError(f"{str(out)!r} already exists. Fix: choose another --out or remove it.")
        s = self.items
        with atomic_dir(out) as tmp:
            arrays = {
                "ease": np.ascontiguousarray(s.ease[:-1], dtype=np.float32),
                "log_popularity": s.log_popularity.astype(np.float64),
                "daily_counts": np.ascontiguousarray(s.daily_counts, dtype=np.int32),
                "year": s.year.astype(np.float64),
                "genres": np.ascontiguousarray(s.genres, dtype=np.float64),
                "item_ids": self.item_ids.astype(np.int64),
                "mean": self.mean.astype(np.float64),
                "scale": self.scale.astype(np.float64),
                "coef": self.coef.astype(np.float64),
            }
            save_file(arrays, str(tmp / ARRAYS_FILE))
            body = {
                "features": list(FEATURES),
                "intercept": float(self.intercept),
                "first_day": int(s.first_day),
                "recent_items": int(s.recent_items),
                "trend_days": int(s.trend_days),
                "report": self.report,
            }
            write_json(tmp / MODEL_FILE, body)
            files = [ARRAYS_FILE, MODEL_FILE]
            if sessions is not None:
                write_json(tmp / SESSIONS_FILE, sessions)
                files.append(SESSIONS_FILE)
                if isinstance(sessions.get("config"), dict):  # the fitted SessionConfig alone, for --session-config
                    write_json(tmp / SESSION_CONFIG_FILE, sessions["config"])
                    files.append(SESSION_CONFIG_FILE)
            write_manifest(
                tmp,
                CHOICE,
                {"split_id": self.split_id, "config": self.config.to_dict(), "kind": self.name},
                files=files,
                libraries=("scikit-learn", "safetensors"),
            )
        logger.info("saved the choice model to %s", out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, split_id: str | None = None) -> FittedChoice:
        """Read a ``choice/`` directory, checking its files and (given ``split_id``) the split it was fitted on.

        Raises:
            ArtifactError: not a choice model, damaged or altered files, another split, or other features.
        """
        from safetensors.numpy import load_file

        path = Path(path)
        manifest = read_manifest(path, CHOICE, required=("config", "files", "split_id"))
        verify_files(path, manifest, CHOICE)
        if split_id is not None:
            check_input(path, CHOICE, "split", manifest["split_id"], split_id, "fit the choice model on this split")
        body = json.loads((path / MODEL_FILE).read_text(encoding="utf-8"))
        if list(body.get("features", ())) != list(FEATURES):
            raise ArtifactError(
                f"choice model {str(path)!r} has features {body.get('features')!r}, this version computes"
                f" {list(FEATURES)!r}. Fix: refit it with `recsim-personas choice fit`."
            )
        a = load_file(str(path / ARRAYS_FILE))
        ease = np.vstack([a["ease"], np.zeros((1, a["ease"].shape[1]), dtype=np.float32)])
        items = ItemSide(
            ease=ease,
            log_popularity=a["log_popularity"],
            daily_counts=a["daily_counts"],
            first_day=int(body["first_day"]),
            year=a["year"],
            genres=a["genres"],
            recent_items=int(body["recent_items"]),
            trend_days=int(body["trend_days"]),
        )
        return cls(
            items=items,
            item_ids=a["item_ids"],
            mean=a["mean"],
            scale=a["scale"],
            coef=a["coef"],
            intercept=float(body["intercept"]),
            config=ChoiceConfig.from_dict(manifest["config"]),
            split_id=manifest["split_id"],
            report=dict(body.get("report") or {}),
        )


DENSE_MAX_CELLS = 1 << 28
"""Above this many (user, item) cells (268M: about 160,000 users of ML-100K's 1,682 items, 1.07 GB of float32)
:class:`BoundChoice` computes the fixed logits lazily, for the pairs a page asks, instead of a dense matrix."""


class BoundChoice:
    """A :class:`FittedChoice` bound to one world's users: the logit of a pair is
    ``fixed[u, j] + a · ease_recent(u, j) + c · expected``, where ``fixed`` — every feature of
    :data:`~recsim_personas.choice.features.FEATURES` but the :data:`DYNAMIC` ones, standardised and weighted,
    plus the intercept — comes from the users' logged (train) histories. What a user watched during a simulation
    enters through ``ease_recent``, read from the population's table, so one bound model serves every
    population of the world.

    Two ways to hold ``fixed``, giving the same values (both rounded to float32):

    - dense (``n_users · n_items <= DENSE_MAX_CELLS`` by default): computed once here by matrix algebra
      (:meth:`_dense_fixed`), float32 (n_users, n_items), read-only — 4 bytes per (user, item): 673 MB at 100,000
      users;
    - lazy (larger worlds): only the logged histories are kept, int32 (n_users, longest history), -1 padded, and
      each page computes the fixed logits of the pairs it asks (a gather of one history row per pair).

    Args:
        model: the fitted model.
        world: the world whose users it serves.
        dense: force one way (``None``: by :data:`DENSE_MAX_CELLS`).
    """

    def __init__(self, model: FittedChoice, world: World, *, dense: bool | None = None) -> None:
        from recsim_personas.choice.features import padded_histories

        self.model, self.name = model, model.name
        self.n_users = world.n_users
        weight = model.coef / model.scale
        self.dynamic = {name: float(weight[FEATURES.index(name)]) for name in DYNAMIC}
        n_users, n_items = world.n_users, world.n_items
        lengths = np.fromiter((len(h) for h in world.history_items), dtype=np.int64, count=n_users)
        rows = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
        items_flat = np.concatenate(world.history_items) if n_users else np.zeros(0, dtype=np.int64)
        hist, _ = padded_histories(rows, items_flat, n_users)
        self._hist = hist.astype(np.int32)  # the logged histories, -1 padded: ``ease`` is read from them
        self._ease_t = np.ascontiguousarray(model.items.ease.T)  # (n_items, n_items + 1): a pair's row is contiguous
        self._ease_weight = float(weight[FEATURES.index("ease")])
        no_history = np.broadcast_to(np.int64(-1), (n_users, 1))  # the other features, with ease = ease_recent = 0
        self._side = UserSide(
            ref_day=world.user_ref_day,
            genre_share=world.user_genre_share,
            traits=world.trait_scores,
            hist_items=no_history,
            hist_len=np.broadcast_to(np.int64(0), (n_users,)),
        )
        self.dense = n_users * n_items <= DENSE_MAX_CELLS if dense is None else bool(dense)
        self.fixed: np.ndarray | None = None
        if self.dense:
            fixed = self._dense_fixed(rows, items_flat)
            fixed.flags.writeable = False
            self.fixed = fixed

    def _dense_fixed(self, rows: np.ndarray, items_flat: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """:meth:`fixed_logits` of every (user, item) pair, float32 (n_users, n_items), as matrix algebra: the
        logit is linear in the features, and each fixed feature is an item term, a user term, a product of the
        two, a function of (the user's reference day, the item) — computed once per distinct day — or, for
        ``ease``, the user × item history counts times the EASE weights (a sparse × dense product).

        Args:
            rows: user row of each logged history entry, int64 (R,).
            items_flat: its item index, int64 (R,).
            chunk: users per block (bounds the float64 temporaries).
        """
        from scipy.sparse import csr_matrix

        model, side, s = self.model, self._side, self.model.items
        n_users, n_items = self.n_users, len(model.item_ids)
        w = model.coef / model.scale
        col = {name: FEATURES.index(name) for name in FEATURES}
        const = float(model.intercept - (model.mean / model.scale) @ model.coef)
        counts = csr_matrix((np.ones(rows.size), (rows, items_flat)), shape=(n_users, n_items))
        ease_w = np.asarray(s.ease[:n_items], dtype=np.float64)  # (n_items, n_items); the padding row is zero
        log_pop = np.asarray(s.log_popularity, dtype=np.float64)
        g = np.asarray(s.genres, dtype=np.float64)
        g_norm = g / np.maximum(g.sum(axis=1), 1.0)[:, None]  # genre_match = share · g_norm
        traits = np.asarray(side.traits, dtype=np.float64)
        # the (reference day, item) features, once per distinct day
        days, day_of_user = np.unique(np.asarray(side.ref_day, dtype=np.int64), return_inverse=True)
        n_cols = s.daily_counts.shape[1]
        end = np.clip(days - s.first_day + 1, 0, n_cols - 1)
        start = np.clip(end - s.trend_days, 0, n_cols - 1)
        trend = np.log1p((s.daily_counts[:, end] - s.daily_counts[:, start]).astype(np.float64)).T  # (days, items)
        age = np.clip((1970.0 + days / DAYS_PER_YEAR)[:, None] - np.asarray(s.year)[None, :], -1.0, 60.0)
        per_day = w[col["trend"]] * trend + w[col["age"]] * age + w[col["log_age"]] * np.log1p(np.maximum(age, 0.0))
        item_term = w[col["log_popularity"]] * log_pop
        user_term = traits @ w[[col["activity"], col["conformity"], col["diversity"]]]
        out = np.empty((n_users, n_items), dtype=np.float32)
        for lo in range(0, n_users, chunk):
            hi = min(n_users, lo + chunk)
            ease = counts[lo:hi] @ ease_w
            match = side.genre_share[lo:hi] @ g_norm.T
            logit = const + w[col["ease"]] * ease + item_term[None, :] + per_day[day_of_user[lo:hi]]
            logit += (w[col["genre_match"]] + w[col["diversity_x_genre_match"]] * traits[lo:hi, 2:3]) * match
            logit += w[col["conformity_x_popularity"]] * traits[lo:hi, 1:2] * log_pop[None, :]
            logit += user_term[lo:hi, None]
            out[lo:hi] = logit
        return out

    def fixed_logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The fixed part of the logits of (user row, item index) pairs, from the logged histories.

        Args:
            users: user rows, int64 (P,).
            items: item indices, int64 (P,).

        Returns:
            float32 (P,).
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        # the features with ease = ease_recent = expected = 0, then ease (Σ over the logged history) added
        x = feature_matrix(self.model.items, self._side, users, items, np.zeros(len(users)))
        ease = self._ease_t[items[:, None], self._hist[users]].sum(axis=1, dtype=np.float64)
        return (self.model.logits(x) + self._ease_weight * ease).astype(np.float32)

    @property
    def report(self) -> dict[str, Any]:
        return self.model.report

    def describe(self) -> dict[str, Any]:
        return self.model.describe()

    def session(self, world: World) -> ChoiceSession:
        """Itself for the world it was bound to (it keeps no simulation state); bound anew for another."""
        if world.n_users != self.n_users or world.choice is not self:
            return self.model.bind(world)
        return self

    def watch_probability(self, table, users, items, expected, cfg) -> np.ndarray:
        s = self.model.items
        offsets = table.hist_len[users][:, None] - s.recent_items + np.arange(s.recent_items)[None, :]
        cols = np.maximum(offsets, 0)
        recent = np.where(offsets >= 0, table.hist_items[users[:, None], cols], -1)
        ease_recent = s.ease[recent, items[:, None]].sum(axis=1, dtype=np.float64)
        fixed = self.fixed[users, items] if self.fixed is not None else self.fixed_logits(users, items)
        z = (
            fixed
            + self.dynamic["ease_recent"] * ease_recent
            + self.dynamic["expected_rating"] * np.asarray(expected, dtype=np.float64)
        )
        return 1.0 / (1.0 + np.exp(-z))


SESSIONS_FILE = "sessions.json"
SESSION_CONFIG_FILE = "session_config.json"
"""The fitted :class:`~recsim_personas.envs.session.SessionConfig`'s fields alone: what ``simulate`` and
``benchmark`` read with ``--session-config FILE``."""
