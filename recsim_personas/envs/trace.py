"""Traces of simulated sessions: what a sample of users was shown, what they thought of it, what they did.

A :class:`Tracer` attached to a :class:`~recsim_personas.envs.model.Population` (``population.tracer``) records,
for a seeded sample of ``TraceConfig.users`` users, every page of their sessions:

- ``shown`` — one row per shown movie: ``user_id``, ``session`` (the user's session number in this simulation,
  from 1), ``page`` (from 1), ``position`` (from 0), ``item_id``, ``seen`` (already seen: not asked, not
  watched), ``expected`` (the rater's expected rating), ``p1`` … ``p5`` (its rating distribution),
  ``p_watch`` (the chance the user watches it), ``watched``, ``rating`` (0 unless watched);
- ``pages`` — one row per page: ``user_id``, ``session``, ``page``, ``day``, ``minute`` (of the simulated clock),
  ``watched`` (movies watched on the page), ``likes``, ``page_satisfaction``, ``satisfaction`` (of the session
  after the page), ``exit`` (``"continued"``, ``"left"`` — the user chose to leave — or ``"page limit"``).

Traces are bounded: at most ``TraceConfig.max_pages`` pages are kept (later pages of traced users are counted
in ``dropped_pages``, not stored). :func:`write_trace` saves one simulation's trace as ``shown.parquet`` and
``pages.parquet`` with a manifest (what was simulated, the sample, the counts); :func:`read_trace` loads it back.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.artifacts import ArtifactKind, read_manifest, verify_files, write_manifest
from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.envs.reaction import Reaction
    from recsim_personas.envs.world import World

TRACE = ArtifactKind(
    format="recsim-personas/trace",
    version=1,
    what="simulation trace",
    fix="record one with `recsim-personas simulate --trace` or `benchmark --trace`",
)
SHOWN_FILE, PAGES_FILE = "shown.parquet", "pages.parquet"
EXITS = ("continued", "left", "page limit")
SHOWN_COLUMNS = ("user_id", "session", "page", "position", "item_id", "seen", "expected", "p_watch", "watched",
                 "rating", "p1", "p2", "p3", "p4", "p5")  # fmt: skip
PAGE_COLUMNS = ("user_id", "session", "page", "day", "minute", "watched", "likes", "page_satisfaction",
                "satisfaction", "exit")  # fmt: skip


@dataclass(frozen=True)
class TraceConfig:
    """Which users a trace follows and how much it keeps.

    Attributes:
        users: how many users to trace (a seeded sample of the population; all when it has fewer).
        max_pages: at most this many pages are stored (later pages are counted, not stored).
        seed: seed of the user sample.
    """

    users: int = 50
    max_pages: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("users", 1), ("max_pages", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ConfigError(f"TraceConfig.{name} must be an integer >= {low}, got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Tracer:
    """Records the pages of a sample of a population's users (see the module docstring).

    Args:
        world: the population's world.
        config: the sample and the bound.
    """

    def __init__(self, world: World, config: TraceConfig | None = None) -> None:
        self.config = config or TraceConfig()
        n = world.n_users
        rows = np.random.default_rng(self.config.seed).choice(n, size=min(self.config.users, n), replace=False)
        self.rows = np.sort(rows)
        self.traced = np.zeros(n, dtype=bool)
        self.traced[self.rows] = True
        self.user_ids = world.user_ids
        self.item_ids = world.item_ids
        self.sessions = np.zeros(n, dtype=np.int64)
        self.pages_kept = 0
        self.dropped_pages = 0
        self._shown: list[dict[str, np.ndarray]] = []
        self._pages: list[dict[str, np.ndarray]] = []

    def record(self, day: int, minute: float, r: Reaction, like_threshold: int) -> None:
        """Book one page of sessions (the traced users among ``r.users``)."""
        sel = np.flatnonzero(self.traced[r.users])
        if sel.size == 0:
            return
        users = r.users[sel]
        first = r.pages[sel] == 1
        self.sessions[users[first]] += 1  # a session's first page opens it
        room = self.config.max_pages - self.pages_kept
        if room < sel.size:
            self.dropped_pages += sel.size - max(room, 0)
            sel, users = sel[: max(room, 0)], users[: max(room, 0)]
            if sel.size == 0:
                return
        self.pages_kept += sel.size
        k = r.slates.shape[1]
        session, page = self.sessions[users], r.pages[sel]
        watched, ratings, asked = r.watched[sel], r.ratings[sel], r.asked[sel]
        dist, p_watch = np.zeros((sel.size, k, 5)), np.zeros((sel.size, k))  # 0 for the seen movies
        if asked.any():  # the reaction holds the asked pairs only, in row-major order: place the traced rows'
            pos = (np.cumsum(r.asked.ravel()) - 1).reshape(r.asked.shape)[sel][asked]
            dist[asked], p_watch[asked] = r.dist[pos], r.p_watch[pos]
        shown = {
            "user_id": np.repeat(self.user_ids[users], k),
            "session": np.repeat(session, k),
            "page": np.repeat(page, k),
            "position": np.tile(np.arange(k, dtype=np.int64), sel.size),
            "item_id": self.item_ids[r.slates[sel]].reshape(-1),
            "seen": ~asked.reshape(-1),
            "expected": r.expected[sel].reshape(-1),
            "p_watch": p_watch.reshape(-1),
            "watched": watched.reshape(-1),
            "rating": ratings.reshape(-1),
        }
        for level in range(5):
            shown[f"p{level + 1}"] = dist[:, :, level].reshape(-1)
        self._shown.append(shown)
        exit_code = np.where(r.truncated[sel], 2, r.exited[sel].astype(np.int64))  # exclusive: see Reaction
        self._pages.append(
            {
                "user_id": self.user_ids[users],
                "session": session,
                "page": page,
                "day": np.full(sel.size, day, dtype=np.int64),
                "minute": np.full(sel.size, minute, dtype=np.float64),
                "watched": watched.sum(axis=1).astype(np.int64),
                "likes": (watched & (ratings >= like_threshold)).sum(axis=1).astype(np.int64),
                "page_satisfaction": r.page_satisfaction[sel],
                "satisfaction": r.satisfaction[sel],
                "exit": np.asarray(EXITS, dtype=object)[exit_code],
            }
        )

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(shown, pages)`` as DataFrames (columns of the module docstring), in recording order."""
        import pandas as pd

        def frame(parts: list[dict[str, np.ndarray]], columns: tuple[str, ...]) -> pd.DataFrame:
            return pd.DataFrame({c: np.concatenate([p[c] for p in parts]) if parts else [] for c in columns})

        return frame(self._shown, SHOWN_COLUMNS), frame(self._pages, PAGE_COLUMNS)

    def result(self) -> TraceRecord:
        """What was recorded, detached from the population (picklable: Ray workers send it back)."""
        shown, pages = self.frames()
        return TraceRecord(
            shown=shown,
            pages=pages,
            users=[int(u) for u in self.user_ids[self.rows]],
            config=self.config.to_dict(),
            dropped_pages=self.dropped_pages,
        )


@dataclass(frozen=True, eq=False)
class TraceRecord:
    """One simulation's trace: the ``shown`` and ``pages`` frames, the traced ``users`` (ids), the ``config``
    (:class:`TraceConfig` as a dict) and the pages not stored (``dropped_pages``)."""

    shown: pd.DataFrame
    pages: pd.DataFrame
    users: list[int]
    config: dict[str, Any]
    dropped_pages: int = 0


def trace_dir_name(policy: str) -> str:
    """A directory name for a policy's traces: ``recbole:SASRec`` → ``recbole-SASRec``, ``rl:runs/x/policy`` →
    ``rl-runs_x_policy`` (letters, digits, ``.``, ``_`` and ``-`` only)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", policy.replace(":", "-", 1)).strip("_") or "policy"


def write_trace(record: TraceRecord, out: str | os.PathLike[str], about: dict[str, Any]) -> Path:
    """Save a trace into the directory ``out`` (created; replaced only when it holds a trace already).

    Args:
        record: :meth:`Tracer.result` of a finished simulation.
        out: the trace directory.
        about: what was simulated (split id, rater, policy, seed, days ...), recorded in the manifest.

    Raises:
        ArtifactError: ``out`` exists and is not a trace (it is left as it was).
    """
    from recsim_personas._io import atomic_dir

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        read_manifest(out, TRACE)  # only a trace is replaced (ArtifactError otherwise; nothing touched)
    shown, pages = record.shown, record.pages
    with atomic_dir(out) as tmp:
        shown.to_parquet(tmp / SHOWN_FILE, index=False)
        pages.to_parquet(tmp / PAGES_FILE, index=False)
        body = {
            **about,
            "trace": record.config,
            "users": record.users,
            "counts": {"pages": len(pages), "shown": len(shown), "dropped_pages": record.dropped_pages},
        }
        write_manifest(tmp, TRACE, body, files=(SHOWN_FILE, PAGES_FILE), libraries=("pandas", "pyarrow"))
    return out


def read_trace(path: str | os.PathLike[str]) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """``(manifest, shown, pages)`` of a trace directory (its files checked against the manifest).

    Raises:
        ArtifactError: not a trace, or altered files.
    """
    import pandas as pd

    path = Path(path)
    manifest = read_manifest(path, TRACE, required=("files", "counts"))
    verify_files(path, manifest, TRACE)
    return manifest, pd.read_parquet(path / SHOWN_FILE), pd.read_parquet(path / PAGES_FILE)
