"""Atomic writes and the removal of what killed writers left behind, with real processes killed by SIGKILL.

A writer runs in a child process, reports on its stdout the temporary entry it is writing and then blocks
reading its stdin; the test reads that line (so it knows the entry exists), then kills the child or keeps it
running. Nothing waits on a clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from recsim_personas._io import atomic_dir, atomic_path, atomic_write_text, remove_leftovers

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import os, sys
from pathlib import Path
from recsim_personas._io import atomic_dir, atomic_path

target = Path(sys.argv[2])
if sys.argv[1] == "dir":
    with atomic_dir(target) as tmp:
        (tmp / "part.txt").write_text("half")
        print(tmp, flush=True)
        sys.stdin.read()
elif sys.argv[1] == "file":
    with atomic_path(target) as tmp:
        tmp.write_text("half")
        print(tmp, flush=True)
        sys.stdin.read()
else:  # "swap": stop between moving the old directory aside and moving the new one in
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            print(dst, flush=True)
            sys.stdin.read()

    os.replace = replace
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
"""


@contextmanager
def writer(mode: str, target: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A child process in the middle of an atomic write of ``target``; yields it and the entry it reported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), mode, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline().strip()  # blocks until the child has made its entry
        assert line, f"the writer exited early with status {proc.wait()}"
        yield proc, Path(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped: the pid no longer runs


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("mode", ["dir", "file"])
def test_a_killed_writers_leftover_is_removed_by_the_next_write(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "artifact"
    with writer(mode, target) as (proc, entry):
        assert entry.parent == tmp_path and entry.exists()
        kill(proc)
    assert entry.exists() and not target.exists()  # what the killed run left behind

    if mode == "dir":
        with atomic_dir(target) as tmp:
            (tmp / "done.txt").write_text("done")
    else:
        atomic_write_text(target, "done")
    assert not entry.exists()
    assert hidden(tmp_path) == []
    assert (target / "done.txt" if mode == "dir" else target).read_text() == "done"


@pytest.mark.parametrize("mode", ["dir", "file"])
def test_a_running_writers_temporary_entry_is_kept(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "artifact"
    with writer(mode, target) as (proc, entry):
        assert remove_leftovers(target) == []
        atomic_write_text(tmp_path / "other", "x")  # a write of another target does not look at it either
        if mode == "dir":
            with atomic_dir(target) as tmp:
                (tmp / "mine.txt").write_text("mine")
        else:
            atomic_write_text(target, "mine")
        assert entry.exists() and proc.poll() is None
        assert (entry / "part.txt" if mode == "dir" else entry).read_text() == "half"


def test_a_writer_killed_mid_swap_gets_the_previous_contents_back(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("finished earlier")
    with writer("swap", target) as (proc, moved_aside):
        assert not target.exists() and (moved_aside / "old.txt").is_file()
        kill(proc)
    # the previous, finished contents are the only complete copy: restored, never deleted
    removed = remove_leftovers(target)
    assert [p.suffix for p in removed] == [".tmp"]  # only the killed writer's unfinished directory
    assert (target / "old.txt").read_text() == "finished earlier"
    assert hidden(tmp_path) == []


def test_entries_that_do_not_name_a_dead_writer_of_this_host_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    with writer("dir", target) as (proc, entry):
        kill(proc)
    host_pid = entry.name.split(".")[2].rsplit("-", 1)[0]  # ".artifact.HOST-PID-RANDOM.tmp"
    foreign = [
        tmp_path / ".artifact.abc123xy.tmp",  # an older version's name: its writer is unknown
        tmp_path / f".artifact.{'0' * 8}-{host_pid.split('-')[1]}-x.tmp",  # another host's
        tmp_path / f".other.{host_pid}-x.tmp",  # another target's
    ]
    for path in foreign:
        path.mkdir()
    assert remove_leftovers(target) == [entry]
    assert all(path.is_dir() for path in foreign)


def test_a_reused_pid_does_not_keep_a_leftover_forever(tmp_path: Path) -> None:
    import psutil

    # the dead writer's pid now belongs to a running process: the leftover goes once it is older than that process
    target = tmp_path / "artifact"
    with writer("file", target) as (proc, entry):
        kill(proc)
    with writer("file", tmp_path / "unrelated") as (live, _):
        reused = entry.rename(tmp_path / entry.name.replace(f"-{proc.pid}-", f"-{live.pid}-"))
        started = psutil.Process(live.pid).create_time()
        os.utime(reused, (started + 60, started + 60))  # written after the process started: its own entry
        assert remove_leftovers(target) == []
        os.utime(reused, (started - 3600, started - 3600))  # older than the process: an earlier owner's
        assert remove_leftovers(target) == [reused]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "x").write_text("x")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "file") as tmp:
        tmp.write_text("x")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]
    assert (target / "keep.txt").read_text() == "keep"
