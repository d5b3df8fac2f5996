"""Run a distiller on a split and write the persona set, idempotently and without clobbering.

A personas directory belongs to one *run*: one split and one distiller config (for the LLM distiller: model,
batch size, word limit, prompt version). Within a run the selected users may change — a trial on
``--max-users 10`` grows to 11 or to every user — and the set is rewritten, reusing everything the LLM
distiller's journal holds. A directory of another run is refused with the settings that differ, unless
``overwrite`` is given.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from recsim_personas.artifacts import MANIFEST, describe_differences, has_manifest, read_manifest
from recsim_personas.data.protocol import Split
from recsim_personas.errors import ArtifactError
from recsim_personas.personas.llm_journal import JOURNAL, LOCK
from recsim_personas.personas.store import (
    PERSONA_FILES,
    PERSONAS,
    Persona,
    PersonaSet,
    load_persona_set,
    write_persona_set,
)

logger = logging.getLogger(__name__)

_OWNED_DIRS = ("clusters", "memory")
_OWNED_FILES = (*PERSONA_FILES, JOURNAL, LOCK)


class Distiller(Protocol):
    """Anything that turns a split into personas (Ms) and memories (Ml)."""

    name: str

    def config(self) -> dict[str, Any]:
        """What identifies the result (the selected users aside); recorded in the manifest."""
        ...

    def needs_rerun(self, manifest: dict[str, Any]) -> bool:
        """Whether a finished persona set of the same config and users is to be made again."""
        ...


def _run(
    distiller: Any, split: Split, out: Path, user_ids: list[int] | None, progress: bool, overwrite: bool
) -> tuple[list[Persona], pd.DataFrame, dict[str, Any]]:
    if distiller.name == "stats":
        return distiller.distill(split, user_ids=user_ids, progress=progress)
    return distiller.distill(split, out, user_ids=user_ids, progress=progress, overwrite=overwrite)


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

    Args:
        split: the split.
        out: the personas directory.
        distiller: a :class:`Distiller` (``StatsDistiller`` or ``LLMDistiller``).
        user_ids: the users to distil (default: every user of the split).
        overwrite: replace the personas in ``out`` even when they are of another split or config (then an LLM
            journal of theirs is discarded too), or when they look up to date (a journal of this run is reused).
        progress: show a progress bar.

    Returns:
        (persona_set, created): ``created`` is False when ``out`` already held a finished persona set for
        this split, distiller config and users (then nothing is done, unless ``overwrite``).

    Raises:
        ArtifactError: ``out`` holds personas of another split or config (pass ``overwrite``), or is a
            non-empty directory that is not a persona directory.
    """
    out = Path(out)
    users = None if user_ids is None else sorted(int(u) for u in user_ids)
    config = {**distiller.config(), "users": users}
    if has_manifest(out):
        manifest = read_manifest(out, PERSONAS, required=("split_id", "distiller"))
        recorded = {"split": manifest["split_id"], **{k: v for k, v in manifest["distiller"].items() if k != "users"}}
        current = {"split": split.split_id, **{k: v for k, v in config.items() if k != "users"}}
        if recorded == current:
            same_users = manifest["distiller"].get("users") == users
            if same_users and not overwrite and not distiller.needs_rerun(manifest):
                logger.info("%s already holds these personas; nothing to do", out)
                return load_persona_set(out, split_id=split.split_id), False
        elif not overwrite:
            raise ArtifactError(
                f"{str(out)!r} holds personas of another run: {describe_differences(recorded, current)}. Fix:"
                " choose another --out, or pass --overwrite to replace them."
            )
        else:
            _remove_persona_set(out)
    elif out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in _OWNED_FILES):
        raise ArtifactError(
            f"{str(out)!r} is a non-empty directory that is not a persona directory. Fix: choose another --out."
        )
    personas, memories, usage = _run(distiller, split, out, users, progress, overwrite)
    _remove_persona_set(out)
    return write_persona_set(out, personas, memories, split_id=split.split_id, distiller=config, usage=usage), True


def _remove_persona_set(out: Path) -> None:
    """Remove a persona set and what was made from it (the manifest first: the set is unfinished from then on)."""
    for name in (MANIFEST, *PERSONA_FILES):
        (out / name).unlink(missing_ok=True)
    for name in _OWNED_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
