"""The precision the agents' weights run in at inference: ``"auto"``, ``"float32"`` or ``"bfloat16"``.

``"auto"`` (the default of :meth:`~recsim_personas.agents.persona_agents.PersonaAgents.load`) is bfloat16 for
*encoder* agents on a CPU that runs bfloat16 matmuls natively (:func:`native_bf16_matmul`) and float32
otherwise — always float32 for causal agents. On the 2-core AMX Xeon of ``benchmarks/agents_throughput.py``
bfloat16 serves the MiniLM persona agents ~2× faster than float32 and moves expected ratings by < 1e-3
(RMSE/MAE unchanged to the 4th decimal on 1,000 test ratings); a causal SmolLM2 agent in bfloat16 moved its
expected ratings by 0.07 on average (48 test ratings), hence float32 there unless asked for.

Light at import (torch is imported inside the functions), so the command line can offer
:data:`INFERENCE_DTYPES` without loading torch.
"""

from __future__ import annotations

import functools
from pathlib import Path

from recsim_personas.errors import unknown_choice

INFERENCE_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")
"""Precisions of the agents' weights at inference (``dtype=`` of :meth:`PersonaAgents.load`)."""

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def _cpu_has_bf16() -> bool:
    """AMX tiles or AVX512-BF16 instructions, as PyTorch's cpuinfo sees them (else the flags of ``/proc/cpuinfo``)."""
    import torch

    probes = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(callable(p) for p in probes):
        try:
            return any(bool(p()) for p in probes)
        except RuntimeError:  # pragma: no cover - a PyTorch built without cpuinfo
            pass
    try:
        return cpuinfo_has_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def cpuinfo_has_bf16(cpuinfo: str) -> bool:
    """Whether the first ``flags`` line of a ``/proc/cpuinfo`` text names ``amx_bf16`` or ``avx512_bf16``."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in _BF16_CPU_FLAGS)


def native_bf16_matmul() -> bool:
    """Whether this machine runs bfloat16 matmuls natively — the rule behind ``dtype="auto"``.

    True when PyTorch's oneDNN backend is available and enabled (``torch.backends.mkldnn``) and the CPU has
    AMX-BF16 tiles or AVX512-BF16 instructions (read from PyTorch's cpuinfo, ``torch.cpu._is_amx_tile_supported``
    / ``_is_avx512_bf16_supported``; from the ``flags`` of ``/proc/cpuinfo`` on a PyTorch without them). PyTorch
    then sends bfloat16 matmuls to oneDNN's AMX / AVX512-BF16 kernels (on the project's 2-core Xeon: ~1,000
    GFLOP/s against ~150 in float32, one thread); without them bfloat16 is emulated and slower than float32.
    No timing is involved: ``"auto"`` picks the same precision on every run on one machine, however busy.
    """
    import torch

    mkldnn = torch.backends.mkldnn
    return bool(mkldnn.is_available() and mkldnn.enabled and _cpu_has_bf16())


def resolve_inference_dtype(dtype: str, kind: str) -> str:
    """``"float32"`` or ``"bfloat16"``: ``dtype`` itself, or what ``"auto"`` means for a backbone ``kind``.

    ``"auto"`` is ``"bfloat16"`` for an encoder on a machine where :func:`native_bf16_matmul` holds, else
    ``"float32"`` — causal agents always: in bfloat16 a SmolLM2 agent's expected ratings moved by 0.07 on
    average (the MiniLM persona agents': 0.0002).

    Raises:
        ConfigError: ``dtype`` is not one of :data:`INFERENCE_DTYPES`.
    """
    if dtype not in INFERENCE_DTYPES:
        raise unknown_choice("inference dtype", str(dtype), INFERENCE_DTYPES)
    if dtype != "auto":
        return dtype
    return "bfloat16" if kind == "encoder" and native_bf16_matmul() else "float32"
