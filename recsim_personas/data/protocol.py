"""The evaluation protocol of *Personas within Parameters*: which users, and which of their ratings are held out.

Protocol (:class:`~recsim_personas.data.protocol_config.ProtocolConfig` defaults):

1. **Eligible users**: those with between ``min_ratings`` and ``max_ratings`` ratings, both inclusive
   (100–200). On ML-100K that is 216 users.
2. **Sample**: ``n_users`` (200) of them, drawn without replacement by ``numpy.random.default_rng(seed)``
   from the eligible ids in ascending order; the sample is kept in ascending order.
3. **Temporal split per user**: the user's ratings sorted by ``(timestamp, item_id)`` (the item id breaks
   ties between ratings given in the same second, so the split is stable), the first
   ``floor(n * train_ratio)`` go to train, the rest to test (60:40).
4. **Historical average ratings** (shown in item descriptions) are computed from every rating of the
   dataset *except the held-out test ratings of the selected users*, so nothing of the test part leaks into
   the inputs of a model. Ratings by users outside the sample count: they are history, not test data.

:func:`make_split` applies the protocol in memory and returns a :class:`~recsim_personas.data.split.Split`;
:func:`prepare_split` loads the data, applies the protocol and saves the split artifact (see
:mod:`recsim_personas.data.split`), doing nothing when the directory already holds this very split.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas._io import remove_leftovers
from recsim_personas.artifacts import has_manifest
from recsim_personas.data.movielens import MovieLens, load_movielens
from recsim_personas.data.protocol_config import ProtocolConfig
from recsim_personas.data.split import Split, check_replaceable
from recsim_personas.errors import ArtifactError, ConfigError

__all__ = [
    "ProtocolConfig",
    "Split",
    "eligible_users",
    "make_split",
    "prepare_split",
    "temporal_split",
]

logger = logging.getLogger(__name__)


def eligible_users(ratings: pd.DataFrame, min_ratings: int, max_ratings: int) -> np.ndarray:
    """Ids (ascending, int64) of users with ``min_ratings <= n <= max_ratings`` ratings."""
    counts = ratings.groupby("user_id").size()
    return np.sort(counts[(counts >= min_ratings) & (counts <= max_ratings)].index.to_numpy(dtype=np.int64))


def temporal_split(ratings: pd.DataFrame, train_ratio: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each user's ratings by time: the oldest ``floor(n * train_ratio)`` go to train.

    Ties in ``timestamp`` are broken by ``item_id`` so the result does not depend on file order.
    """
    ordered = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort").reset_index(drop=True)
    position = ordered.groupby("user_id").cumcount().to_numpy()
    n = ordered.groupby("user_id")["item_id"].transform("size").to_numpy()
    n_train = np.floor(n * train_ratio + 1e-9).astype(np.int64)
    is_train = position < n_train
    return ordered[is_train].reset_index(drop=True), ordered[~is_train].reset_index(drop=True)


def make_split(dataset: MovieLens, config: ProtocolConfig) -> Split:
    """Apply the protocol to a loaded dataset (in memory; call :meth:`Split.save` to persist it).

    Raises:
        ConfigError: the dataset does not match ``config.dataset``, or fewer eligible users than
            ``config.n_users``.
    """
    if dataset.name != config.dataset:
        raise ConfigError(
            f"config.dataset is {config.dataset!r} but the data given is {dataset.name!r}. Fix: load the dataset the"
            f" config names (load_movielens({config.dataset!r})), or set dataset={dataset.name!r}."
        )
    eligible = eligible_users(dataset.ratings, config.min_ratings, config.max_ratings)
    n_users = len(eligible) if config.n_users is None else config.n_users
    if len(eligible) < n_users:
        raise ConfigError(
            f"only {len(eligible)} users of {dataset.name} have {config.min_ratings}–{config.max_ratings} ratings,"
            f" fewer than the {n_users} requested. Fix: lower --users to at most {len(eligible)}, or widen"
            " --min-ratings/--max-ratings."
        )
    rng = np.random.default_rng(config.seed)
    selected = np.sort(rng.choice(eligible, size=n_users, replace=False))
    chosen = dataset.ratings[dataset.ratings["user_id"].isin(selected)]
    train, test = temporal_split(chosen, config.train_ratio)
    background = (
        dataset.ratings[~dataset.ratings["user_id"].isin(selected)]
        .sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
        .reset_index(drop=True)
    )

    rest = dataset.ratings.set_index(["user_id", "item_id"])
    history = rest[~rest.index.isin(test.set_index(["user_id", "item_id"]).index)]
    stats = history.groupby(level="item_id")["rating"].agg(["mean", "size"])
    items = dataset.items.copy()
    if dataset.text is not None:
        items = items.merge(dataset.text, on="item_id", how="left")
    for col in ("summary", "plot"):
        if col not in items:
            items[col] = None
        items[col] = items[col].astype(object).where(items[col].notna(), None)
    for col in ("cast", "director"):
        if col not in items:
            items[col] = [[] for _ in range(len(items))]
        items[col] = items[col].map(lambda v: list(v) if isinstance(v, list) else [])  # no text: NaN
    items["hist_avg_rating"] = items["item_id"].map(stats["mean"]).astype("float64")
    items["hist_n_ratings"] = items["item_id"].map(stats["size"]).fillna(0).astype("int64")

    users = dataset.users[dataset.users["user_id"].isin(selected)].sort_values("user_id").reset_index(drop=True)
    users["n_train"] = users["user_id"].map(train.groupby("user_id").size()).astype("int64")
    users["n_test"] = users["user_id"].map(test.groupby("user_id").size()).astype("int64")
    users["n_ratings"] = users["n_train"] + users["n_test"]

    manifest = {
        "config": config.to_dict(),
        "source": {"dataset": dataset.name, "hash": dataset.source_hash, "files": dataset.source_files},
        "counts": {
            "eligible_users": len(eligible),
            "users": len(selected),
            "train": len(train),
            "test": len(test),
            "background": len(background),
            "items": len(items),
            "items_in_train": int(train["item_id"].nunique()),
            "test_items_unseen_in_train": int((~test["item_id"].isin(train["item_id"])).sum()),
            "items_with_summary": int(items["summary"].notna().sum()),
            "items_with_cast": int((items["cast"].map(len) > 0).sum()),
        },
    }
    return Split(
        config=config,
        train=train,
        test=test,
        background=background,
        items=items,
        users=users,
        manifest=manifest,
    )


def prepare_split(
    config: ProtocolConfig,
    out: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    overwrite: bool = False,
) -> tuple[Split, bool]:
    """Load the data, apply the protocol and save the split; idempotent.

    Returns:
        (split, created): ``created`` is False when ``out`` already held this very split (same config,
        same source data), which is then loaded and returned untouched.
    """
    dataset = load_movielens(config.dataset, data_dir, download=download)
    out = Path(out)
    remove_leftovers(out)  # of killed earlier runs, also when this run finds the split already made
    if has_manifest(out):
        try:
            existing = Split.load(out)
        except ArtifactError as exc:
            check_replaceable(out, overwrite, reason=f"that cannot be loaded ({exc})")
        else:
            if existing.config == config and existing.source_hash == dataset.source_hash:
                logger.info("%s already holds this split; nothing to do", out)
                return existing, False
    return make_split(dataset, config).save(out, overwrite=overwrite), True
