"""A loaded MovieLens dataset: the validated frames of one GroupLens release, and the hash of its files.

:func:`load_movielens` resolves the dataset's directory (:mod:`~recsim_personas.data.datasets`), reads each
file with its validating reader (:mod:`~recsim_personas.data.readers`, which also documents the frames),
checks that every rating refers to a known item and user, and records the sha256 of every file read, so a
split made from the data can later be matched against it (:attr:`MovieLens.source_hash`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsim_personas._io import sha256_file
from recsim_personas.data import readers
from recsim_personas.data.datasets import DatasetSpec, get_spec, resolve_dataset_dir
from recsim_personas.data.implicit import implicit_ratings
from recsim_personas.data.readers import ML100K_GENRES
from recsim_personas.errors import DataFormatError, DataNotFoundError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MovieLens:
    """A loaded MovieLens dataset.

    Attributes:
        name: ``"ml-100k"`` or ``"ml-1m"``.
        root: directory the files were read from.
        ratings, items, users: typed frames (see :mod:`~recsim_personas.data.readers`).
        text: optional movie text (see :func:`~recsim_personas.data.readers.read_movie_text`), ``None`` when
            absent.
        source_files: sha256 of every file read, by file name.
    """

    name: str
    root: Path
    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    text: pd.DataFrame | None = None
    source_files: dict[str, str] = field(default_factory=dict)

    @property
    def source_hash(self) -> str:
        """A sha256 over the hashes of the files read: identifies the exact source data."""
        h = hashlib.sha256()
        for name in sorted(self.source_files):
            h.update(f"{name}:{self.source_files[name]}\n".encode())
        return h.hexdigest()


def load_movielens(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    text: bool | str | os.PathLike[str] = True,
) -> MovieLens:
    """Load a MovieLens dataset, resolving (and if needed downloading) its files.

    Args:
        name: ``"ml-100k"`` or ``"ml-1m"``.
        data_dir: explicit directory; see :func:`~recsim_personas.data.datasets.resolve_dataset_dir`.
        download: allow a download when no local copy exists.
        text: ``True`` to read ``movie_text.jsonl`` from the dataset directory when it is there,
            ``False`` to skip it, or a path to a text file elsewhere (which must exist).

    Raises:
        ConfigError, DataNotFoundError, DownloadError, DataFormatError.
    """
    spec = get_spec(name)
    root = resolve_dataset_dir(name, data_dir, download=download)
    return _load_from(spec, root, text)


def _load_from(spec: DatasetSpec, root: Path, text: bool | str | os.PathLike[str]) -> MovieLens:
    files = {f: root / f for f in spec.required_files}
    if spec.name == "ml-100k":
        ratings = readers.read_ratings(files["u.data"], sep="\t")
        genre_file = root / "u.genre"
        genres = readers.read_genres_ml100k(genre_file) if genre_file.is_file() else ML100K_GENRES
        items = readers.read_items_ml100k(files["u.item"], genres)
        users = readers.read_users_ml100k(files["u.user"])
    else:  # ML-1M's files, rated or implicit
        if spec.implicit:  # (user, item) pairs only: see recsim_personas.data.implicit for the stand-in values
            source = files[spec.ratings_file] = spec.interactions_in(root) or files[spec.ratings_file]
            fallback = source.name == spec.ratings_fallback
            pairs = readers.read_ratings(source, sep="::") if fallback else readers.read_interactions(source)
            ratings = implicit_ratings(pairs)
        else:
            ratings = readers.read_ratings(files["ratings.dat"], sep="::")
        items = readers.read_items_ml1m(files[spec.items_file])
        users = readers.read_users_ml1m(files[spec.users_file])
    for frame, name, what in ((ratings, spec.ratings_file, "ratings"), (items, spec.items_file, "items"),
                              (users, spec.users_file, "users")):  # fmt: skip
        _check_not_empty(frame, files[name], what, spec)
    _check_references(ratings, items, users, files[spec.ratings_file], spec)

    text_frame = None
    if text is True:
        text_path: Path | None = root / spec.text_file
        if not text_path.is_file():
            logger.info("no %s in %s: item descriptions will have no summary or cast", spec.text_file, root)
            text_path = None
    elif text is False:
        text_path = None
    else:
        text_path = Path(text)
        if not text_path.is_file():
            raise DataNotFoundError(
                f"movie text file {str(text_path)!r} does not exist. Fix: pass the path of a movie_text.jsonl, or"
                " text=True to use the one in the dataset directory (if any)."
            )
    if text_path is not None:
        text_frame = readers.read_movie_text(text_path)
        files[text_path.name] = text_path
    return MovieLens(
        name=spec.name,
        root=root,
        ratings=ratings,
        items=items,
        users=users,
        text=text_frame,
        source_files={p.name: sha256_file(p) for p in files.values()},
    )


def _check_not_empty(frame: pd.DataFrame, path: Path, what: str, spec: DatasetSpec) -> None:
    if frame.empty:
        blank = " but for blank lines" if path.stat().st_size else ""
        raise DataFormatError(
            f"{path}: the file holds no {what} (it is empty{blank}). Fix: restore {path.name} from the GroupLens"
            f" release ({spec.url})."
        )


def _check_references(
    ratings: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, path: Path, spec: DatasetSpec
) -> None:
    for column, table, fname in (("item_id", items, spec.items_file), ("user_id", users, spec.users_file)):
        unknown = ~ratings[column].isin(table[column])
        if unknown.any():
            i = unknown.idxmax()
            raise DataFormatError(
                f"{path}: row {i + 1} rates {column} {ratings[column][i]}, which is not in {fname}"
                f" ({int(unknown.sum())} such rows). Fix: use the {fname} that belongs to this ratings file."
            )
