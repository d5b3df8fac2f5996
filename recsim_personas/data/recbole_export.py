"""RecBole atomic files written from a split — the one writer of them in the library.

RecBole reads tab-separated files whose header names each field with its type (``user_id:token``); the
dataset name is the directory's name, so ``<data_path>/<name>/`` holds ``<name>.inter`` etc. and a RecBole
config uses ``data_path=<data_path>`` and ``dataset=<name>``. Token sequences (title words, genres) are
space-separated, RecBole's default ``seq_separator``. Tabs and newlines inside text are replaced by spaces.

Two layouts:

- :func:`export_recbole` — the split's export (kept under ``recbole/`` in every split directory):
  ``.inter`` (the history a model may learn from: the train part of the sampled users plus every rating of
  the other users), ``.test.inter`` (the held-out part), ``.item``, ``.user`` (demographics of the sampled
  users; RecBole fills defaults for the others).
- :func:`write_training_files` — what a RecBole model trains on (user, item, time; each user's ratings in time
  order): for general models RecBole's benchmark files ``.train.inter`` (the history, less an optional
  validation slice), ``.valid.inter`` (that slice: each sampled user's latest train ratings) and
  ``.test.inter`` (the split's test part); for sequential models one ``.inter`` file, the history (RecBole
  itself holds out each user's last item for validation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split

RECBOLE_DATASET = "recbole"
INTER_FIELDS = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
"""Fields of the export's interaction files and their RecBole types."""
TRAINING_FIELDS = {"user_id": "token", "item_id": "token", "timestamp": "float"}
"""Fields of a model's training files (RecBole's ``load_col`` reads these)."""


def _clean(text: pd.Series) -> pd.Series:
    return text.astype(str).str.replace(r"[\t\r\n]+", " ", regex=True)


def write_atomic_file(frame: pd.DataFrame, fields: Mapping[str, str], path: str | os.PathLike[str]) -> Path:
    """Write ``frame``'s columns ``fields`` (name → RecBole type) as one RecBole atomic file; returns its path."""
    path = Path(path)
    out = frame[list(fields)].copy()
    out.columns = [f"{name}:{kind}" for name, kind in fields.items()]
    out.to_csv(path, sep="\t", index=False, lineterminator="\n")
    return path


def export_recbole(split: Split, out_dir: str | Path, name: str = RECBOLE_DATASET) -> dict[str, Path]:
    """Write the split as RecBole atomic files into ``out_dir`` and return their paths by suffix."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "inter": write_atomic_file(split.history(), INTER_FIELDS, out_dir / f"{name}.inter"),
        "test.inter": write_atomic_file(split.test, INTER_FIELDS, out_dir / f"{name}.test.inter"),
    }
    items = split.items
    item_frame = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "movie_title": _clean(items["title"]),
            "release_year": items["year"].astype("Int64").astype(str).replace("<NA>", ""),
            "genre": items["genres"].map(lambda g: " ".join(x.replace(" ", "_") for x in g)),
        }
    )
    item_fields = {"item_id": "token", "movie_title": "token_seq", "release_year": "token", "genre": "token_seq"}
    paths["item"] = write_atomic_file(item_frame, item_fields, out_dir / f"{name}.item")
    users = split.users
    user_frame = pd.DataFrame(
        {
            "user_id": users["user_id"],
            "age": users["age"],
            "gender": users["gender"],
            "occupation": _clean(users["occupation"]).str.replace(" ", "_"),
            "zip_code": _clean(users["zip_code"]),
        }
    )
    user_fields = {"user_id": "token", "age": "token", "gender": "token", "occupation": "token", "zip_code": "token"}
    paths["user"] = write_atomic_file(user_frame, user_fields, out_dir / f"{name}.user")
    return paths


def _time_ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(TRAINING_FIELDS)].sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")


def validation_mask(history: pd.DataFrame, users: np.ndarray, share: float) -> np.ndarray:
    """Which rows of a time-ordered ``history`` form the validation slice: bool (len(history),).

    Per user in ``users`` (the split's sampled users), their latest ``ceil(share * n)`` ratings of ``n``,
    keeping at least one in training (a user with one rating keeps it); other users' ratings all train.
    """
    by_user = history.groupby("user_id", sort=False)["item_id"]
    from_end = by_user.cumcount(ascending=False).to_numpy()  # 0 = the user's latest rating
    n = by_user.transform("size").to_numpy()
    n_valid = np.minimum(np.ceil(share * n - 1e-9).astype(np.int64), n - 1)
    return history["user_id"].isin(users).to_numpy() & (from_end < n_valid)


def write_training_files(
    split: Split,
    data_path: str | os.PathLike[str],
    name: str,
    *,
    sequential: bool,
    valid_share: float | None = None,
) -> Path:
    """Write the RecBole dataset a model trains on into ``data_path/name/`` (layouts: see the module doc).

    Args:
        split: the split.
        data_path: RecBole's ``data_path``.
        name: the dataset name (RecBole's ``dataset``).
        sequential: one time-ordered ``.inter`` file (sequential models) instead of benchmark files.
        valid_share: general models only: hold out each sampled user's latest ``valid_share`` of train ratings
            as ``.valid.inter`` (see :func:`validation_mask`); ``None``: an empty validation file.

    Returns:
        ``data_path``.
    """
    root = Path(data_path) / name
    root.mkdir(parents=True, exist_ok=True)
    history = _time_ordered(split.history())
    if sequential:
        write_atomic_file(history, TRAINING_FIELDS, root / f"{name}.inter")
        return Path(data_path)
    valid = np.zeros(len(history), dtype=bool)
    if valid_share is not None:
        if not 0 < valid_share < 1 or not math.isfinite(valid_share):
            raise ConfigError(f"valid_share must be a number in (0, 1), got {valid_share!r}. Fix: pass e.g. 0.1.")
        valid = validation_mask(history, split.user_ids, valid_share)
    write_atomic_file(history[~valid], TRAINING_FIELDS, root / f"{name}.train.inter")
    write_atomic_file(history[valid], TRAINING_FIELDS, root / f"{name}.valid.inter")
    write_atomic_file(_time_ordered(split.test), TRAINING_FIELDS, root / f"{name}.test.inter")
    return Path(data_path)
