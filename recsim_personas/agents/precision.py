"""The precision the agents' weights run in at inference: ``"auto"``, ``"float32"`` or ``"bfloat16"``.

``"auto"`` (the default of :meth:`~recsim_personas.agents.persona_agents.PersonaAgents.load`) is decided by
*measuring* the workload on this machine, never by CPU flags alone: the agents time their own forward passes
on a small batch of real requests in float32 and in bfloat16 and run in bfloat16 only when it is faster (by
at least :data:`MIN_SPEEDUP`) **and** moves the outputs — the expected ratings, 1..5 — by at most
:data:`AUTO_TOLERANCE` (largest absolute difference against float32). Why measured: the same flags lie both
ways. On the 2-core AMX Xeon of ``benchmarks/agents_throughput.py`` bfloat16 serves the MiniLM persona agents
~2× faster than float32; on a CPU that reports AVX512-BF16 but has no AMX tiles the text agent ran at 0.77×
its float32 speed in bfloat16. Why a tolerance of 0.01: in bfloat16 the MiniLM persona agents' expected
ratings moved by < 1e-3 (RMSE/MAE unchanged to the 4th decimal on 1,000 test ratings), a causal SmolLM2
agent's by 0.07 on average (48 test ratings) — so encoder agents may switch, causal agents stay float32
unless a measurement says otherwise. :func:`native_bf16_matmul` (AMX / AVX512-BF16 and oneDNN) is kept as
information and recorded in the verdict; it decides nothing.

The generic helper, for any rater that can run its own workload in a given precision::

    measure_precision(
        probe: Callable[[str], np.ndarray],   # probe("float32" | "bfloat16") -> outputs, float (n,) or (n, k)
        *,
        key: str,                             # names the workload, e.g. "userllm:<artifact digest>"
        tolerance: float = AUTO_TOLERANCE,    # largest allowed |bfloat16 - float32| of the outputs
        min_speedup: float = MIN_SPEEDUP,     # float32 time / bfloat16 time needed for bfloat16
        cache_dir: str | PathLike | None = None,
        warmup: int = 2, repeats: int = 5,
        clock: Callable[[], float] = time.perf_counter,
        refresh: bool = False,
    ) -> PrecisionVerdict                     # .dtype is "float32" or "bfloat16"

``probe(dtype)`` runs the *same* batch once with the weights in ``dtype`` and returns its outputs (e.g. the
expected ratings of that batch, float64 (n,)); it may convert the model in place when ``dtype`` changes
(the first call after a change is never timed). :func:`measure_precision` calls it in this order:

1. accuracy first: ``probe("float32")`` then ``probe("bfloat16")``, untimed; when the outputs differ by more
   than ``tolerance`` bfloat16 is refused there, untimed (``float32_s``/``bfloat16_s`` ``None``): a causal
   LM is not run in slow bfloat16 for minutes to learn what one run has shown;
2. ``probe("bfloat16")`` ``warmup - 1`` more times, then ``repeats`` times timed with ``clock``;
3. ``probe("float32")`` ``warmup`` times, then ``repeats`` times timed.

The medians of the timed runs are compared, and the outputs of the last timed run of each precision. Timed
runs of the two precisions are never interleaved (no conversion inside a timing). Afterwards the weights are
as the probe left them (float32, if it converts in place); the caller converts them to ``verdict.dtype``. A
cached verdict is returned without calling the probe at all.

The verdict (both timings, the difference, the choice and why, the torch version, the thread count, the CPU
model of ``/proc/cpuinfo``, :func:`native_bf16_matmul`) is cached as JSON, written atomically, under
:func:`precision_cache_dir` — one file per workload ``key`` + CPU model + torch version + thread count — so
the next load on this machine reuses it without timing; the choice is re-derived from the stored figures
with the caller's ``tolerance`` and ``min_speedup``. A damaged file is ignored and measured again.

Light at import (torch is imported inside the functions), so the command line can offer
:data:`INFERENCE_DTYPES` without loading torch.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas.errors import ConfigError, unknown_choice

logger = logging.getLogger(__name__)

INFERENCE_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")
"""Precisions of the agents' weights at inference (``dtype=`` of :meth:`PersonaAgents.load`)."""

AUTO_TOLERANCE = 0.01
"""Largest absolute change of an output (an expected rating, 1..5) that bfloat16 may cause under ``"auto"``."""

MIN_SPEEDUP = 1.05
"""float32 time / bfloat16 time that ``"auto"`` needs for bfloat16: a few percent of timing noise must not
trade accuracy for nothing."""

PRECISION_CACHE_ENV = "RECSIM_PERSONAS_PRECISION_CACHE"
"""Environment variable naming the directory of cached verdicts (see :func:`precision_cache_dir`)."""

PRECISION_CACHE_NAME = "precision"
"""Sub-directory of the model cache holding the verdicts."""

Probe = Callable[[str], Any]
"""``probe(dtype) -> outputs``: one run of a fixed batch with the weights in ``dtype``; outputs array-like, float."""

_VERDICT_FORMAT = 1
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


# ---------------------------------------------------------------------------------------------------------
# CPU flags: information only
# ---------------------------------------------------------------------------------------------------------
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
    """Whether this machine *claims* native bfloat16 matmuls — recorded in a verdict, no longer a rule.

    True when PyTorch's oneDNN backend is available and enabled (``torch.backends.mkldnn``) and the CPU has
    AMX-BF16 tiles or AVX512-BF16 instructions (read from PyTorch's cpuinfo, ``torch.cpu._is_amx_tile_supported``
    / ``_is_avx512_bf16_supported``; from the ``flags`` of ``/proc/cpuinfo`` on a PyTorch without them). With
    AMX, bfloat16 matmuls reach ~1,000 GFLOP/s against ~150 in float32 (the project's 2-core Xeon, one
    thread); with AVX512-BF16 alone a persona agent ran *slower* in bfloat16 (0.77×), which is why
    ``dtype="auto"`` measures (:func:`measure_precision`) instead of reading this.
    """
    import torch

    mkldnn = torch.backends.mkldnn
    return bool(mkldnn.is_available() and mkldnn.enabled and _cpu_has_bf16())


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU model: the first ``model name`` of ``/proc/cpuinfo`` (or of the text ``cpuinfo``).

    Falls back to :func:`platform.processor` / :func:`platform.machine` where there is no ``/proc/cpuinfo``
    (and to ``"unknown"``), so a verdict is always keyed by something stable on one machine.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown"


# ---------------------------------------------------------------------------------------------------------
# the decision
# ---------------------------------------------------------------------------------------------------------
def choose_precision(
    float32_s: float | None,
    bfloat16_s: float | None,
    max_abs_diff: float,
    *,
    tolerance: float = AUTO_TOLERANCE,
    min_speedup: float = MIN_SPEEDUP,
) -> tuple[str, str]:
    """The precision two measurements call for, and why (no timing here: the figures are given).

    Args:
        float32_s: median seconds of one run of the batch in float32 (> 0); ``None``: not timed.
        bfloat16_s: the same in bfloat16. Either may be ``None`` only with ``max_abs_diff`` outside
            ``tolerance`` (then the timings do not matter).
        max_abs_diff: largest absolute difference between the bfloat16 and float32 outputs (``inf`` or
            ``nan`` when bfloat16 gave non-finite outputs: rejected).
        tolerance: largest ``max_abs_diff`` accepted for bfloat16.
        min_speedup: ``float32_s / bfloat16_s`` needed for bfloat16.

    Returns:
        ``(dtype, reason)``: ``"bfloat16"`` only when it is at least ``min_speedup`` × as fast **and** within
        ``tolerance``, else ``"float32"``; ``reason`` is one sentence with the figures.

    Raises:
        ConfigError: a timing that is not a positive finite number (``None`` too, with outputs within
            ``tolerance``: then only the timings can decide).
    """
    within = max_abs_diff <= tolerance  # nan: False
    for name, value in (("float32_s", float32_s), ("bfloat16_s", bfloat16_s)):
        if value is None and not within:
            continue
        if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}.")
    if float32_s is None or bfloat16_s is None:
        return "float32", (
            f"bfloat16 moved the outputs by up to {max_abs_diff:.3g} (tolerance {tolerance:.3g}; not timed)"
        )
    speedup = float32_s / bfloat16_s
    if not within:
        return "float32", (
            f"bfloat16 is {speedup:.2f}× as fast but moved the outputs by up to {max_abs_diff:.3g}"
            f" (tolerance {tolerance:.3g})"
        )
    if not speedup >= min_speedup:
        return "float32", (
            f"bfloat16 ran at {speedup:.2f}× the float32 speed ({bfloat16_s * 1e3:.1f} ms vs"
            f" {float32_s * 1e3:.1f} ms a batch); it needs ≥ {min_speedup:.2f}×"
        )
    return "bfloat16", (
        f"bfloat16 is {speedup:.2f}× as fast and moved the outputs by at most {max_abs_diff:.3g}"
        f" (tolerance {tolerance:.3g})"
    )


@dataclass(frozen=True)
class PrecisionVerdict:
    """One measured choice between float32 and bfloat16 for a workload on a machine.

    Attributes:
        key: the workload (e.g. ``"persona-agents:persona:encoder:..."``).
        dtype: the choice, ``"float32"`` or ``"bfloat16"``.
        reason: why, with the figures (:func:`choose_precision`).
        float32_s: median seconds of one run of the batch in float32; ``None`` when bfloat16 was refused on
            its outputs before any timing.
        bfloat16_s: the same in bfloat16.
        max_abs_diff: largest absolute difference of the outputs, bfloat16 against float32 (``inf``: bfloat16
            gave non-finite outputs).
        tolerance: the ``tolerance`` the choice was made with.
        min_speedup: the ``min_speedup`` the choice was made with.
        n_outputs: number of output values compared.
        warmup: untimed runs per precision (:func:`measure_precision`).
        repeats: timed runs per precision.
        torch_version: ``torch.__version__`` of the measurement.
        threads: ``torch.get_num_threads()`` of the measurement.
        cpu_model: :func:`cpu_model_name`.
        native_bf16_matmul: :func:`native_bf16_matmul` at the measurement (information only).
        measured_at: UTC time of the measurement, ISO 8601.
        from_cache: whether this verdict was read from the cache (not stored in the file).
    """

    key: str
    dtype: str
    reason: str
    float32_s: float | None
    bfloat16_s: float | None
    max_abs_diff: float
    tolerance: float
    min_speedup: float
    n_outputs: int
    warmup: int
    repeats: int
    torch_version: str
    threads: int
    cpu_model: str
    native_bf16_matmul: bool
    measured_at: str
    from_cache: bool = False

    @property
    def speedup(self) -> float | None:
        """``float32_s / bfloat16_s``: how many times as fast bfloat16 ran (< 1: slower); ``None``: not timed."""
        if self.float32_s is None or self.bfloat16_s is None:
            return None
        return self.float32_s / self.bfloat16_s

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the cache file (``from_cache`` left out, ``speedup`` added for readers)."""
        out: dict[str, Any] = {"format": _VERDICT_FORMAT}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "from_cache"})
        out["max_abs_diff"] = self.max_abs_diff if math.isfinite(self.max_abs_diff) else None
        out["speedup"] = None if self.speedup is None else round(self.speedup, 4)
        return out

    @classmethod
    def from_dict(cls, d: Any) -> PrecisionVerdict:
        """Read :meth:`to_dict`'s form back (``from_cache=True``).

        Raises:
            ValueError: not a verdict of this format (a missing field, a wrong type, a bad timing).
        """
        if not isinstance(d, dict) or d.get("format") != _VERDICT_FORMAT:
            raise ValueError(f"not a precision verdict of format {_VERDICT_FORMAT}")
        types: dict[str, tuple[type, ...]] = {
            "key": (str,),
            "dtype": (str,),
            "reason": (str,),
            "tolerance": (int, float),
            "min_speedup": (int, float),
            "n_outputs": (int,),
            "warmup": (int,),
            "repeats": (int,),
            "torch_version": (str,),
            "threads": (int,),
            "cpu_model": (str,),
            "native_bf16_matmul": (bool,),
            "measured_at": (str,),
        }
        values: dict[str, Any] = {}
        for name, allowed in types.items():
            value = d.get(name)
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise ValueError(f"field {name!r} is {value!r}")
            values[name] = value
        for name in ("float32_s", "bfloat16_s", "max_abs_diff"):  # null: not timed / not finite
            value = d.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"field {name!r} is {value!r}")
            values[name] = value
        if values["max_abs_diff"] is None:
            values["max_abs_diff"] = math.inf
        if values["dtype"] not in ("float32", "bfloat16"):
            raise ValueError(f"field 'dtype' is {values['dtype']!r}")
        for name in ("float32_s", "bfloat16_s"):
            value = values[name]
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"field {name!r} is {value!r}")
        return cls(**values, from_cache=True)


# ---------------------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------------------
def precision_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the cached verdicts.

    ``cache_dir/precision`` when a model cache root is given; else ``$RECSIM_PERSONAS_PRECISION_CACHE``; else
    ``precision/`` in the model cache (:func:`~recsim_personas.agents.model_loading.model_cache_root`, which
    honours ``$RECSIM_PERSONAS_MODEL_CACHE``).
    """
    if cache_dir is None:
        env = os.environ.get(PRECISION_CACHE_ENV)
        if env:
            return Path(env).expanduser()
    from recsim_personas.agents.model_loading import model_cache_root

    return model_cache_root(cache_dir) / PRECISION_CACHE_NAME


def _machine() -> dict[str, Any]:
    """What a verdict is keyed by besides the workload: CPU model, torch version, thread count."""
    import torch

    return {"cpu_model": cpu_model_name(), "torch_version": str(torch.__version__), "threads": torch.get_num_threads()}


def verdict_path(key: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache file of workload ``key`` on this machine (CPU model, torch version and thread count now).

    Named ``<readable part of key>-<16 hex of sha256(key, machine)>.json`` under :func:`precision_cache_dir`.
    """
    return _verdict_path(key, cache_dir, _machine())


def _verdict_path(key: str, cache_dir: str | os.PathLike[str] | None, machine: dict[str, Any]) -> Path:
    identity = json.dumps({"key": key, **machine}, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.")[:80] or "workload"
    return precision_cache_dir(cache_dir) / f"{slug}-{digest}.json"


def _read_verdict(path: Path, key: str, machine: dict[str, Any]) -> PrecisionVerdict | None:
    """The cached verdict of ``key`` on ``machine``; ``None`` when absent or damaged (logged: measured again)."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        logger.warning("cannot read the precision verdict %s (%s); measuring again", path, e)
        return None
    try:
        verdict = PrecisionVerdict.from_dict(json.loads(text.decode("utf-8")))
        mine = {"key": key, **machine}
        theirs = {"key": verdict.key, **{k: getattr(verdict, k) for k in machine}}
        if theirs != mine:
            raise ValueError(f"it was measured for {theirs!r}, not {mine!r}")
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        logger.warning("ignoring the damaged precision verdict %s (%s); measuring again", path, e)
        return None
    return verdict


# ---------------------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------------------
def _outputs(value: Any, dtype: str) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"the precision probe must return numbers (e.g. expected ratings, float (n,)); in {dtype} it returned"
            f" {type(value).__name__}: {e}. Fix: return an array of the batch's outputs."
        ) from None
    if out.size == 0:
        raise ConfigError(
            f"the precision probe returned no outputs in {dtype} (shape {out.shape}). Fix: run a non-empty batch."
        )
    return out


def _timed_runs(
    probe: Probe, dtype: str, repeats: int, clock: Callable[[], float], key: str
) -> tuple[float, np.ndarray]:
    """Median seconds of ``repeats`` timed runs of ``probe(dtype)``, and the last run's outputs."""
    times = []
    for _ in range(repeats):
        start = clock()
        value = probe(dtype)
        times.append(clock() - start)
    median = statistics.median(times)
    if not median > 0:
        raise ConfigError(
            f"the clock measured {median!r} s for a {dtype} run of {key!r}. Fix: pass a monotonic clock that"
            " advances while the probe runs (time.perf_counter)."
        )
    return median, _outputs(value, dtype)


def _max_abs_diff(key: str, ref: np.ndarray, low: np.ndarray) -> float:
    """Largest ``|low - ref|`` (``inf`` where ``low`` is not finite)."""
    if ref.shape != low.shape:
        raise ConfigError(
            f"the precision probe of {key!r} returned shape {ref.shape} in float32 but {low.shape} in bfloat16."
            " Fix: run the same batch in both precisions."
        )
    gap = np.abs(low - ref)
    return float(np.max(np.where(np.isfinite(gap), gap, np.inf)))


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
    return value


def measure_precision(
    probe: Probe,
    *,
    key: str,
    tolerance: float = AUTO_TOLERANCE,
    min_speedup: float = MIN_SPEEDUP,
    cache_dir: str | os.PathLike[str] | None = None,
    warmup: int = 2,
    repeats: int = 5,
    clock: Callable[[], float] = time.perf_counter,
    refresh: bool = False,
) -> PrecisionVerdict:
    """Choose float32 or bfloat16 for a workload by running it in both (once per machine; then cached).

    Args:
        probe: ``probe(dtype)`` runs one fixed batch with the weights in ``dtype`` (``"float32"`` or
            ``"bfloat16"``) and returns its outputs, array-like float of one shape in both, e.g. expected
            ratings float64 (n,). Called once per precision to compare the outputs (float32, then bfloat16),
            then — unless they differ by more than ``tolerance`` — ``warmup - 1 + repeats`` more times in
            bfloat16 and ``warmup + repeats`` times in float32 (the module docstring has the order).
        key: names the workload (model, artifact, path), e.g. ``"userllm:<digest>"``; with the CPU model,
            torch version and thread count it keys the cache file (:func:`verdict_path`).
        tolerance: largest absolute output difference (bfloat16 vs float32, last run of each) allowed for
            bfloat16, in the outputs' units (:data:`AUTO_TOLERANCE`: 0.01 of an expected rating).
        min_speedup: float32 median time / bfloat16 median time needed for bfloat16 (:data:`MIN_SPEEDUP`).
        cache_dir: model cache root (:func:`precision_cache_dir`); ``None``: the environment's or the default.
        warmup: untimed runs per precision before its timed ones (the first counts the accuracy check's run
            for bfloat16), >= 1: the first run after a conversion is never timed.
        repeats: timed runs per precision; their median is kept.
        clock: seconds, monotonic (``time.perf_counter``); tests pass a fake one.
        refresh: measure even when a verdict is cached (and replace it).

    Returns:
        The verdict; ``verdict.dtype`` is the choice. A cached verdict is re-decided with this call's
        ``tolerance`` and ``min_speedup`` from its stored figures, without running ``probe`` (unless it was not
        timed and this ``tolerance`` accepts its outputs: then it is measured again).

    Raises:
        ConfigError: a bad argument, or a probe whose outputs are not numbers, are empty, differ in shape
            between the precisions or are not finite in float32. Errors of ``probe`` itself propagate.
    """
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"key must name the workload (a non-empty string), got {key!r}.")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance >= 0:
        raise ConfigError(f"tolerance must be a number >= 0 (in the probe's output units), got {tolerance!r}.")
    if isinstance(min_speedup, bool) or not isinstance(min_speedup, int | float) or not min_speedup > 0:
        raise ConfigError(f"min_speedup must be a number > 0 (1.0: any speed-up), got {min_speedup!r}.")
    _check_int("warmup", warmup, 1)
    _check_int("repeats", repeats, 1)

    machine = _machine()
    path = _verdict_path(key, cache_dir, machine)
    cached = None if refresh else _read_verdict(path, key, machine)
    if cached is not None and cached.speedup is None and cached.max_abs_diff <= tolerance:
        cached = None  # refused untimed, but this tolerance accepts its outputs: only a timing can decide
    if cached is not None:
        dtype, reason = choose_precision(
            cached.float32_s, cached.bfloat16_s, cached.max_abs_diff, tolerance=tolerance, min_speedup=min_speedup
        )
        logger.debug("precision of %s from %s: %s (%s)", key, path, dtype, reason)
        return dataclasses.replace(cached, dtype=dtype, reason=reason, tolerance=tolerance, min_speedup=min_speedup)

    ref = _outputs(probe("float32"), "float32")
    if not np.all(np.isfinite(ref)):
        raise ConfigError(
            f"the precision probe of {key!r} returned non-finite outputs in float32. Fix: check the workload (it"
            " must give finite outputs at full precision)."
        )
    max_abs_diff = _max_abs_diff(key, ref, _outputs(probe("bfloat16"), "bfloat16"))
    float32_s: float | None = None
    bfloat16_s: float | None = None
    if max_abs_diff <= tolerance:  # accuracy first: outside the tolerance, speed is moot
        for _ in range(warmup - 1):
            probe("bfloat16")
        bfloat16_s, low = _timed_runs(probe, "bfloat16", repeats, clock, key)
        for _ in range(warmup):
            probe("float32")
        float32_s, ref = _timed_runs(probe, "float32", repeats, clock, key)
        max_abs_diff = _max_abs_diff(key, ref, low)
    dtype, reason = choose_precision(float32_s, bfloat16_s, max_abs_diff, tolerance=tolerance, min_speedup=min_speedup)
    verdict = PrecisionVerdict(
        key=key,
        dtype=dtype,
        reason=reason,
        float32_s=float32_s,
        bfloat16_s=bfloat16_s,
        max_abs_diff=max_abs_diff,
        tolerance=float(tolerance),
        min_speedup=float(min_speedup),
        n_outputs=int(ref.size),
        warmup=warmup,
        repeats=repeats,
        native_bf16_matmul=native_bf16_matmul(),
        measured_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **machine,
    )
    try:
        from recsim_personas._io import write_json

        write_json(path, verdict.to_dict())
    except OSError as e:  # a read-only cache: the verdict still holds for this process
        logger.warning("cannot cache the precision verdict at %s (%s); the next load measures again", path, e)
    logger.info("precision of %s: %s — %s (measured; cached at %s)", key, dtype, reason, path)
    return verdict


def resolve_inference_dtype(
    dtype: str,
    kind: str,
    probe: Probe | None = None,
    *,
    key: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """``"float32"`` or ``"bfloat16"``: ``dtype`` itself, or what ``"auto"`` means for a backbone ``kind``.

    ``"auto"`` with a ``probe`` is :func:`measure_precision`'s choice for the workload ``f"{kind}:{key}"``
    (bfloat16 only when faster and within :data:`AUTO_TOLERANCE` of float32 — in practice encoder agents may
    switch, causal ones, whose expected ratings moved by 0.07, stay float32); without a probe there is nothing
    to measure and ``"auto"`` is ``"float32"`` (CPU flags alone never choose bfloat16).
    :class:`~recsim_personas.agents.persona_agents.PersonaAgents` measures with its own backbone and prompts.

    Args:
        dtype: one of :data:`INFERENCE_DTYPES`.
        kind: ``"encoder"`` or ``"causal"``.
        probe: see :func:`measure_precision`.
        key: the workload's name, required with ``probe``.
        cache_dir: model cache root (:func:`precision_cache_dir`).

    Raises:
        ConfigError: ``dtype`` is not one of :data:`INFERENCE_DTYPES`, ``kind`` is unknown, or ``probe``
            without ``key``.
    """
    from recsim_personas.agents.backbone_config import KINDS

    if dtype not in INFERENCE_DTYPES:
        raise unknown_choice("inference dtype", str(dtype), INFERENCE_DTYPES)
    if kind not in KINDS:
        raise unknown_choice("backbone kind", str(kind), KINDS)
    if dtype != "auto":
        return dtype
    if probe is None:
        return "float32"
    if key is None:
        raise ConfigError("resolve_inference_dtype('auto', ...) with a probe needs key= naming the workload.")
    return measure_precision(probe, key=f"{kind}:{key}", cache_dir=cache_dir).dtype


__all__ = [
    "AUTO_TOLERANCE",
    "INFERENCE_DTYPES",
    "MIN_SPEEDUP",
    "PRECISION_CACHE_ENV",
    "PrecisionVerdict",
    "Probe",
    "choose_precision",
    "cpu_model_name",
    "cpuinfo_has_bf16",
    "measure_precision",
    "native_bf16_matmul",
    "precision_cache_dir",
    "resolve_inference_dtype",
    "verdict_path",
]
