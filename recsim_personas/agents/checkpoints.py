"""Per-epoch checkpoints of one adapter in training, so an interrupted run continues exactly where it stopped.

A checkpoint directory (``<run>/checkpoints/<adapter>/``) holds, as safetensors and JSON (no pickle):

- ``last.safetensors`` — the adapter's weights after the last finished epoch;
- ``best.safetensors`` — its weights at the best validation NLL so far (what early stopping keeps);
- ``optimizer.safetensors`` — the optimiser's per-parameter tensors (AdamW: ``step``, ``exp_avg``,
  ``exp_avg_sq``), keyed ``<parameter index>/<name>``;
- ``state.json`` — written last, so it names only complete files: the epoch counters of early stopping and the
  optimiser's ``param_groups`` (learning rate, betas, ... and the parameter indices).

With the weights, the optimiser's moments and the epoch counter restored — and the data order and dropout
drawn from seeds that depend only on the epoch — the resumed run's loss curve and weights are those of a run
that was never interrupted (``tests/agents/test_persona_agents.py`` checks it). A checkpoint written before
``optimizer.safetensors`` existed resumes with fresh optimiser moments, with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from recsim_personas._io import atomic_path, write_json
from recsim_personas.agents.adapters import adapter_state, load_adapter_state
from recsim_personas.errors import ArtifactError

logger = logging.getLogger(__name__)

STATE = "state.json"
OPTIMIZER = "optimizer.safetensors"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` (detached, contiguous) as a safetensors file, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, rest)`` of an optimiser's state dict: per-parameter tensors keyed ``"<index>/<name>"`` and
    the JSON-serialisable rest (``param_groups`` and any non-tensor per-parameter entries)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in sd["state"].items():
        for name, value in entries.items():
            key = f"{index}/{name}"
            if torch.is_tensor(value):
                tensors[key] = value
            else:
                scalars[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    """Load what :func:`optimizer_tensors` returned back into ``optimizer`` (the same parameters, in order).

    Raises:
        ArtifactError: the saved state is for other parameters (another adapter shape or rank).
    """
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest.get("scalars", {}).items()]:
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": rest.get("param_groups", [])})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ArtifactError(f"the optimiser state of the checkpoint does not fit this adapter ({exc}).") from exc


def save_checkpoint(
    ckpt: Path,
    model: Any,
    name: str,
    best: dict[str, torch.Tensor],
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
) -> None:
    """Checkpoint adapter ``name`` after an epoch: its weights, its best weights, the optimiser, then ``state``.

    Args:
        ckpt: the adapter's checkpoint directory.
        model: the ``PeftModel``.
        name: the adapter.
        best: the best weights so far (:func:`~recsim_personas.agents.adapters.adapter_state`).
        state: JSON epoch counters (``epoch``, ``best_epoch``, ``best_valid_nll``, ``initial_valid_nll``, ``since``).
        optimizer: the adapter's optimiser.
    """
    ckpt.mkdir(parents=True, exist_ok=True)
    save_tensors(ckpt / "last.safetensors", adapter_state(model, name))
    save_tensors(ckpt / "best.safetensors", best)
    tensors, rest = optimizer_tensors(optimizer)
    save_tensors(ckpt / OPTIMIZER, tensors)
    write_json(ckpt / STATE, {**state, "optimizer": rest})  # last: a state names only complete files


def load_checkpoint(
    ckpt: Path, model: Any, name: str, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Resume adapter ``name`` from ``ckpt``: loads its last weights and the optimiser state in place.

    Returns:
        ``(epoch counters, best weights)``, or ``None`` when there is no finished checkpoint.

    Raises:
        ArtifactError: a damaged checkpoint (names the file and the fix).
    """
    from safetensors.torch import load_file

    if not (ckpt / STATE).is_file():
        return None
    try:
        state = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
        last = load_file(str(ckpt / "last.safetensors"))
        best = load_file(str(ckpt / "best.safetensors"))
        moments = load_file(str(ckpt / OPTIMIZER)) if (ckpt / OPTIMIZER).is_file() else None
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"the training checkpoint in {str(ckpt)!r} is damaged ({exc}). Fix: delete that directory and rerun"
            " (the adapter then trains from its first epoch)."
        ) from exc
    load_adapter_state(model, name, last)
    rest = state.pop("optimizer", None)
    if moments is None or rest is None:
        logger.warning("checkpoint %s has no optimiser state; adapter %s resumes with fresh AdamW moments.", ckpt, name)
    else:
        restore_optimizer(optimizer, moments, rest)
    return state, best
