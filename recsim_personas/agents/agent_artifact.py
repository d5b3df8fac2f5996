"""The persona-agent artifact: what it is made from, its run record, its manifest, and the checks on loading.

A directory written by :func:`~recsim_personas.agents.training.train_agents`::

    run.json                    what is being trained (written first; a rerun must match it)
    prior/rater.json, prior/rater.npz       the fitted anchoring prior (absent without anchoring)
    checkpoints/<adapter>/      per-epoch checkpoints while training (:mod:`~recsim_personas.agents.checkpoints`)
    adapters/<adapter>/         adapter_config.json + adapter_model.safetensors (PEFT's own format)
    train_log.jsonl             one line per adapter epoch (losses, seconds)
    manifest.json               written last (:mod:`recsim_personas.artifacts`): base model + fingerprint, split
                                id, persona set digest, cluster map user -> adapter, configs, the sha256 of every
                                adapter and prior file, validation losses, library versions

Everything an agent set is made from — the split, its persona set, the persona clusters and the memory
index — is loaded and cross-checked by :func:`load_world`; :func:`verify_agents` refuses, with a message
naming the fix, an artifact from another split or persona set, a missing or altered adapter or prior file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from recsim_personas._io import write_json
from recsim_personas.artifacts import (
    ArtifactKind,
    check_input,
    describe_differences,
    manifest_digest,
    read_manifest,
    verify_files,
    write_manifest,
)
from recsim_personas.errors import ArtifactError

AGENTS = ArtifactKind(
    "recsim-personas/persona-agents",
    1,
    "trained persona-agent directory",
    "run (or rerun, it resumes) `recsim-personas agents train --split SPLIT --personas DIR --out DIR`",
)
RUN_FILE = "run.json"
_RETRAIN = "retrain with `recsim-personas agents train --overwrite`"
_REQUIRED = (
    "split_id",
    "personas_manifest",
    "backbone",
    "base_fingerprint",
    "train_config",
    "cluster_map",
    "adapters",
    "prior",
    "prompt",
)


def load_world(
    split_dir: str | os.PathLike[str],
    personas_dir: str | os.PathLike[str],
    *,
    need_clusters: bool = True,
    need_index: bool = True,
) -> tuple[Any, Any, Any, Any]:
    """``(split, persona set, clusters or None, memory index or None)``, each checked against the others.

    The clusters are read from ``<personas>/clusters``, the memory index from ``<personas>/memory``.

    Raises:
        ArtifactError: a missing or stale artifact, or personas of another split (names the command to run).
    """
    from recsim_personas.data.split import Split
    from recsim_personas.personas.clustering import load_clusters
    from recsim_personas.personas.memory import MemoryIndex
    from recsim_personas.personas.store import load_persona_set

    split = Split.load(split_dir)
    pset = load_persona_set(personas_dir, split_id=split.split_id)
    clusters = load_clusters(pset.path / "clusters", pset) if need_clusters else None
    index = None
    if need_index:
        index = MemoryIndex.load(pset.path / "memory", personas_manifest=manifest_digest(pset.path))
    return split, pset, clusters, index


def persona_set_digest(pset: Any) -> str:
    """The id by which an agents artifact records its persona set (its manifest's sha256; ``""`` unsaved)."""
    return manifest_digest(pset.path) if pset.path else ""


def run_spec(split: Any, pset: Any, backbone: Any, config: Any, fingerprint: str) -> dict[str, Any]:
    """What a training run is (the content of ``run.json``; a rerun into the same directory must match it).

    Args:
        split: the protocol split.
        pset: its persona set.
        backbone: the :class:`~recsim_personas.agents.backbone_config.BackboneConfig`.
        config: the resolved :class:`~recsim_personas.agents.train_config.LoraTrainConfig`.
        fingerprint: the base model's :func:`~recsim_personas.agents.adapters.base_fingerprint`.
    """
    return {
        "format": AGENTS.format,
        "split_id": split.split_id,
        "personas_manifest": persona_set_digest(pset),
        "backbone": backbone.to_dict(),
        "base_fingerprint": fingerprint,
        "train_config": config.to_dict(),
    }


def prepare_run_dir(out: Path, spec: dict[str, Any], overwrite: bool) -> None:
    """Make ``out`` the directory of the run ``spec``: keep it when it holds the same run (resume), refuse another
    run or foreign files unless ``overwrite`` (then replace them), and write ``run.json``.

    Raises:
        ArtifactError: ``out`` holds another run (names the settings that differ) or other files.
    """
    run_file = out / RUN_FILE
    if run_file.is_file():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if old == spec:
            return
        if not overwrite:
            parts = []
            for key in [k for k in dict.fromkeys([*old, *spec]) if old.get(k) != spec.get(k)]:
                a, b = old.get(key), spec.get(key)
                inner = f" ({describe_differences(a, b)})" if isinstance(a, dict) and isinstance(b, dict) else ""
                parts.append(key + inner)
            raise ArtifactError(
                f"{str(out)!r} holds a persona-agent run with a different {'; '.join(parts)}. Fix: choose another"
                " --out, or pass --overwrite to replace it."
            )
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ArtifactError(
                f"{str(out)!r} is not empty and is not a persona-agent run. Fix: choose another --out, or pass"
                " --overwrite to replace it."
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(run_file, spec)


def write_agents_manifest(out: Path, spec: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest of a finished run (last): ``spec`` + ``body``, with versions of torch/transformers/peft.

    ``body["adapters"][name]["files"]`` and ``body["prior"]["files"]`` hold the sha256 of the adapter and prior
    files (relative to ``adapters/<name>`` and ``prior``).
    """
    fields = {k: v for k, v in spec.items() if k != "format"}
    return write_manifest(out, AGENTS, {**fields, **body}, libraries=("torch", "transformers", "peft"))


def read_agents_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a trained persona-agent directory.

    Raises:
        ArtifactError: no manifest (training unfinished: rerun it, it resumes), a damaged or foreign one.
    """
    return read_manifest(path, AGENTS, required=_REQUIRED)


def check_agents_inputs(manifest: dict[str, Any], path: str | os.PathLike[str], split: Any, pset: Any = None) -> None:
    """Refuse agents trained on another split (or, given ``pset``, another persona set)."""
    check_input(
        path,
        AGENTS,
        "split",
        manifest["split_id"],
        split.split_id,
        f"pass the split they were trained on ({split.path} is another), or train agents for this split with"
        " `recsim-personas agents train`",
    )
    if pset is not None:
        check_input(
            path,
            AGENTS,
            "persona set",
            manifest["personas_manifest"],
            persona_set_digest(pset),
            f"pass the personas they were trained on ({str(pset.path)!r} is another), or retrain with"
            " `recsim-personas agents train`",
        )


def verify_agents(path: str | os.PathLike[str], manifest: dict[str, Any]) -> dict[int, str]:
    """Check every adapter the cluster map needs and the prior files against the manifest.

    Returns:
        the cluster map ``{user_id: adapter name}``.

    Raises:
        ArtifactError: an adapter or prior file is missing or altered (names the adapter and its users).
    """
    path = Path(path)
    cmap = {int(u): str(n) for u, n in manifest["cluster_map"].items()}
    for name in sorted(set(cmap.values())):
        directory = path / "adapters" / name
        want = manifest["adapters"].get(name, {}).get("files", {})
        if not (directory / "adapter_model.safetensors").is_file() or not want:
            users = sorted(u for u, a in cmap.items() if a == name)
            raise ArtifactError(
                f"agents {str(path)!r}: the adapter {name!r} (persona of {len(users)} users, e.g. user_id"
                f" {users[0]}) is missing. Fix: {_RETRAIN}."
            )
        verify_files(directory, manifest, AGENTS, digests=want, fix=_RETRAIN)
    if manifest["prior"] is not None:
        verify_files(path / "prior", manifest, AGENTS, digests=manifest["prior"]["files"], fix=_RETRAIN)
    return cmap
