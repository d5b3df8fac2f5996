"""LoRA adapters on a rating backbone: which layers they target, their names, their weights.

One ``PeftModel`` holds every adapter of a set of persona agents: ``persona_<c>`` for persona cluster ``c``
(variant ``"persona"``) or one ``single`` adapter for everyone. This module answers what is shared by
training (:mod:`~recsim_personas.agents.training`) and inference (:mod:`~recsim_personas.agents.persona_agents`):
the LoRA target layers of a backbone family and the ``LoraConfig``, the adapter serving each user, a
fingerprint of the frozen base model (an adapter only fits the base it was trained on), and reading / writing
one adapter's weights (PEFT's own format for the finished adapter).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsim_personas.agents.train_config import LoraTrainConfig
from recsim_personas.errors import ArtifactError, ConfigError, UnknownUserError, unknown_choice

SINGLE_ADAPTER = "single"
"""The adapter name of the ``"single"`` variant (one adapter for all users)."""

LORA_TARGET_FAMILIES: dict[str, tuple[tuple[str, ...], ...]] = {
    # first family = the default (SmolLM2 / Llama-style); others are recognised on a given module
    "causal": (
        ("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, SmolLM2, Qwen2, Mistral
        ("qkv_proj", "o_proj"),  # Phi-3
        ("query_key_value", "dense"),  # GPT-NeoX, Falcon
        ("c_attn", "c_proj"),  # GPT-2
    ),
    "encoder": (
        ("query", "key", "value", "dense"),  # BERT, MiniLM, RoBERTa, MPNet-style
        ("q_lin", "k_lin", "v_lin", "out_lin"),  # DistilBERT
    ),
}


def adapter_name(cluster: int) -> str:
    """PEFT adapter name of persona cluster ``cluster`` (``persona_<c>``)."""
    return f"persona_{int(cluster)}"


def cluster_map(clusters: Any, user_ids: Sequence[int], variant: str) -> dict[int, str]:
    """user id -> adapter name for the users of a split.

    Raises:
        UnknownUserError: (persona variant) a user of the split has no persona cluster.
    """
    if variant == SINGLE_ADAPTER:
        return {int(u): SINGLE_ADAPTER for u in user_ids}
    missing = [int(u) for u in user_ids if int(u) not in clusters.labels]
    if missing:
        raise UnknownUserError(
            f"{len(missing)} users of the split have no persona cluster (e.g. user_id {missing[0]}). Fix: rerun"
            " `recsim-personas personas cluster` on personas of this split."
        )
    return {int(u): adapter_name(clusters.labels[int(u)]) for u in user_ids}


def lora_targets(kind: str, module: torch.nn.Module | None = None) -> list[str]:
    """Default LoRA ``target_modules`` of a backbone kind (attention projections; encoder: + dense layers).

    Without ``module``: causal → ``q_proj, k_proj, v_proj, o_proj`` (SmolLM2 / Llama-style); encoder →
    ``query, key, value, dense`` (BERT-style MiniLM: attention, attention output, intermediate and output
    projections). With ``module``, the first known family whose names all occur among its linear
    layers (so Phi-3's ``qkv_proj``, GPT-2's ``c_attn`` … are recognised).

    Raises:
        ConfigError: unknown kind, or no known family matches ``module``.
    """
    if kind not in LORA_TARGET_FAMILIES:
        raise unknown_choice("backbone kind", str(kind), LORA_TARGET_FAMILIES)
    families = LORA_TARGET_FAMILIES[kind]
    if module is None:
        return list(families[0])
    leaves = {
        name.rsplit(".", 1)[-1]
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"
    }
    for family in families:
        if set(family) <= leaves:
            return list(family)
    raise ConfigError(
        f"none of the known {kind} LoRA target families {[list(f) for f in families]} matches this module's"
        f" linear layers {sorted(leaves)[:20]}. Fix: pass target_modules explicitly."
    )


def make_lora_config(kind: str, backbone: torch.nn.Module, config: LoraTrainConfig) -> Any:
    """PEFT's ``LoraConfig`` for ``config`` on ``backbone`` (rank/alpha defaults of ``kind`` via
    :meth:`LoraTrainConfig.resolved`; the encoder's rating head is saved per adapter, ``modules_to_save``)."""
    from peft import LoraConfig

    cfg = config.resolved(kind)
    return LoraConfig(
        r=int(cfg.rank),  # type: ignore[arg-type]
        lora_alpha=int(cfg.alpha),  # type: ignore[arg-type]
        lora_dropout=float(cfg.dropout),
        target_modules=lora_targets(kind, backbone),
        modules_to_save=["rating_head"] if kind == "encoder" else None,
    )


def base_fingerprint(backbone: torch.nn.Module) -> str:
    """sha256 over the base backbone's parameter names, shapes, dtypes and first values (cheap, ~ms).

    Two different base models (or a different encoder head seed) give different fingerprints.
    """
    h = hashlib.sha256()
    for name, p in backbone.named_parameters():
        flat = p.detach().reshape(-1)
        head = flat[:16].to(torch.float64).cpu().numpy()
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
        h.update(np.round(head, 6).tobytes())
        h.update(np.float64(flat.to(torch.float64).sum().item()).round(3).tobytes())
    return h.hexdigest()


def adapter_state(model: Any, name: str) -> dict[str, torch.Tensor]:
    """A detached, contiguous copy of adapter ``name``'s weights (PEFT state-dict keys)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def load_adapter_state(model: Any, name: str, state: dict[str, torch.Tensor]) -> None:
    """Put weights from :func:`adapter_state` back into adapter ``name``.

    Raises:
        ArtifactError: the weights hold tensors this adapter does not have (another rank or backbone).
    """
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ArtifactError(f"checkpoint of adapter {name!r} has unexpected tensors, e.g. {unexpected[0]!r}.")


def save_adapter(model: Any, name: str, out: str | os.PathLike[str]) -> Path:
    """``save_pretrained`` of adapter ``name`` into ``out/adapters/<name>`` (PEFT's format; atomic: temp dir +
    rename); returns that directory."""
    target = Path(out) / "adapters" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        model.save_pretrained(str(tmp), selected_adapters=[name])
        written = tmp / name if (tmp / name).is_dir() else tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(written, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
