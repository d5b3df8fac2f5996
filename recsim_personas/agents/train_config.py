"""How persona adapters are trained: :class:`LoraTrainConfig` and the prompt layout per backbone kind.

Light (imports no torch): the command line generates ``agents train``'s flags from this dataclass, so each
default is stated once, here. Defaults that depend on the backbone kind (rank, alpha, learning rate,
template) are ``None`` in the dataclass and filled in by :meth:`LoraTrainConfig.resolved`, the one place that
resolves them. The rank defaults follow the paper for causal LMs (r = 256, alpha = 32) and are small for the
CPU encoder (r = 16, alpha = 32).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from recsim_personas.agents.prompt import PromptConfig
from recsim_personas.errors import ConfigError, config_from_dict, unknown_choice

VARIANTS: tuple[str, ...] = ("persona", "single")
PRIORS: tuple[str, ...] = ("bias", "mf", "knn", "blend")
ANCHORS: tuple[str, ...] = (*PRIORS, "none")
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
TEMPLATES: tuple[str, ...] = ("paper", "compact")
DEFAULT_RANK = {"causal": 256, "encoder": 16}
DEFAULT_ALPHA = {"causal": 32, "encoder": 32}
DEFAULT_LR = {"causal": 2e-4, "encoder": 1e-3}
DEFAULT_TEMPLATE = {"causal": "paper", "encoder": "compact"}


@dataclass(frozen=True)
class LoraTrainConfig:
    """How persona adapters are trained.

    Attributes:
        variant: ``"persona"`` (one adapter per persona cluster) or ``"single"`` (one adapter for all users).
        memories: retrieved memories per prompt (0 = Ms only; the paper: 1).
        anchor: ``"bias"`` (logits + the bias rater's log-probabilities; the adapter learns the residual),
            ``"mf"`` / ``"knn"`` / ``"blend"`` (the same with that classical rater) or ``"none"``.
        rank: LoRA rank; ``None`` = 256 for causal LMs (the paper), 16 for the encoder.
        alpha: LoRA alpha; ``None`` = 32.
        dropout: LoRA dropout.
        lr: AdamW learning rate; ``None`` = 2e-4 (causal) / 1e-3 (encoder).
        weight_decay: AdamW weight decay.
        epochs: at most this many passes over each adapter's examples.
        patience: stop an adapter after this many epochs without a better validation NLL.
        batch_size: examples per optimisation step.
        eval_batch_size: examples per forward pass when scoring the validation slice.
        max_train: at most this many training examples in total (seeded sample); ``None`` = all.
        max_valid: at most this many validation examples in total.
        validation_share: share of each user's latest train ratings held out for early stopping.
        template: prompt template; ``None`` = ``"paper"`` (causal) / ``"compact"`` (encoder).
        precision: ``"float32"``, or ``"bfloat16"`` for mixed precision: forward and backward passes under
            ``torch.autocast`` in bfloat16 (fast on CPUs with native bfloat16 matrix units), while the LoRA
            weights, the optimiser state and the loss stay float32.
        prior_folds: folds of the out-of-fold prior the training examples are anchored on (see the prior
            module, agents/prior.py); 1 = the prior fitted on the whole history (in-sample for the examples).
        seed: root seed (example sampling, shuffling, adapter initialisation, dropout).
    """

    variant: Literal["persona", "single"] = "persona"
    memories: int = 1
    anchor: Literal["bias", "mf", "knn", "blend", "none"] = "bias"
    rank: int | None = None
    alpha: int | None = None
    dropout: float = 0.05
    lr: float | None = None
    weight_decay: float = 0.0
    epochs: int = 1
    patience: int = 1
    batch_size: int = 16
    eval_batch_size: int = 32
    max_train: int | None = None
    max_valid: int | None = 1000
    validation_share: float = 0.1
    template: Literal["paper", "compact"] | None = None
    precision: Literal["float32", "bfloat16"] = "float32"
    prior_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise unknown_choice("LoraTrainConfig.variant", str(self.variant), VARIANTS)
        if self.anchor not in ANCHORS:
            raise unknown_choice("LoraTrainConfig.anchor", str(self.anchor), ANCHORS)
        for name in ("memories", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"LoraTrainConfig.{name} must be a non-negative integer, got {v!r}.")
        for name in ("rank", "alpha", "max_train", "max_valid"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"LoraTrainConfig.{name} must be a positive integer or None, got {v!r}.")
        for name in ("epochs", "patience", "batch_size", "eval_batch_size", "prior_folds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"LoraTrainConfig.{name} must be a positive integer, got {v!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoraTrainConfig.dropout must be in [0, 1), got {self.dropout!r}.")
        if self.lr is not None and not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ConfigError(f"LoraTrainConfig.lr must be a positive number or None, got {self.lr!r}.")
        if not self.weight_decay >= 0:
            raise ConfigError(f"LoraTrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}.")
        if not 0.0 < self.validation_share < 0.5:
            raise ConfigError(f"LoraTrainConfig.validation_share must be in (0, 0.5), got {self.validation_share!r}.")
        if self.precision not in PRECISIONS:
            raise unknown_choice("LoraTrainConfig.precision", str(self.precision), PRECISIONS)
        if self.template is not None and self.template not in TEMPLATES:
            raise unknown_choice("LoraTrainConfig.template", str(self.template), TEMPLATES)

    def resolved(self, kind: str) -> LoraTrainConfig:
        """A copy with every ``None`` default filled in for backbone ``kind`` (the one place that does it);
        resolving a resolved config changes nothing."""
        return dataclasses.replace(
            self,
            rank=self.rank if self.rank is not None else DEFAULT_RANK[kind],
            alpha=self.alpha if self.alpha is not None else DEFAULT_ALPHA[kind],
            lr=float(self.lr if self.lr is not None else DEFAULT_LR[kind]),
            template=self.template if self.template is not None else DEFAULT_TEMPLATE[kind],
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraTrainConfig:
        return config_from_dict(cls, d, "LoRA training config fields")


def prompt_config(kind: str, template: str, max_length: int) -> PromptConfig:
    """The prompt layout of a backbone: the budget is the backbone's ``max_length``."""
    return PromptConfig(
        template=template,  # type: ignore[arg-type]
        max_length=max_length,
        memory_max_tokens=160 if kind == "causal" else 64,
        description_min_tokens=64 if kind == "causal" else 32,
        movie_min_tokens=48 if kind == "causal" else 32,
    )
