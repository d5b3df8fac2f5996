"""The item catalog: item metadata + optional movie text, rendered as the paper's item description.

Description format (one paragraph)::

    The movie {title} was released in the year {year} is of {genres} genre with historical average
    rating of {x.xx}. {summary} Starring {cast}.

- ``title`` drops the trailing ``(year)`` and moves a trailing article to the front
  (``"American President, The (1995)"`` → ``"The American President"``).
- ``genres`` are joined with ``", "`` (``"Animation, Children's, Comedy"``).
- The historical average comes from the split's ``items.parquet``, which computes it **without** the
  held-out test ratings (see :mod:`recsim_personas.data.protocol`); items nobody rated outside the test
  part read "with no historical ratings".

Missing text degrades gracefully: without a year the "was released ..." clause is left out; without
genres "is of unknown genre"; without a summary the plot's first sentence is used, and without either
nothing is added; without a cast the "Starring" sentence is left out. Nothing is invented.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from recsim_personas.errors import DataFormatError, UnknownItemError

_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE_SUFFIX = re.compile(r"^(?P<body>.+), (?P<article>The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El)$")
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)")


def display_title(title: str) -> str:
    """``"American President, The (1995)"`` → ``"The American President"``."""
    body = _YEAR_SUFFIX.sub("", title).strip()
    m = _ARTICLE_SUFFIX.match(body)
    if m:
        article = m["article"]
        body = f"{article}{'' if article.endswith(chr(39)) else ' '}{m['body']}"
    return body


def render_description(
    title: str,
    year: int | None,
    genres: Iterable[str],
    hist_avg: float | None,
    summary: str | None = None,
    plot: str | None = None,
    cast: Iterable[str] = (),
    max_cast: int = 4,
) -> str:
    """Render one item description in the paper's format (see the module docstring)."""
    genres = [g for g in genres if g and g != "unknown"]
    parts = [f"The movie {display_title(title)}"]
    if year is not None and not pd.isna(year):
        parts.append(f" was released in the year {int(year)}")
    parts.append(f" is of {', '.join(genres) if genres else 'unknown'} genre")
    if hist_avg is None or pd.isna(hist_avg):
        parts.append(" with no historical ratings.")
    else:
        parts.append(f" with historical average rating of {hist_avg:.2f}.")
    text = "".join(parts)
    blurb = summary
    if not blurb and plot:
        m = _FIRST_SENTENCE.match(plot.strip())
        blurb = m.group(1) if m else plot.strip()
    if blurb:
        text += " " + blurb.strip()
    cast = [c for c in cast if c][:max_cast]
    if cast:
        text += " Starring " + ", ".join(cast) + "."
    return text


class ItemCatalog:
    """Item metadata, text and historical averages, indexed by item id.

    Build it from a split (``split.catalog()``) so the historical averages exclude the test ratings.

    Args:
        items: frame with ``item_id``, ``title``, ``year``, ``genres`` and optionally ``hist_avg_rating``,
            ``hist_n_ratings``, ``summary``, ``plot``, ``cast``, ``director``.
    """

    def __init__(self, items: pd.DataFrame) -> None:
        missing = {"item_id", "title", "year", "genres"} - set(items.columns)
        if missing:
            raise DataFormatError(
                f"item frame lacks columns {sorted(missing)}; got {list(items.columns)}. Fix: build the catalog from a"
                " split (split.catalog()) or from a frame with item_id, title, year and genres."
            )
        self._items = items.set_index("item_id", drop=False).sort_index()
        self._descriptions: dict[int, str] = {}

    @property
    def frame(self) -> pd.DataFrame:
        """The underlying item frame, indexed by ``item_id``."""
        return self._items

    @property
    def item_ids(self) -> np.ndarray:
        """All item ids, sorted. Shape (n_items,), int64."""
        return self._items.index.to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items.index

    def _get(self, row: pd.Series, column: str, default=None):
        return row[column] if column in row.index else default

    def describe(self, item_id: int) -> str:
        """The paper-style description of one item (cached)."""
        item_id = int(item_id)
        cached = self._descriptions.get(item_id)
        if cached is not None:
            return cached
        try:
            row = self._items.loc[item_id]
        except KeyError:
            raise UnknownItemError(
                f"item_id {item_id} is not in the catalog ({len(self)} items, ids {int(self._items.index.min())}.."
                f"{int(self._items.index.max())}). Fix: ask for an item of this split's catalog."
            ) from None
        cast = self._get(row, "cast")
        text = render_description(
            title=row["title"],
            year=None if pd.isna(row["year"]) else int(row["year"]),
            genres=list(row["genres"]),
            hist_avg=self._get(row, "hist_avg_rating"),
            summary=self._get(row, "summary"),
            plot=self._get(row, "plot"),
            cast=list(cast) if cast is not None and not isinstance(cast, float) else [],
        )
        self._descriptions[item_id] = text
        return text

    def describe_many(self, item_ids: Iterable[int]) -> list[str]:
        """Descriptions for several items, in order."""
        return [self.describe(i) for i in item_ids]
