"""The LLM distiller's resumable record of finished batches (``journal.jsonl``) and the lock of its directory.

The journal is append-only JSON lines. The first line is a header: the split id and the config identity
(model, batch size, word limit, prompt version). Each further line records one finished batch of one user:
``user_id``, ``batch``, ``item_ids``, ``usage`` and ``status`` — ``"ok"`` with the ``profile`` (Ms) and the
``memories`` (Ml by item id), or ``"failed"`` with the ``problems`` found in the answers.

- **Durability**: a record is written with one ``write`` and fsynced before the user's next batch is sent.
- **Torn last line**: a line without its newline at the end of the file is what a kill during a write
  leaves; it is cut off (with a warning) when the journal is opened, and that batch is asked again.
- **Damage**: any other line that is not a batch record is an error naming the file and line, never a guess.
- **Other runs**: a journal of another split or config identity is refused with the settings that differ
  (or, when asked to, discarded); one of the same split and identity is reused whatever users a run selects,
  so a larger run continues a smaller one.
- **Retries**: an ``"ok"`` record is final; a ``"failed"`` one may be followed by a later record of the same
  batch (a retry), which replaces it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsim_personas.artifacts import describe_differences
from recsim_personas.errors import ArtifactError

logger = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
LOCK = ".distill.lock"
JOURNAL_FORMAT = "recsim-personas/distill"
_RECORD_KEYS = ("user_id", "batch", "status", "usage")


class Journal:
    """The journal at ``path`` (created with ``header`` when missing).

    Args:
        path: the journal file.
        header: ``{"journal": JOURNAL_FORMAT, "split_id": ..., "config": {...}}`` of this run.
        discard_other: start a new journal instead of refusing one of another split or config.

    Raises:
        ArtifactError: the journal belongs to another run (and ``discard_other`` is false), or a line other
            than a torn last one is not a record (the message names the file and line).
    """

    def __init__(self, path: Path, header: dict[str, Any], *, discard_other: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.records: dict[tuple[int, int], dict[str, Any]] = {}
        if path.exists():
            self._load(header, discard_other)
        else:
            self._write_line(header)

    def _load(self, header: dict[str, Any], discard_other: bool) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            logger.warning(
                "journal %s: dropping a torn last line (%d bytes) left by an interrupted run",
                self.path,
                len(data) - cut,
            )
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        lines = data.decode("utf-8", errors="replace").splitlines()
        if not lines:
            self._write_line(header)
            return
        first = self._parse(lines[0], 1)
        if first.get("split_id") != header["split_id"] or first.get("config") != header["config"]:
            recorded = {"split": first.get("split_id"), **(first.get("config") or {})}
            current = {"split": header["split_id"], **header["config"]}
            if discard_other:
                logger.warning("journal %s belongs to another run (%s); starting a new one", self.path, recorded)
                self.path.unlink()
                self._write_line(header)
                return
            raise ArtifactError(
                f"{self.path} is the journal of another run: {describe_differences(recorded, current)}. Fix: use"
                " another --out, or pass --overwrite to discard it (its answers are then asked again)."
            )
        for n, line in enumerate(lines[1:], start=2):
            rec = self._parse(line, n)
            missing = [k for k in _RECORD_KEYS if k not in rec]
            if missing or rec["status"] not in ("ok", "failed"):
                what = f"no {missing[0]!r}" if missing else f"status {rec['status']!r}"
                raise self._damaged(n, f"a record with {what}")
            key = (int(rec["user_id"]), int(rec["batch"]))
            previous = self.records.get(key)
            if previous is not None and previous["status"] == "ok":
                logger.warning("journal %s:%d repeats finished batch %s; keeping the first", self.path, n, key)
                continue
            self.records[key] = rec

    def _parse(self, line: str, n: int) -> dict[str, Any]:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise self._damaged(n, f"not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise self._damaged(n, f"a JSON {type(obj).__name__}, not an object")
        return obj

    def _damaged(self, n: int, what: str) -> ArtifactError:
        fix = (
            "the file is not a distillation journal; use another --out"
            if n == 1
            else f"delete line {n} (that batch is asked again on the next run), or pass --overwrite to start over"
        )
        return ArtifactError(f"{self.path}:{n}: expected a journal record, got {what}. Fix: {fix}.")

    def _write_line(self, obj: dict[str, Any]) -> None:
        line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def append(self, rec: dict[str, Any]) -> None:
        """Record a finished batch (ignored if that batch is already recorded as ``"ok"``)."""
        key = (int(rec["user_id"]), int(rec["batch"]))
        with self._lock:
            previous = self.records.get(key)
            if previous is not None and previous["status"] == "ok":
                return
            self._write_line(rec)
            self.records[key] = rec

    def done(self, user_id: int, batch: int) -> dict[str, Any] | None:
        """The record of a batch, or ``None`` when it has none."""
        return self.records.get((user_id, batch))


@contextlib.contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold the directory's lock file for one run; a second run in the same directory is refused."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtifactError(
                f"another distillation is running in {str(directory)!r}. Fix: wait for it, or use another --out."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


__all__ = ["JOURNAL", "JOURNAL_FORMAT", "Journal", "run_lock"]
