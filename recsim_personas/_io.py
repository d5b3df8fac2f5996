"""Small file-system helpers shared by every stage: atomic writes, hashing, JSON.

An atomic write first builds its result in a hidden temporary entry beside the target and then renames it
onto the target. The temporary entry is named after the target and after its writer —
``.NAME.HOST-PID-RANDOM.tmp`` (``HOST`` is a short hash of the host name) — so that when a writer is killed
(``SIGKILL``, a power cut) and leaves it behind, the next atomic write of the same target can tell that the
writer is gone and remove it (:func:`remove_leftovers`). An entry of a writer that is still running, of
another host, or of an older version of this library (no writer in its name) is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_PID_REUSE_SLACK_S = 2.0  # clock disagreement allowed between a process's start time and a file's mtime


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------- temporary entries
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _writer_prefix(target: Path) -> str:
    """``.NAME.HOST-PID-``: the prefix of this process's temporary entries for ``target``."""
    return f".{target.name}.{_host_tag()}-{os.getpid()}-"


def _leftover_pattern(target: Path) -> re.Pattern[str]:
    """Temporary entries (``.tmp``) and replaced copies (``.old``) of ``target`` that name their writer."""
    return re.compile(rf"\.{re.escape(target.name)}\.(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)(?:-[A-Za-z0-9_]+\.tmp|\.old)")


def _writer_is_gone(pid: int, made_by_writer: Path | None) -> bool:
    """Whether process ``pid`` of this host no longer runs.

    A zombie counts as gone; so does a process that started after ``made_by_writer`` (an entry the writer
    created, so never older than the writer) was last modified: the pid was reused by a later process. When
    in doubt (no permission to look), the writer counts as running.
    """
    import psutil

    if pid == os.getpid():
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        if made_by_writer is None:
            return False
        return process.create_time() > made_by_writer.lstat().st_mtime + _PID_REUSE_SLACK_S
    except psutil.NoSuchProcess:
        return True
    except (psutil.AccessDenied, OSError):
        return False


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def remove_leftovers(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writers of ``target`` left beside it; return the entries removed.

    Only entries whose name says they were made by a process of this host that no longer runs are touched.
    A replaced copy (``.NAME.HOST-PID.old``, the previous contents of a directory that was being swapped
    out) is removed once ``target`` exists again; while ``target`` is missing it is the only complete copy,
    so it is renamed back onto ``target`` instead. Nothing that holds the only copy of finished data is ever
    deleted.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern, host = _leftover_pattern(target), _host_tag()
    candidates = [
        (parent / e.name, int(m["pid"]))
        for e in os.scandir(parent)
        if (m := pattern.fullmatch(e.name)) and m["host"] == host
    ]
    removed: list[Path] = []
    # replaced copies first: one may have to be restored before the temporary entries are judged
    for entry, pid in sorted(candidates, key=lambda c: not c[0].name.endswith(".old")):
        replaced_copy = entry.name.endswith(".old")  # renamed, not made, by the writer: its mtime says nothing
        if not _writer_is_gone(pid, None if replaced_copy else entry):
            continue
        if replaced_copy and not os.path.lexists(target):
            with contextlib.suppress(OSError):  # another writer may have just written target: keep both
                os.replace(entry, target)
                logger.warning("restored %s from %s, left by a writer (pid %d) killed mid-swap", target, entry, pid)
            continue
        _remove(entry)
        logger.info("removed %s, left by a writer (pid %d) that no longer runs", entry, pid)
        removed.append(entry)
    return removed


# ---------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    If the body raises, the temporary file is removed and ``target`` is left untouched, so a reader
    never sees a half-written file. Leftovers of killed earlier writers of ``target`` are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=_writer_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def scratch_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``, always deleted afterwards.

    For work whose result the caller moves onto ``target`` itself (e.g. an extracted download). Leftovers of
    killed earlier writers of ``target`` are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=_writer_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success it replaces ``target``.

    ``target`` must not exist, or be a directory the caller agreed to replace. On failure the temporary
    directory is deleted and ``target`` keeps its previous contents. Leftovers of killed earlier writers of
    ``target`` are removed first (see :func:`remove_leftovers`).
    """
    target = Path(target)
    with scratch_dir(target) as tmp:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            old = target.with_name(f".{target.name}.{_host_tag()}-{os.getpid()}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
