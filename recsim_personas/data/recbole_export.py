"""RecBole atomic files for a split: ``.inter`` (the history a model may learn from: the train part of
the sampled users plus every rating of the other users), ``.test.inter`` (the held-out part), ``.item``,
``.user`` (demographics of the sampled users; RecBole fills defaults for the others).

RecBole reads tab-separated files whose header names each field with its type (``user_id:token``). The
dataset name is the directory's name, so ``recbole/`` holds ``recbole.inter`` etc. and a RecBole config
uses ``data_path=<split>/`` and ``dataset="recbole"``. Token sequences (title words, genres) are
space-separated, RecBole's default ``seq_separator``. Tabs and newlines inside text are replaced by spaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split

RECBOLE_DATASET = "recbole"


def _clean(text: pd.Series) -> pd.Series:
    return text.astype(str).str.replace(r"[\t\r\n]+", " ", regex=True)


def _write(frame: pd.DataFrame, header: list[str], path: Path) -> None:
    frame = frame.copy()
    frame.columns = header
    frame.to_csv(path, sep="\t", index=False, lineterminator="\n")


def export_recbole(split: Split, out_dir: str | Path, name: str = RECBOLE_DATASET) -> dict[str, Path]:
    """Write the split as RecBole atomic files into ``out_dir`` and return their paths by suffix."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inter_header = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    paths = {
        "inter": out_dir / f"{name}.inter",
        "test.inter": out_dir / f"{name}.test.inter",
        "item": out_dir / f"{name}.item",
        "user": out_dir / f"{name}.user",
    }
    cols = ["user_id", "item_id", "rating", "timestamp"]
    _write(split.history()[cols], inter_header, paths["inter"])
    _write(split.test[cols], inter_header, paths["test.inter"])
    items = split.items
    _write(
        pd.DataFrame(
            {
                "item_id": items["item_id"],
                "movie_title": _clean(items["title"]),
                "release_year": items["year"].astype("Int64").astype(str).replace("<NA>", ""),
                "genre": items["genres"].map(lambda g: " ".join(x.replace(" ", "_") for x in g)),
            }
        ),
        ["item_id:token", "movie_title:token_seq", "release_year:token", "genre:token_seq"],
        paths["item"],
    )
    users = split.users
    _write(
        pd.DataFrame(
            {
                "user_id": users["user_id"],
                "age": users["age"],
                "gender": users["gender"],
                "occupation": _clean(users["occupation"]).str.replace(" ", "_"),
                "zip_code": _clean(users["zip_code"]),
            }
        ),
        ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"],
        paths["user"],
    )
    return paths
