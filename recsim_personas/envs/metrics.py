"""What a population records per simulated day, and the totals over a run.

:class:`DayStats` counts the events of the current day (a session, a page, an exit is booked on the day
during which it happens); :func:`reporters` gives the Mesa ``DataCollector`` one model reporter per column of
:data:`REPORTED`; :func:`summarise` turns the collected rows into the per-day table and its totals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class DayStats:
    """Counters of one day (a new one every day); ``day`` is its number (0 = before the first day)."""

    day: int = 0
    sessions: int = 0
    pages: int = 0
    items_shown: int = 0
    items_watched: int = 0
    rating_sum: int = 0
    likes: int = 0
    early_exits: int = 0
    page_limit: int = 0
    unsatisfied: int = 0
    abandoned: int = 0

    @property
    def mean_rating(self) -> float:
        """Mean rating of today's watched items (NaN when nothing was watched)."""
        return self.rating_sum / self.items_watched if self.items_watched else math.nan


REPORTED = (
    "sessions",
    "pages",
    "items_shown",
    "items_watched",
    "mean_rating",
    "likes",
    "early_exits",
    "page_limit",
    "unsatisfied",
    "churned_users",
)
"""The DataCollector's columns (besides ``day``), in order."""

_COUNTS = ("sessions", "pages", "items_shown", "items_watched", "likes", "early_exits", "page_limit")


def reporters(model: Any) -> dict[str, Callable[[Any], Any]]:
    """Model reporters for ``mesa.DataCollector``: ``day`` and every column of :data:`REPORTED`.

    ``model`` needs ``day_stats`` (:class:`DayStats`, the day being closed) and ``churned_users()``.
    """
    out: dict[str, Callable[[Any], Any]] = {"day": lambda m: m.day_stats.day}
    for name in REPORTED:
        if name == "churned_users":
            out[name] = lambda m: m.churned_users()
        else:
            out[name] = lambda m, name=name: getattr(m.day_stats, name)
    return out


def summarise(model_vars: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The collected rows and totals over them.

    Args:
        model_vars: the DataCollector's ``model_vars`` (column → values, one per collected day).

    Returns:
        ``{"days": [{"day": 1, "sessions": ..., ...}, ...], "totals": {...}}``; totals sum the counts,
        average the rating over all watched items and take the last day's ``churned_users``.
    """
    n = len(model_vars.get("day", []))
    days = [{name: _plain(model_vars[name][i]) for name in ("day", *REPORTED)} for i in range(n)]
    totals: dict[str, Any] = {c: int(sum(d[c] for d in days)) for c in (*_COUNTS, "unsatisfied")}
    rating_sum = sum(d["mean_rating"] * d["items_watched"] for d in days if d["items_watched"])
    totals["days"] = n
    totals["mean_rating"] = rating_sum / totals["items_watched"] if totals["items_watched"] else None
    totals["watch_rate"] = totals["items_watched"] / totals["items_shown"] if totals["items_shown"] else None
    totals["pages_per_session"] = totals["pages"] / totals["sessions"] if totals["sessions"] else None
    totals["churned_users"] = days[-1]["churned_users"] if days else 0
    return {"days": days, "totals": totals}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
