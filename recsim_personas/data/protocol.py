"""The evaluation protocol of *Personas within Parameters* and the split artifact later stages load.

Protocol (:class:`ProtocolConfig` defaults):

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

The artifact (a directory) holds ``train.parquet``, ``test.parquet``, ``background.parquet`` (the
ratings of users outside the sample: history that models may learn from), ``items.parquet`` (metadata, movie
text, historical averages), ``users.parquet`` (demographics of the selected users), a RecBole atomic
export under ``recbole/`` and ``manifest.json`` (config, a hash of the source data, counts, a sha256 of
every file, library versions). :meth:`Split.load` refuses a directory whose files do not match their
manifest; :meth:`Split.check_source` refuses a split made from other data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas import __version__
from recsim_personas._io import atomic_dir, sha256_file, write_json
from recsim_personas.data.catalog import ItemCatalog
from recsim_personas.data.datasets import DATASETS
from recsim_personas.data.movielens import MovieLens, load_movielens
from recsim_personas.errors import ArtifactError, ConfigError, config_from_dict, unknown_choice

logger = logging.getLogger(__name__)

SPLIT_FORMAT = "recsim-personas/split"
SPLIT_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLES = ("train", "test", "background", "items", "users")


@dataclass(frozen=True)
class ProtocolConfig:
    """How to select users and split their ratings.

    Attributes:
        dataset: ``"ml-100k"`` or ``"ml-1m"``.
        n_users: how many eligible users to sample; ``None`` keeps them all.
        min_ratings: fewest ratings an eligible user has (inclusive).
        max_ratings: most ratings an eligible user has (inclusive).
        train_ratio: share of each user's ratings, oldest first, that goes to train (0 < r < 1).
        seed: seed of the user sample.
    """

    dataset: str = "ml-100k"
    n_users: int | None = 200
    min_ratings: int = 100
    max_ratings: int = 200
    train_ratio: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise unknown_choice("dataset", self.dataset, DATASETS)
        if self.n_users is not None and (not isinstance(self.n_users, int) or self.n_users < 1):
            raise ConfigError(f"n_users must be a positive integer or None (all eligible users), got {self.n_users!r}.")
        if self.min_ratings < 2:
            raise ConfigError(
                f"min_ratings must be at least 2 (one train and one test rating), got {self.min_ratings!r}."
            )
        if self.max_ratings < self.min_ratings:
            raise ConfigError(f"max_ratings ({self.max_ratings!r}) must be >= min_ratings ({self.min_ratings!r}).")
        if not 0.0 < self.train_ratio < 1.0:
            raise ConfigError(f"train_ratio must be strictly between 0 and 1, got {self.train_ratio!r}.")
        if (
            int(np.floor(self.min_ratings * self.train_ratio)) < 1
            or int(np.floor(self.min_ratings * self.train_ratio)) >= self.min_ratings
        ):
            raise ConfigError(
                f"train_ratio={self.train_ratio!r} with min_ratings={self.min_ratings!r} leaves a user with an"
                " empty train or test part. Fix: raise min_ratings or move train_ratio towards 0.5."
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProtocolConfig:
        return config_from_dict(cls, d, "protocol config fields")


@dataclass(frozen=True)
class Split:
    """A protocol split: the selected users' train/test ratings plus items and users.

    Attributes:
        config: the protocol that produced it.
        train, test: ``user_id``, ``item_id`` (int64), ``rating`` (int8), ``timestamp`` (int64), sorted by
            user then time.
        background: every rating of the users *outside* the sample (same columns). Together with
            ``train`` it is the history a model may learn from (:meth:`history`); it holds no test rating.
        items: every item of the dataset: ``item_id``, ``title``, ``year``, ``genres``, ``summary``,
            ``plot``, ``cast``, ``director``, ``hist_avg_rating`` (float, NaN if unrated outside test),
            ``hist_n_ratings``.
        users: ``user_id``, ``gender``, ``age``, ``occupation``, ``zip_code``, ``n_ratings``, ``n_train``,
            ``n_test`` of the selected users.
        manifest: the manifest (config, source hash, counts, file hashes); complete once saved.
        path: where it was saved or loaded from, if anywhere.
    """

    config: ProtocolConfig
    train: pd.DataFrame
    test: pd.DataFrame
    background: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    manifest: dict[str, Any]
    path: Path | None = None

    @property
    def source_hash(self) -> str:
        return self.manifest["source"]["hash"]

    @property
    def split_id(self) -> str:
        """sha256 identifying this exact split (source data + config + file contents); set once saved."""
        if "split_id" not in self.manifest:
            raise ArtifactError("this split has not been saved yet, so it has no split_id; call save() first.")
        return self.manifest["split_id"]

    @property
    def user_ids(self) -> np.ndarray:
        """Selected user ids, ascending. Shape (n_users,), int64."""
        return self.users["user_id"].to_numpy(dtype=np.int64)

    def history(self) -> pd.DataFrame:
        """Every rating a model may learn from: ``train`` + ``background`` (no held-out test rating)."""
        return pd.concat([self.train, self.background], ignore_index=True)

    def catalog(self) -> ItemCatalog:
        """The item catalog with leakage-free historical averages."""
        return ItemCatalog(self.items)

    def check_source(self, dataset: MovieLens) -> None:
        """Refuse to pair this split with a dataset it was not made from."""
        if dataset.source_hash != self.source_hash or dataset.name != self.config.dataset:
            raise ArtifactError(
                f"split {str(self.path or '<unsaved>')!r} was made from {self.config.dataset} data with hash"
                f" {self.source_hash[:12]}…, but the dataset given is {dataset.name} with hash"
                f" {dataset.source_hash[:12]}… ({dataset.root}). Fix: use the data it was made from, or"
                " prepare a new split from this data with `recsim-personas data prepare`."
            )

    # ---------------------------------------------------------------------------------- persistence
    def save(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> Split:
        """Write the artifact into directory ``out`` atomically and return the saved split.

        The directory appears complete or not at all. An existing split directory is replaced only with
        ``overwrite=True``; a non-empty directory that is not a split is never replaced.
        """
        from recsim_personas.data.recbole_export import export_recbole

        out = Path(out)
        _check_writable(out, overwrite)
        with atomic_dir(out) as tmp:
            for name in TABLES:
                getattr(self, name).to_parquet(tmp / f"{name}.parquet", index=False)
            export_recbole(self, tmp / "recbole")
            files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = dict(self.manifest)
            manifest["files"] = files
            manifest["split_id"] = _split_id(manifest)
            write_json(tmp / MANIFEST, manifest)
        logger.info("wrote split %s to %s", manifest["split_id"][:12], out)
        return dataclasses.replace(self, manifest=manifest, path=out)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Split:
        """Load and verify a split directory.

        Raises:
            ArtifactError: no manifest, another format/version, a missing file, or a file whose sha256 does
                not match the manifest (edited or corrupted).
        """
        path = Path(path)
        manifest = read_manifest(path)
        unlisted = [f"{t}.parquet" for t in TABLES if f"{t}.parquet" not in manifest["files"]]
        if unlisted:
            raise ArtifactError(
                f"split {str(path)!r}: its manifest does not list {', '.join(unlisted)} (made by another"
                " version?). Fix: prepare the split again with `recsim-personas data prepare --overwrite`."
            )
        for rel, digest in manifest["files"].items():
            f = path / rel
            if not f.is_file():
                raise ArtifactError(
                    f"split {str(path)!r} is incomplete: {rel} is listed in {MANIFEST} but missing."
                    " Fix: prepare the split again with `recsim-personas data prepare`."
                )
            if sha256_file(f) != digest:
                raise ArtifactError(
                    f"split {str(path)!r}: {rel} does not match its manifest (sha256 differs); it was edited"
                    " or corrupted after the split was made. Fix: prepare the split again."
                )
        if manifest.get("split_id") != _split_id(manifest):
            raise ArtifactError(f"split {str(path)!r}: {MANIFEST} was edited (split_id does not match its content).")
        tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in TABLES}
        for name in ("items",):
            for col in ("genres", "cast", "director"):
                if col in tables[name]:
                    tables[name][col] = tables[name][col].map(_as_list)
        return cls(config=ProtocolConfig.from_dict(manifest["config"]), manifest=manifest, path=path, **tables)


def _as_list(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in value]


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and sanity-check a split's ``manifest.json`` (without hashing the files)."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        hint = "the directory does not exist" if not path.exists() else f"no {MANIFEST} in it"
        raise ArtifactError(
            f"{str(path)!r} is not a split ({hint}). Fix: create one with"
            " `recsim-personas data prepare --dataset ml-100k --out DIR`."
        )
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{mf}: not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
    if manifest.get("format") != SPLIT_FORMAT:
        raise ArtifactError(f"{mf}: format is {manifest.get('format')!r}, expected {SPLIT_FORMAT!r}.")
    if manifest.get("format_version") != SPLIT_FORMAT_VERSION:
        raise ArtifactError(
            f"{mf}: format_version {manifest.get('format_version')!r} is not supported (expected"
            f" {SPLIT_FORMAT_VERSION}). Fix: prepare the split again with this version."
        )
    for key in ("config", "source", "files", "counts"):
        if key not in manifest:
            raise ArtifactError(f"{mf}: missing the {key!r} section.")
    return manifest


def _split_id(manifest: dict[str, Any]) -> str:
    core = {k: manifest[k] for k in ("config", "source", "files")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def _check_writable(out: Path, overwrite: bool, reason: str = "made with different data or settings") -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ArtifactError(f"{str(out)!r} exists and is not a directory. Fix: choose another --out.")
    if not any(out.iterdir()):
        return
    if not (out / MANIFEST).is_file():
        raise ArtifactError(
            f"{str(out)!r} is a non-empty directory that is not a split; refusing to replace it. Fix: choose"
            " another --out."
        )
    if not overwrite:
        raise ArtifactError(
            f"{str(out)!r} already holds a split {reason}. Fix: choose another"
            " --out, or pass --overwrite to replace it."
        )


# ------------------------------------------------------------------------------------------ protocol
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
        raise ConfigError(f"config.dataset is {config.dataset!r} but the data given is {dataset.name!r}.")
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
        items[col] = items[col].map(_as_list)
    items["hist_avg_rating"] = items["item_id"].map(stats["mean"]).astype("float64")
    items["hist_n_ratings"] = items["item_id"].map(stats["size"]).fillna(0).astype("int64")

    users = dataset.users[dataset.users["user_id"].isin(selected)].sort_values("user_id").reset_index(drop=True)
    users["n_train"] = users["user_id"].map(train.groupby("user_id").size()).astype("int64")
    users["n_test"] = users["user_id"].map(test.groupby("user_id").size()).astype("int64")
    users["n_ratings"] = users["n_train"] + users["n_test"]

    manifest = {
        "format": SPLIT_FORMAT,
        "format_version": SPLIT_FORMAT_VERSION,
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
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
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


def _versions() -> dict[str, str]:
    import pyarrow

    return {
        "recsim_personas": __version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
    }


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
    if (out / MANIFEST).is_file():
        try:
            existing = Split.load(out)
        except ArtifactError as exc:
            _check_writable(out, overwrite, reason=f"that cannot be loaded ({exc})")
        else:
            if existing.config == config and existing.source_hash == dataset.source_hash:
                logger.info("%s already holds this split; nothing to do", out)
                return existing, False
    return make_split(dataset, config).save(out, overwrite=overwrite), True
