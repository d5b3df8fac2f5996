"""The classical prior the persona agents are anchored on, and its out-of-fold log-probabilities.

With anchoring (``LoraTrainConfig.anchor``, default ``"bias"``) an agent's rating logits are
``backbone logits + log P_prior(r | u, i)``: the adapter learns the residual of a classical rater
(:mod:`~recsim_personas.agents.classical`: bias, MF, item-kNN or their blend) fitted on the split's history
(train + background, never a test rating). The fitted prior is stored in the agents' artifact
(:class:`AnchorPrior`), so inference does not refit it.

**Out-of-fold prior for the training examples.** The RAFT examples *are* history ratings, so the prior fitted
on the whole history has seen every one of them (biased MF reaches RMSE 0.80 on them in-sample, against 0.91
out of fold and 0.95 on the test part), and an adapter trained against it learns to trust a prior that is far
more accurate on its training data than it will be on new ratings. :func:`out_of_fold_log_probs` deals the
train ratings into seeded folds and anchors each on a prior fitted without its fold — the position of a test
rating, which the stored prior has not seen either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.agents.classical import (
    BiasRater,
    MFConfig,
    MFRater,
    PointRater,
    _gaussian_table,
    load_rater,
    make_rater,
    save_rater,
)
from recsim_personas.agents.train_config import PRIORS
from recsim_personas.errors import ArtifactError, ConfigError, unknown_choice


class AnchorPrior:
    """The classical prior the agents' logits are anchored on (a fitted classical rater) and its log-probs.

    Args:
        rater: a fitted classical :class:`~recsim_personas.agents.classical.PointRater` (``bias``, ``mf``,
            ``knn`` or ``blend``).
    """

    def __init__(self, rater: PointRater) -> None:
        if not isinstance(rater, PointRater) or rater.name not in PRIORS:
            raise ConfigError(
                f"the anchoring prior must be one of the classical raters {', '.join(PRIORS)}, got {rater!r}."
            )
        rater._check_fitted()
        self.rater = rater
        self.name = rater.name

    @classmethod
    def fit(cls, history: pd.DataFrame, kind: str = "bias") -> AnchorPrior:
        """Fit the ``kind`` rater (one of :data:`PRIORS`) on ``history`` (train + background ratings; never a
        test rating). Deterministic (MF draws from its own seeded generator)."""
        if kind not in PRIORS:
            raise unknown_choice("anchoring prior", str(kind), PRIORS)
        return cls(make_rater(kind).fit(history))

    def log_probs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``log P_prior(rating = k + 1 | user, item)``, float64 (n, 5), finite."""
        return np.log(np.maximum(self.rater.predict(users, items), 1e-12))

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        """Write the fitted rater (``rater.json`` + ``rater.npz``, no pickle); returns their sha256."""
        return save_rater(self.rater, out_dir)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnchorPrior:
        """Read a saved prior (also the ``prior.json`` + parquet layout of bias / MF priors saved earlier)."""
        path = Path(path)
        if (path / "prior.json").is_file() and not (path / "rater.json").is_file():
            return cls(_load_parquet_prior(path))
        return cls(load_rater(path))


def _load_parquet_prior(path: Path) -> BiasRater | MFRater:
    """A bias / MF prior in the layout of earlier artifacts: ``prior.json`` + ``user_bias`` / ``item_bias`` parquet."""
    try:
        meta = json.loads((path / "prior.json").read_text(encoding="utf-8"))
        users = pd.read_parquet(path / "user_bias.parquet")
        items = pd.read_parquet(path / "item_bias.parquet")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read the anchoring prior in {str(path)!r}: {exc}.") from exc
    uid = pd.Index(users["id"].to_numpy(dtype=np.int64))
    iid = pd.Index(items["id"].to_numpy(dtype=np.int64))
    rater: BiasRater | MFRater
    if meta["rater"] == "bias":
        rater = BiasRater(meta["reg_user"], meta["reg_item"], meta["n_sweeps"], meta["calibration_share"])
        rater.user_bias_ = pd.Series(users["bias"].to_numpy(), index=uid)
        rater.item_bias_ = pd.Series(items["bias"].to_numpy(), index=iid)
    elif meta["rater"] == "mf":
        rater = MFRater(MFConfig(**meta["config"]), meta["calibration_share"])
        rater._best_epochs = meta["best_epochs"]
        rater.user_index_, rater.item_index_ = uid, iid
        rater.bu_, rater.bi_ = users["bias"].to_numpy(), items["bias"].to_numpy()
        rater.P_ = users.filter(regex=r"^f\d+$").to_numpy(dtype=np.float64)
        rater.Q_ = items.filter(regex=r"^f\d+$").to_numpy(dtype=np.float64)
    else:
        raise ArtifactError(f"{path / 'prior.json'}: unknown prior rater {meta['rater']!r}.")
    rater.mu_ = float(meta["mu"])
    rater.sigma = float(meta["sigma"])
    rater._table = _gaussian_table(rater.sigma)
    return rater


def out_of_fold_log_probs(
    split: Any, kind: str, folds: int, seed: int, *, full: AnchorPrior | None = None
) -> pd.DataFrame:
    """Log-probabilities of every train rating of ``split`` under a prior that has not seen it.

    The train ratings are dealt into ``folds`` folds (seeded, uniformly at random); for each fold the prior
    ``kind`` is fitted on the split's history without that fold's ratings and predicts them. ``folds=1``
    gives the in-sample log-probabilities of the prior fitted on the whole history (``full`` when the caller
    has already fitted it).

    Returns:
        A frame indexed by ``(user_id, item_id)`` with columns ``lp1`` … ``lp5`` (float64) and ``fold``.
    """
    if folds < 1:
        raise ConfigError(f"prior_folds must be >= 1, got {folds!r}.")
    train = split.train.reset_index(drop=True)
    cols = [f"lp{k}" for k in range(1, 6)]
    users = train["user_id"].to_numpy(dtype=np.int64)
    items = train["item_id"].to_numpy(dtype=np.int64)
    out = np.empty((len(train), 5), dtype=np.float64)
    fold = np.zeros(len(train), dtype=np.int64)
    if folds == 1:
        out[:] = (full or AnchorPrior.fit(split.history(), kind)).log_probs(users, items)
    else:
        fold = np.random.default_rng(seed).permutation(np.arange(len(train)) % folds)
        for k in range(folds):
            held = fold == k
            history = pd.concat([train[~held], split.background], ignore_index=True)
            out[held] = AnchorPrior.fit(history, kind).log_probs(users[held], items[held])
    frame = pd.DataFrame(out, columns=cols)
    frame["fold"] = fold
    frame.index = pd.MultiIndex.from_arrays([users, items], names=["user_id", "item_id"])
    return frame


def ratings_out_of_fold_log_probs(ratings: pd.DataFrame, kind: str, folds: int, seed: int) -> np.ndarray:
    """Log-probabilities of every rating of ``ratings`` under a prior fitted without it: the ratings are dealt
    into ``folds`` seeded folds and each fold is predicted by the prior ``kind`` fitted on the others.

    Args:
        ratings: ``user_id``, ``item_id``, ``rating`` (e.g. a split's whole history).
        kind: one of :data:`~recsim_personas.agents.train_config.PRIORS`.
        folds: number of folds (>= 2).
        seed: seed of the fold assignment.

    Returns:
        float64 (len(ratings), 5), row ``j`` for ``ratings.iloc[j]``.
    """
    if folds < 2:
        raise ConfigError(f"out-of-fold log-probabilities need folds >= 2, got {folds!r}.")
    frame = ratings.reset_index(drop=True)
    fold = np.random.default_rng(seed).permutation(np.arange(len(frame)) % folds)
    return _held_out_log_probs(frame, kind, ((fold == k, fold != k) for k in range(folds)))


def _held_out_log_probs(frame: pd.DataFrame, kind: str, fits: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """float64 (len(frame), 5): for each ``(held, known)`` pair of row masks, the rows ``held`` predicted by the
    prior ``kind`` fitted on the rows ``known``."""
    users = frame["user_id"].to_numpy(dtype=np.int64)
    items = frame["item_id"].to_numpy(dtype=np.int64)
    out = np.empty((len(frame), 5), dtype=np.float64)
    for held, known in fits:
        if held.any():
            out[held] = AnchorPrior.fit(frame[known], kind).log_probs(users[held], items[held])
    return out


def ratings_temporal_log_probs(ratings: pd.DataFrame, kind: str, folds: int, seed: int) -> np.ndarray:
    """Log-probabilities of every rating of ``ratings`` under a prior that knows every *other* user's ratings and
    only its own user's *earlier* ones — as the prior of a test rating does (fitted on the whole history, which
    ends before the test part begins).

    The users are dealt into ``folds`` seeded groups and each user's ratings, in time order, are cut into
    ``folds`` consecutive blocks of (nearly) equal count; the ratings of block ``k`` of the users of group ``g``
    are predicted by the prior ``kind`` fitted without group ``g``'s blocks ``k, k+1, ...`` (for block 0: without
    the group's users at all, which the prior rates as new users). ``folds²`` fits.

    Args:
        ratings: ``user_id``, ``item_id``, ``rating``, ``timestamp`` (e.g. a split's whole history).
        kind: one of :data:`~recsim_personas.agents.train_config.PRIORS`.
        folds: user groups and time blocks (>= 2).
        seed: seed of the user groups.

    Returns:
        float64 (len(ratings), 5), row ``j`` for ``ratings.iloc[j]``.
    """
    if folds < 2:
        raise ConfigError(f"out-of-fold log-probabilities need folds >= 2, got {folds!r}.")
    frame = ratings.reset_index(drop=True)
    users = frame["user_id"].to_numpy(dtype=np.int64)
    ranks = frame.sort_values(["timestamp", "item_id"], kind="mergesort").groupby("user_id").cumcount()
    rank = ranks.reindex(frame.index).to_numpy()
    count = frame.groupby("user_id")["user_id"].transform("size").to_numpy()
    block = rank * folds // count
    uniq, user_row = np.unique(users, return_inverse=True)
    group = np.random.default_rng(seed).permutation(np.arange(len(uniq)) % folds)[user_row]
    fits = (((group == g) & (block == k), ~((group == g) & (block >= k))) for g in range(folds) for k in range(folds))
    return _held_out_log_probs(frame, kind, fits)
