"""The one artifact layer: every directory the library writes and reads back carries a ``manifest.json``.

A manifest records what the directory is (``format``, ``format_version``), what produced it (the config, the
ids of its inputs), the sha256 of each of its files, when it was written and the library versions. Every
artifact kind (protocol split, persona set, memory index, clusters, persona agents, RecBole model, ...) is an
:class:`ArtifactKind`, and one set of functions writes, reads and verifies all of them:

- :func:`write_manifest` — hashes the files, adds ``format``/``format_version``/``created_at``/``versions`` and
  writes the manifest atomically (write it *last*: an unfinished directory has no manifest);
- :func:`read_manifest` — reads and checks it; a missing, unreadable, damaged or foreign manifest is an
  :class:`~recsim_personas.errors.ArtifactError` that names the file and the fix, never a traceback;
- :func:`verify_files` — every recorded file is there and matches its sha256;
- :func:`check_input` — a recorded input id (a split id, a persona set's manifest digest) is the expected one;
- :func:`describe_differences` — which recorded settings differ from the current ones (for refusals);
- :func:`library_versions` — the versions of the libraries an artifact depends on.

Example::

    SPLIT = ArtifactKind("recsim-personas/split", 1, "protocol split",
                         "create one with `recsim-personas data prepare --dataset ml-100k --out DIR`")
    write_manifest(out, SPLIT, {"config": config.to_dict()}, files=["train.parquet", "test.parquet"])
    manifest = read_manifest(out, SPLIT, required=("config", "files"))
    verify_files(out, manifest, SPLIT)
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsim_personas import __version__
from recsim_personas._io import sha256_file, write_json
from recsim_personas.errors import ArtifactError

MANIFEST = "manifest.json"
"""File name of every artifact's manifest."""


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of artifact directory.

    Attributes:
        format: the manifest's ``format`` string, e.g. ``"recsim-personas/split"``.
        version: the ``format_version`` this library writes and reads.
        what: how messages name it, e.g. ``"protocol split"``.
        fix: how to make one, for messages, e.g. ``"create one with `recsim-personas data prepare ...`"``.
        legacy_versions: format versions also read (earlier layouts this library still understands); a
            manifest without ``format_version`` counts as version 1.
    """

    format: str
    version: int
    what: str
    fix: str
    legacy_versions: tuple[int, ...] = ()

    @property
    def readable_versions(self) -> tuple[int, ...]:
        return (*self.legacy_versions, self.version)


def library_versions(*packages: str) -> dict[str, str | None]:
    """``{"recsim_personas": ..., "python": ..., "numpy": ..., <package>: version or None, ...}``.

    Versions come from the installed distributions' metadata (``importlib.metadata``), so nothing is imported.
    """
    out: dict[str, str | None] = {"recsim_personas": __version__, "python": platform.python_version()}
    for name in ("numpy", *packages):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_digests(directory: str | os.PathLike[str], names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` of files under ``directory`` (names may hold sub-directories, ``a/b.bin``)."""
    root = Path(directory)
    out = {}
    for name in names:
        path = root / name
        if not path.is_file():
            raise ArtifactError(f"cannot record {str(path)!r} in a manifest: the file does not exist.")
        out[str(name)] = sha256_file(path)
    return out


def write_manifest(
    directory: str | os.PathLike[str],
    kind: ArtifactKind,
    body: Mapping[str, Any],
    *,
    files: Iterable[str] = (),
    libraries: Iterable[str] = (),
) -> dict[str, Any]:
    """Write ``directory/manifest.json`` atomically and return it.

    Args:
        directory: the artifact directory (its files already written).
        kind: the artifact kind.
        body: what produced it — config, input ids, counts (JSON-serialisable; must not use the reserved keys
            ``format``, ``format_version``, ``created_at`` or ``versions``; ``files`` only when ``files`` is empty).
        files: names of the files to hash into ``manifest["files"]``.
        libraries: packages whose versions to record besides recsim_personas, python and numpy.
    """
    reserved = {"format", "format_version", "created_at", "versions"} & set(body)
    if reserved:
        raise ValueError(f"manifest body uses reserved keys {sorted(reserved)}")
    files = list(files)
    manifest: dict[str, Any] = {"format": kind.format, "format_version": kind.version, **body}
    if files:
        if "files" in body:
            raise ValueError("pass the files either in body['files'] or as files=..., not both")
        manifest["files"] = file_digests(directory, files)
    manifest["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    manifest["versions"] = library_versions(*libraries)
    write_json(Path(directory) / MANIFEST, manifest)
    return manifest


def has_manifest(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds a manifest (finished artifacts do; unfinished ones do not)."""
    return (Path(directory) / MANIFEST).is_file()


def read_manifest(
    directory: str | os.PathLike[str], kind: ArtifactKind, *, required: Iterable[str] = ()
) -> dict[str, Any]:
    """Read and check ``directory/manifest.json``.

    Args:
        directory: the artifact directory.
        kind: the kind it must be.
        required: keys the manifest must have.

    Raises:
        ArtifactError: the directory or its manifest is missing (unfinished), the manifest is not readable
            UTF-8 JSON or not an object, is of another format or an unsupported version, or lacks a required
            key. Each message names the file and the fix.
    """
    path = Path(directory)
    mf = path / MANIFEST
    if not mf.is_file():
        hint = "the directory does not exist" if not path.exists() else f"it holds no {MANIFEST}: it is unfinished"
        raise ArtifactError(f"{str(path)!r} is not a {kind.what} ({hint}). Fix: {kind.fix}.")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise ArtifactError(
            f"{mf}: the manifest is damaged ({reason}{where}). Fix: {kind.fix} (the directory must be rewritten)."
        ) from exc
    except OSError as exc:
        raise ArtifactError(f"{mf}: cannot read the manifest ({exc.strerror}). Fix: check its permissions.") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(
            f"{mf}: the manifest is damaged (a JSON {type(manifest).__name__}, not an object). Fix: {kind.fix}."
        )
    if manifest.get("format") != kind.format:
        raise ArtifactError(
            f"{mf}: format is {manifest.get('format')!r}, expected {kind.format!r} — this directory is not a"
            f" {kind.what}. Fix: pass a {kind.what} directory, or {kind.fix}."
        )
    version = manifest.get("format_version", 1)
    if version not in kind.readable_versions:
        raise ArtifactError(
            f"{mf}: format_version {version!r} is not supported (this version of recsim-personas reads"
            f" {', '.join(map(str, kind.readable_versions))}). Fix: {kind.fix} with this version."
        )
    missing = [key for key in required if key not in manifest]
    if missing:
        raise ArtifactError(f"{mf}: the manifest is damaged (no {missing[0]!r} entry). Fix: {kind.fix}.")
    return manifest


def verify_files(
    directory: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    kind: ArtifactKind,
    *,
    digests: Mapping[str, str] | None = None,
    fix: str | None = None,
) -> None:
    """Check that every file the manifest records exists and matches its sha256.

    Args:
        directory: the artifact directory (file names are relative to it).
        manifest: its manifest.
        kind: its kind (for messages).
        digests: the ``{name: sha256}`` to check; default ``manifest["files"]``.
        fix: the fix to name instead of ``kind.fix``.

    Raises:
        ArtifactError: a recorded file is missing or was altered.
    """
    table = manifest.get("files") if digests is None else digests
    if not isinstance(table, Mapping):
        raise ArtifactError(
            f"{Path(directory) / MANIFEST}: the manifest is damaged (no table of file digests). Fix: {fix or kind.fix}."
        )
    for name, digest in table.items():
        f = Path(directory) / name
        if not f.is_file():
            raise ArtifactError(f"{kind.what} {str(directory)!r}: {name} is missing. Fix: {fix or kind.fix}.")
        if sha256_file(f) != digest:
            raise ArtifactError(
                f"{kind.what} {str(directory)!r}: {name} does not match its manifest (altered or partly written)."
                f" Fix: {fix or kind.fix}."
            )


def manifest_digest(directory: str | os.PathLike[str]) -> str:
    """sha256 of ``directory/manifest.json``: the id by which other artifacts record this one as their input."""
    return sha256_file(Path(directory) / MANIFEST)


def check_input(
    directory: str | os.PathLike[str],
    kind: ArtifactKind,
    name: str,
    recorded: Any,
    expected: Any,
    fix: str,
) -> None:
    """Refuse an artifact made from another input than the one given.

    Args:
        directory: the artifact directory.
        kind: its kind.
        name: what the input is, e.g. ``"split"`` or ``"persona set"``.
        recorded: the input id its manifest records.
        expected: the id of the input given now.
        fix: how to resolve it.

    Raises:
        ArtifactError: ``recorded != expected`` (the message shows both ids, shortened).
    """
    if recorded != expected:
        raise ArtifactError(
            f"{kind.what} {str(directory)!r} was made from another {name} ({_short(recorded)}, not"
            f" {_short(expected)}). Fix: {fix}."
        )


def describe_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """The settings an artifact recorded that differ from the current ones, for a refusal's message.

    Returns:
        ``"model 'a' (recorded) vs 'b' (this run); ..."`` over every key whose value differs (long strings such as
        ids shortened), or ``"no setting differs"``.
    """
    keys = [k for k in dict.fromkeys([*recorded, *current]) if recorded.get(k) != current.get(k)]
    parts = [f"{k} {_shown(recorded.get(k))} (recorded) vs {_shown(current.get(k))} (this run)" for k in keys]
    return "; ".join(parts) or "no setting differs"


def _shown(value: Any) -> str:
    return repr(_short(value)) if isinstance(value, str) else _short(value)


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text
