"""Run a distiller on a split and write the persona set, idempotently and without clobbering."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from recsim_personas.data.protocol import Split
from recsim_personas.errors import ArtifactError
from recsim_personas.personas.store import (
    MANIFEST,
    Persona,
    PersonaSet,
    load_persona_set,
    read_persona_manifest,
    write_persona_set,
)

logger = logging.getLogger(__name__)

_OWNED = ("personas.jsonl", "memories.parquet", MANIFEST, "journal.jsonl", ".distill.lock")
_OWNED_DIRS = ("clusters", "memory")


class Distiller(Protocol):
    """Anything that turns a split into personas (Ms) and memories (Ml)."""

    name: str

    def config(self) -> dict[str, Any]: ...


def _run(
    distiller: Any, split: Split, out: Path, user_ids: list[int] | None, progress: bool
) -> tuple[list[Persona], pd.DataFrame, dict[str, Any]]:
    if distiller.name == "stats":
        return distiller.distill(split, user_ids=user_ids, progress=progress)
    return distiller.distill(split, out, user_ids=user_ids, progress=progress)


def distill_personas(
    split: Split,
    out: str | os.PathLike[str],
    distiller: Any,
    *,
    user_ids: list[int] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> tuple[PersonaSet, bool]:
    """Distil personas for ``split`` into ``out``.

    Returns:
        (persona_set, created): ``created`` is False when ``out`` already held a finished persona set for
        this split and distiller config (then nothing is done).

    Raises:
        ArtifactError: ``out`` holds personas of another split or config (pass ``overwrite``), or is a
            non-empty directory that is not a persona directory.
    """
    out = Path(out)
    config = {**distiller.config(), "users": None if user_ids is None else sorted(int(u) for u in user_ids)}
    manifest = read_persona_manifest(out) if out.is_dir() else None
    if manifest is not None:
        if manifest["split_id"] == split.split_id and manifest["distiller"] == config:
            logger.info("%s already holds these personas; nothing to do", out)
            return load_persona_set(out, split_id=split.split_id), False
        if not overwrite:
            raise ArtifactError(
                f"{str(out)!r} holds personas of split {manifest['split_id'][:12]}… made with"
                f" {manifest['distiller'].get('distiller')!r}; this run is split {split.split_id[:12]}… with"
                f" {config.get('distiller')!r}. Fix: choose another --out, or pass --overwrite."
            )
    elif out.is_dir() and any(out.iterdir()) and not (out / "journal.jsonl").exists():
        raise ArtifactError(
            f"{str(out)!r} is a non-empty directory that is not a persona directory. Fix: choose another --out."
        )
    if overwrite and out.is_dir():
        for name in _OWNED:
            (out / name).unlink(missing_ok=True)
        for name in _OWNED_DIRS:
            shutil.rmtree(out / name, ignore_errors=True)
    personas, memories, usage = _run(distiller, split, out, user_ids, progress)
    return write_persona_set(out, personas, memories, split_id=split.split_id, distiller=config, usage=usage), True
