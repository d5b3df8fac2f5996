"""The split artifact: a protocol split's tables on disk, its manifest and its id.

A split directory holds ``train.parquet``, ``test.parquet``, ``background.parquet`` (the ratings of users
outside the sample: history that models may learn from), ``items.parquet`` (metadata, movie text, historical
averages), ``users.parquet`` (demographics of the selected users), a RecBole atomic export under ``recbole/``
and ``manifest.json``, written through the artifact layer (:mod:`recsim_personas.artifacts`): the protocol
config, the source data (dataset, hash, the sha256 of each source file), counts, the sha256 of every file of
the directory, library versions, and ``split_id``.

``split_id`` = sha256 of the JSON (sorted keys) of the manifest's ``config``, ``source`` and ``files``: it
names this exact split, and every artifact made from a split records it. :meth:`Split.load` refuses a
directory whose manifest is damaged, whose files do not match it, or whose ``split_id`` does not match its
content; :meth:`Split.check_source` refuses a split made from other data.

How the tables are made is the protocol's business (:mod:`recsim_personas.data.protocol`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas._io import atomic_dir
from recsim_personas.artifacts import (
    MANIFEST,
    ArtifactKind,
    file_digests,
    has_manifest,
    read_manifest,
    verify_files,
    write_manifest,
)
from recsim_personas.data.catalog import ItemCatalog
from recsim_personas.data.movielens import MovieLens
from recsim_personas.data.protocol_config import ProtocolConfig
from recsim_personas.errors import ArtifactError, ConfigError

logger = logging.getLogger(__name__)

SPLIT = ArtifactKind(
    format="recsim-personas/split",
    version=1,
    what="split",
    fix="run `recsim-personas data prepare --dataset ml-100k --out DIR`, with --overwrite to replace a damaged split",
)
"""The split artifact kind (its ``format`` string and version are those of every split written so far)."""

TABLES = ("train", "test", "background", "items", "users")
"""The tables of a split, each saved as ``<name>.parquet``."""

SECTIONS = ("config", "source", "files", "counts")
"""The manifest sections a split's manifest must hold (each a JSON object), besides ``split_id``."""

LIBRARIES = ("pandas", "pyarrow")
"""The libraries whose versions a split's manifest records (besides recsim_personas, python and numpy)."""


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
        manifest: ``config``, ``source`` (dataset, hash, source file hashes) and ``counts``; once saved also
            ``files``, ``split_id``, ``format``, ``format_version``, ``created_at`` and ``versions``.
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
            raise ArtifactError(
                "this split has not been saved yet, so it has no split_id. Fix: save it first (split.save(DIR)"
                " returns the saved split)."
            )
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
        check_replaceable(out, overwrite)
        with atomic_dir(out) as tmp:
            for name in TABLES:
                getattr(self, name).to_parquet(tmp / f"{name}.parquet", index=False)
            export_recbole(self, tmp / "recbole")
            body: dict[str, Any] = {key: self.manifest[key] for key in ("config", "source", "counts")}
            body["files"] = file_digests(tmp, sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()))
            body["split_id"] = split_id(body)
            manifest = write_manifest(tmp, SPLIT, body, libraries=LIBRARIES)
        logger.info("wrote split %s to %s", manifest["split_id"][:12], out)
        return dataclasses.replace(self, manifest=manifest, path=out)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Split:
        """Load and verify a split directory.

        Raises:
            ArtifactError: no manifest, a damaged one (not JSON, not an object, a missing section), another
                format/version, a missing file, a file whose sha256 does not match the manifest (edited or
                corrupted), or a manifest edited after the split was made (its ``split_id`` does not match).
                Each message ends with the fix.
        """
        path = Path(path)
        manifest = read_split_manifest(path)
        verify_files(path, manifest, SPLIT)
        if manifest["split_id"] != split_id(manifest):
            raise ArtifactError(
                f"split {str(path)!r}: {MANIFEST} was edited (its split_id does not match its content). Fix:"
                f" {SPLIT.fix}."
            )
        try:
            config = ProtocolConfig.from_dict(manifest["config"])
        except ConfigError as exc:
            raise ArtifactError(
                f"split {str(path)!r}: its manifest's protocol config is not one this version reads ({exc}). Fix:"
                f" {SPLIT.fix}."
            ) from exc
        tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in TABLES}
        for col in ("genres", "cast", "director"):
            if col in tables["items"]:
                tables["items"][col] = tables["items"][col].map(_as_list)
        return cls(config=config, manifest=manifest, path=path, **tables)


def _as_list(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in value]


def split_id(manifest: Mapping[str, Any]) -> str:
    """The id of a split: sha256 of the JSON (sorted keys) of its manifest's ``config``, ``source`` and ``files``."""
    core = {k: manifest[k] for k in ("config", "source", "files")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def read_split_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a split's ``manifest.json`` (without hashing the files).

    Raises:
        ArtifactError: no manifest, a damaged one (not JSON, not an object, a missing or malformed section),
            another format or version, or a manifest that does not list every table.
    """
    path = Path(path)
    manifest = read_manifest(path, SPLIT, required=(*SECTIONS, "split_id"))
    mf = path / MANIFEST
    for key in SECTIONS:
        if not isinstance(manifest[key], dict):
            raise ArtifactError(
                f"{mf}: the manifest is damaged (its {key!r} entry is a JSON {type(manifest[key]).__name__}, not an"
                f" object). Fix: {SPLIT.fix}."
            )
    if not isinstance(manifest["split_id"], str):
        raise ArtifactError(f"{mf}: the manifest is damaged (its 'split_id' is not a string). Fix: {SPLIT.fix}.")
    unlisted = [f"{t}.parquet" for t in TABLES if f"{t}.parquet" not in manifest["files"]]
    if unlisted:
        raise ArtifactError(
            f"split {str(path)!r}: its manifest does not list {', '.join(unlisted)} (made by another version?)."
            f" Fix: {SPLIT.fix}."
        )
    return manifest


def check_replaceable(out: Path, overwrite: bool, reason: str = "made with different data or settings") -> None:
    """Refuse to write a split into ``out`` unless it is absent, empty, or a split the caller may replace.

    Raises:
        ArtifactError: ``out`` is a file, a non-empty directory that is not a split (never replaced), or a
            split (``reason`` says which) and ``overwrite`` is False.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ArtifactError(f"{str(out)!r} exists and is not a directory. Fix: choose another --out.")
    if not any(out.iterdir()):
        return
    if not has_manifest(out):
        raise ArtifactError(
            f"{str(out)!r} is a non-empty directory that is not a split; refusing to replace it. Fix: choose"
            " another --out."
        )
    if not overwrite:
        raise ArtifactError(
            f"{str(out)!r} already holds a split {reason}. Fix: choose another --out, or pass --overwrite to replace"
            " it."
        )


def load_split(split: str | os.PathLike[str] | Split) -> Split:
    """``split`` itself if it is a :class:`Split`, else the split saved in directory ``split`` (:meth:`Split.load`).

    Raises:
        ConfigError: ``split`` is neither a path nor a :class:`Split`.
        ArtifactError: see :meth:`Split.load`.
    """
    if isinstance(split, Split):
        return split
    if isinstance(split, str | os.PathLike):
        return Split.load(split)
    raise ConfigError(
        f"split must be a split directory or a Split, got {type(split).__name__}: {split!r}. Fix: pass the"
        " directory written by `recsim-personas data prepare`, or a Split."
    )
