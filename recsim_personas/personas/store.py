"""Persona artifacts: Ms (short-term memory) per user and Ml (long-term memory) per rated item.

A personas directory holds:

- ``personas.jsonl`` — one object per user: ``user_id``, the four Ms sections (``activity``,
  ``conformity``, ``diversity``, ``description``), ``traits`` (numbers, levels and scores from
  :mod:`recsim_personas.personas.traits`) and ``provenance`` (which distiller, model, prompt version,
  batches, failures).
- ``memories.parquet`` — one row per train interaction: ``user_id``, ``item_id``, ``rating``,
  ``timestamp``, ``reason`` (the Ml text) and ``source`` (``"llm"``, ``"stats"`` or ``"stats-fallback"``
  for items of a batch the LLM failed on).
- ``manifest.json`` (:data:`PERSONAS`, written by :mod:`recsim_personas.artifacts`) — format and version, the
  ``split_id`` it was made from, the distiller config, counts, token usage, a sha256 of both files and the
  library versions. It is written last: a directory without it is not a finished persona set, and a file
  that does not match it is refused.

Other stages add sub-directories (``clusters/``, ``memory/``) with manifests of their own.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsim_personas._io import atomic_path, atomic_write_text
from recsim_personas.artifacts import MANIFEST, ArtifactKind, check_input, read_manifest, verify_files, write_manifest
from recsim_personas.errors import UnknownUserError

if TYPE_CHECKING:  # pandas is imported where a frame is read, so the config modules stay light
    import pandas as pd

PERSONAS = ArtifactKind(
    "recsim-personas/personas",
    1,
    "finished persona set",
    "run (or rerun: it resumes) `recsim-personas personas distill --split SPLIT --out DIR`",
)
"""The persona set artifact (``personas.jsonl`` + ``memories.parquet`` + ``manifest.json``)."""
PERSONA_FILES = ("personas.jsonl", "memories.parquet")
SECTIONS = ("activity", "conformity", "diversity", "description")
MAX_MS_WORDS = 2000
MEMORY_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "reason", "source"]


def word_count(text: str) -> int:
    return len(text.split())


def truncate_words(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


@dataclass(frozen=True)
class Persona:
    """One user's Ms: three trait descriptions and a profile description.

    Attributes:
        user_id: the user.
        activity, conformity, diversity: one to a few sentences each, second person.
        description: the profile description (likes, dislikes, habits), first person.
        traits: numeric traits, levels and scores (see :func:`~recsim_personas.personas.traits.compute_traits`).
        provenance: how the persona was made.
    """

    user_id: int
    activity: str
    conformity: str
    diversity: str
    description: str
    traits: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def ms_text(self) -> str:
        """The Ms as one text (what is embedded for clustering and shown to agents)."""
        return (
            f"Activity: {self.activity}\nConformity: {self.conformity}\nDiversity: {self.diversity}\n"
            f"Profile: {self.description}"
        )

    @property
    def words(self) -> int:
        return sum(word_count(getattr(self, s)) for s in SECTIONS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Persona:
        return cls(
            **{k: d[k] for k in ("user_id", *SECTIONS)}, traits=d.get("traits", {}), provenance=d.get("provenance", {})
        )


@dataclass(frozen=True)
class PersonaSet:
    """A loaded personas directory.

    Attributes:
        personas: Ms by user id.
        memories: the Ml frame (see the module docstring), sorted by user then time.
        manifest: the manifest.
        path: the directory.
    """

    personas: dict[int, Persona]
    memories: pd.DataFrame
    manifest: dict[str, Any]
    path: Path | None = None

    @property
    def split_id(self) -> str:
        return self.manifest["split_id"]

    @property
    def user_ids(self) -> list[int]:
        return sorted(self.personas)

    def persona(self, user_id: int) -> Persona:
        try:
            return self.personas[int(user_id)]
        except KeyError:
            some = ", ".join(str(u) for u in self.user_ids[:5])
            raise UnknownUserError(
                f"user_id {user_id} has no persona in {self.path or 'this persona set'} ({len(self.personas)}"
                f" users, e.g. {some})."
            ) from None

    def check_split(self, split_id: str) -> None:
        """Refuse a persona set made from another split."""
        check_input(
            self.path or "",
            PERSONAS,
            "split",
            self.split_id,
            split_id,
            "distill personas for this split with `recsim-personas personas distill`",
        )


def write_persona_set(
    out: str | os.PathLike[str],
    personas: list[Persona],
    memories: pd.DataFrame,
    *,
    split_id: str,
    distiller: dict[str, Any],
    usage: dict[str, Any] | None = None,
) -> PersonaSet:
    """Write ``personas.jsonl``, ``memories.parquet`` and (last) ``manifest.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # the set is incomplete until the new manifest lands
    personas = sorted(personas, key=lambda p: p.user_id)
    memories = memories[MEMORY_COLUMNS].sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    memories = memories.reset_index(drop=True)
    lines = "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in personas)
    atomic_write_text(out / "personas.jsonl", lines)
    with atomic_path(out / "memories.parquet") as tmp:
        memories.to_parquet(tmp, index=False)
    body = {
        "split_id": split_id,
        "distiller": distiller,
        "counts": {
            "personas": len(personas),
            "memories": len(memories),
            "memories_by_source": {str(k): int(v) for k, v in memories["source"].value_counts().items()},
            "max_ms_words": max((p.words for p in personas), default=0),
        },
        "usage": usage or {},
    }
    manifest = write_manifest(out, PERSONAS, body, files=PERSONA_FILES, libraries=("pandas", "pyarrow"))
    return PersonaSet({p.user_id: p for p in personas}, memories, manifest, out)


def load_persona_set(path: str | os.PathLike[str], *, split_id: str | None = None) -> PersonaSet:
    """Load and verify a personas directory; with ``split_id``, also refuse one made from another split.

    Raises:
        ArtifactError: no manifest (unfinished or not a persona set), a file that does not match it, or a
            persona set from another split.
    """
    path = Path(path)
    manifest = read_manifest(path, PERSONAS, required=("split_id", "distiller", "counts", "files"))
    verify_files(path, manifest, PERSONAS, fix="rerun `recsim-personas personas distill` with --overwrite")
    personas = {}
    with open(path / "personas.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                p = Persona.from_dict(json.loads(line))
                personas[p.user_id] = p
    import pandas as pd

    memories = pd.read_parquet(path / "memories.parquet")
    pset = PersonaSet(personas, memories, manifest, path)
    if split_id is not None:
        pset.check_split(split_id)
    return pset
