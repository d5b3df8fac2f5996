"""Per-epoch checkpoints of a whole ``torch.nn.Module`` in training (the user encoder, the USER-LLM agent), so an
interrupted run continues exactly where it stopped — safetensors and JSON, no pickle:

``last.safetensors`` (the weights after the last finished epoch), ``best.safetensors`` (at the best validation
loss so far), ``optimizer.safetensors`` (AdamW's per-parameter tensors) and ``state.json`` (the epoch counters
and the optimiser's ``param_groups``; written last, so it names only complete files).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from recsim_personas._io import write_json
from recsim_personas.agents.checkpoints import optimizer_tensors, restore_optimizer, save_tensors
from recsim_personas.artifacts import ArtifactKind, read_manifest
from recsim_personas.errors import ArtifactError

STATE = "state.json"
SPEC_FILE = "spec.json"


def prepare_run(out: Path, spec: dict[str, Any], kind: ArtifactKind, *, overwrite: bool, epochs_in: str) -> None:
    """Create the run directory ``out``, or accept it to resume; never touch anything that is not this run's.

    ``out`` may be new or empty; hold an unfinished run of the same ``spec`` (resumed — the number of epochs,
    ``spec[epochs_in]["epochs"]``, may differ: a run can be extended or cut short); or, with ``overwrite``, a
    finished artifact of ``kind`` or an unfinished run with other settings (removed).

    Raises:
        ArtifactError: anything else at ``out`` (the message names the fix).
    """

    def without_epochs(s: dict[str, Any]) -> dict[str, Any]:
        return {**s, epochs_in: {k: v for k, v in s[epochs_in].items() if k != "epochs"}}

    if (out / "manifest.json").is_file():
        if not overwrite:
            raise ArtifactError(
                f"{str(out)!r} already holds a finished {kind.what}. Fix: pass --overwrite or another --out."
            )
        read_manifest(out, kind)  # only ever replace an artifact of this kind
        shutil.rmtree(out)
    elif (out / SPEC_FILE).is_file():
        recorded = json.loads((out / SPEC_FILE).read_text(encoding="utf-8"))
        if without_epochs(recorded) != without_epochs(spec):
            if not overwrite:
                raise ArtifactError(
                    f"{str(out)!r} holds an unfinished {kind.what} run with other settings. Fix: rerun with the same"
                    " settings to resume it, pass --overwrite to start over, or choose another --out."
                )
            shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        raise ArtifactError(f"{str(out)!r} exists and is not a {kind.what} run. Fix: choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SPEC_FILE, spec)  # a resumed run may have been given another number of epochs


def save_epoch(
    ckpt: Path,
    weights: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """Write an epoch's checkpoint into ``ckpt`` (``state`` last)."""
    ckpt.mkdir(parents=True, exist_ok=True)
    save_tensors(ckpt / "last.safetensors", weights)
    save_tensors(ckpt / "best.safetensors", best)
    tensors, rest = optimizer_tensors(optimizer)
    save_tensors(ckpt / "optimizer.safetensors", tensors)
    write_json(ckpt / STATE, {**state, "optimizer": rest})


def load_epoch(
    ckpt: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, *, strict: bool = True
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Resume from ``ckpt``: loads the last weights into ``module`` and the optimiser state in place.

    Returns:
        ``(state, best weights)``, or ``None`` when there is no finished epoch.

    Raises:
        ArtifactError: a damaged checkpoint (names the directory and the fix).
    """
    from safetensors.torch import load_file

    if not (ckpt / STATE).is_file():
        return None
    try:
        state = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
        module.load_state_dict(load_file(str(ckpt / "last.safetensors")), strict=strict)
        restore_optimizer(optimizer, load_file(str(ckpt / "optimizer.safetensors")), state.pop("optimizer"))
        best = load_file(str(ckpt / "best.safetensors"))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ArtifactError(
            f"the training checkpoint in {str(ckpt)!r} is damaged ({exc}). Fix: delete that directory and rerun"
            " (training then starts from its first epoch)."
        ) from exc
    return state, best
