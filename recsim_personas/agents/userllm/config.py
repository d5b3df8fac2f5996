"""Settings of the USER-LLM user encoder and its pretraining (light: no numpy, no torch)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from recsim_personas.errors import ConfigError, config_from_dict


def _check_int(owner: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{owner}.{name} must be an integer >= {low}, got {value!r}.")


def _check_real(owner: str, name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise ConfigError(f"{owner}.{name} must be a number in {bracket}{low}, {high}], got {value!r}.")


@dataclass(frozen=True)
class UserEncoderConfig:
    """Shape of the user encoder: per-event early fusion, then a small causal Transformer.

    Every event of a history (a rating) is fused from five embeddings — the movie id, its genres (a linear map
    of the genre indicators), the rating, its release-year bucket and the time since the previous event
    (bucketed) — concatenated (``field_dim`` each) and projected to ``d_model``; a learned position embedding is
    added and ``n_layers`` pre-norm Transformer layers with a causal mask read the sequence. Histories longer than
    ``max_len`` keep their latest ``max_len`` events.

    Attributes:
        d_model: width of the Transformer (and of the event vectors it outputs).
        field_dim: width of each field's embedding before the fusion projection.
        n_layers: Transformer layers.
        n_heads: attention heads (``d_model`` must be divisible by it).
        ffn_mult: feed-forward width as a multiple of ``d_model``.
        dropout: dropout in the Transformer and on the fused events.
        max_len: the longest history read (latest events kept).
        year_bucket: width of the release-year buckets, in years.
    """

    d_model: int = 64
    field_dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    ffn_mult: int = 4
    dropout: float = 0.1
    max_len: int = 256
    year_bucket: int = 5

    def __post_init__(self) -> None:
        for name in ("d_model", "field_dim", "n_layers", "n_heads", "ffn_mult", "max_len", "year_bucket"):
            _check_int("UserEncoderConfig", name, getattr(self, name), 1)
        _check_real("UserEncoderConfig", "dropout", self.dropout, 0.0, 0.9)
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"UserEncoderConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserEncoderConfig:
        return config_from_dict(cls, d, "UserEncoderConfig field")


@dataclass(frozen=True)
class ResamplerConfig:
    """The Perceiver resampler: ``n_latents`` learned queries read the encoder's event vectors by
    cross-attention (``n_layers`` blocks of cross-attention + feed-forward), giving a fixed number of user
    tokens whatever the history length.

    Attributes:
        n_latents: user tokens out (the paper's L).
        n_layers: cross-attention blocks.
        n_heads: attention heads (the encoder's ``d_model`` must be divisible by it).
        ffn_mult: feed-forward width as a multiple of ``d_model``.
    """

    n_latents: int = 16
    n_layers: int = 1
    n_heads: int = 4
    ffn_mult: int = 2

    def __post_init__(self) -> None:
        for name in ("n_latents", "n_layers", "n_heads", "ffn_mult"):
            _check_int("ResamplerConfig", name, getattr(self, name), 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResamplerConfig:
        return config_from_dict(cls, d, "ResamplerConfig field")


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining of the user encoder on next-event prediction over the split's history.

    At every position of a history the encoder predicts the next event: its movie (softmax over the
    catalogue), its genres (independent sigmoids) and its rating (softmax over 1–5); the loss is
    ``item_weight · CE(item) + genre_weight · BCE(genres) + rating_weight · CE(rating)``.

    Attributes:
        epochs: passes over the histories.
        batch_size: histories per step.
        rating_mse_weight: weight of the squared error of the expected rating, added to the cross-entropy (0:
            the cross-entropy alone); the epoch kept is the one with the lowest validation value of this loss.
        lr: AdamW learning rate (linear warm-up over the first ``warmup_steps``, then constant).
        weight_decay: AdamW weight decay.
        warmup_steps: warm-up steps.
        item_weight: weight of the next-movie loss.
        genre_weight: weight of the next-genres loss.
        rating_weight: weight of the next-rating loss.
        validation_share: share of the history users held out to report the validation loss each epoch.
        patience: stop after this many epochs without a better validation loss (the best weights are kept).
        seed: seed of the initialisation, the data order, the validation users and dropout.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    item_weight: float = 1.0
    genre_weight: float = 0.5
    rating_weight: float = 0.5
    validation_share: float = 0.1
    patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            _check_int("PretrainConfig", name, getattr(self, name), 1)
        for name in ("warmup_steps", "seed"):
            _check_int("PretrainConfig", name, getattr(self, name), 0)
        _check_real("PretrainConfig", "lr", self.lr, 0.0, 1.0, open_low=True)
        _check_real("PretrainConfig", "weight_decay", self.weight_decay, 0.0, 1.0)
        for name in ("item_weight", "genre_weight", "rating_weight"):
            _check_real("PretrainConfig", name, getattr(self, name), 0.0, 100.0)
        _check_real("PretrainConfig", "validation_share", self.validation_share, 0.0, 0.5)
        if self.item_weight + self.genre_weight + self.rating_weight <= 0:
            raise ConfigError("PretrainConfig: at least one of item_weight, genre_weight, rating_weight must be > 0.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        return config_from_dict(cls, d, "PretrainConfig field")


INTEGRATIONS: tuple[str, ...] = ("cross_attention", "soft_prompt")
BACKBONE_KINDS: tuple[str, ...] = ("encoder", "causal")
STRATEGIES: tuple[str, ...] = ("full", "enc", "lora", "proj")
ANCHORS: tuple[str, ...] = ("none", "bias", "mf", "knn", "blend")
FOLDS_BY: tuple[str, ...] = ("random", "time")


@dataclass(frozen=True)
class UserLLMConfig:
    """How the user tokens enter the frozen backbone (the agent's architecture).

    Attributes:
        backbone: the text backbone: ``"minilm"`` (MiniLM-L6, offline; the default) or any BERT-family encoder
            (a local directory or Hugging Face id); with ``backbone_kind="causal"``, ``"smollm2"``
            (SmolLM2-135M-Instruct, offline) or any decoder-only LM with rotary positions (Llama, Qwen2, ...).
        backbone_kind: ``"encoder"`` or ``"causal"`` (the family of ``backbone``).
        integration: ``"cross_attention"`` — gated cross-attention blocks after the backbone layers named by
            ``cross_layers`` (queries: the backbone's hidden states; keys/values: the user tokens; a tanh gate
            initialised at 0, so training starts from the backbone) — or ``"soft_prompt"`` — the user tokens
            prepended to the text's input embeddings.
        cross_layers: after how many backbone layers each cross-attention block sits (0 = on the embeddings,
            the backbone's layer count = after its last layer; ``None``, the default: one block after the last
            layer, whatever the backbone). Everything below the lowest block depends only on the movie and is
            computed once per movie.
        cross_heads: attention heads of each cross-attention block.
        cross_head_dim: width of each of those heads. The blocks' inner width ``cross_heads × cross_head_dim`` may
            be narrower than the backbone's (MiniLM: 12 × 32 = 384): the per-rating cost of the cached path grows
            with it (the default 4 × 16 rated about 9× faster than 12 × 32 per 640-request batch in
            ``benchmarks/userllm_agents.py``).
        dense: a gated feed-forward layer after each cross-attention (Flamingo's "xattn-dense").
        max_text_tokens: token budget of a movie's description.
        n_latents: user tokens (the Perceiver resampler's latents).
        resampler_layers: the resampler's cross-attention blocks.
    """

    backbone: str = "minilm"
    backbone_kind: str = "encoder"
    integration: str = "cross_attention"
    cross_layers: tuple[int, ...] | None = None
    cross_heads: int = 4
    cross_head_dim: int = 16
    dense: bool = False
    max_text_tokens: int = 96
    n_latents: int = 16
    resampler_layers: int = 1

    def __post_init__(self) -> None:
        from recsim_personas.errors import unknown_choice

        if self.integration not in INTEGRATIONS:
            raise unknown_choice("UserLLMConfig.integration", str(self.integration), INTEGRATIONS)
        if self.backbone_kind not in BACKBONE_KINDS:
            raise unknown_choice("UserLLMConfig.backbone_kind", str(self.backbone_kind), BACKBONE_KINDS)
        if self.backbone_kind == "causal" and str(self.backbone).strip().lower() == "minilm":
            raise ConfigError(
                "UserLLMConfig.backbone 'minilm' is an encoder, not a causal LM. Fix: pass backbone 'smollm2' (or a"
                " causal LM's id) with backbone_kind 'causal', or backbone_kind 'encoder'."
            )
        if self.cross_layers is not None:
            layers = tuple(self.cross_layers)
            if self.integration == "cross_attention" and (
                not layers or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in layers)
            ):
                raise ConfigError(
                    f"UserLLMConfig.cross_layers must be one or more layer counts >= 0, got {self.cross_layers!r}."
                )
            if len(set(layers)) != len(layers):
                raise ConfigError(f"UserLLMConfig.cross_layers lists a layer twice: {self.cross_layers!r}.")
            object.__setattr__(self, "cross_layers", tuple(sorted(layers)))
        for name in ("cross_heads", "cross_head_dim", "max_text_tokens", "n_latents", "resampler_layers"):
            _check_int("UserLLMConfig", name, getattr(self, name), 1)
        if not isinstance(self.dense, bool):
            raise ConfigError(f"UserLLMConfig.dense must be true or false, got {self.dense!r}.")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cross_layers"] = None if self.cross_layers is None else list(self.cross_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserLLMConfig:
        d = dict(d)
        if d.get("cross_layers") is not None:
            d["cross_layers"] = tuple(d["cross_layers"])
        return config_from_dict(cls, d, "UserLLMConfig field")


@dataclass(frozen=True)
class UserLLMTrainConfig:
    """Training the USER-LLM agent on the split's history ratings.

    Each history user's ratings are cut into chunks of ``targets_per_cut`` in time order; the encoder reads
    everything before a chunk (its latest ``max_len`` events) and the agent rates the chunk's movies. The loss is
    the cross-entropy of the real ratings under ``softmax(head logits + log P_prior)`` (``anchor``; the prior of a
    training rating is fitted without it, ``prior_folds``-fold).

    Attributes:
        strategy: what trains (the paper's four): ``"full"`` — everything, the backbone too; ``"enc"`` — the user
            encoder, resampler, projection, cross-attention and head, the backbone frozen; ``"lora"`` — as
            ``enc`` plus LoRA adapters on the backbone (PEFT); ``"proj"`` — resampler, projection,
            cross-attention and head, the pretrained encoder and the backbone frozen.
        anchor: the classical prior the logits are anchored on (``"none"`` for none).
        prior_folds: folds of the out-of-fold prior of the training ratings.
        prior_folds_by: ``"random"`` — the training ratings dealt into folds at random (the prior of one has seen
            its user's later ratings) — or ``"time"`` — as the test ratings' prior, it knows the other users and
            only its own user's earlier ratings (``prior_folds`` user groups × ``prior_folds`` time blocks: the
            prior is fitted ``prior_folds²`` times).
        epochs: passes over the chunks.
        batch_size: chunks (user prefixes) per step.
        max_chunks_per_epoch: train on a seeded sample of at most this many chunks per epoch (``None``: all) — for
            the strategies that run the backbone per rating (``full``, ``lora``, the soft prompt).
        targets_per_cut: ratings per chunk.
        min_prefix: events a user must have before its first chunk.
        rating_mse_weight: weight of the squared error of the expected rating, added to the cross-entropy (0:
            the cross-entropy alone); the epoch kept is the one with the lowest validation value of this loss.
        lr: AdamW learning rate (backbone parameters, for ``full`` and ``lora``, at a tenth of it).
        weight_decay: AdamW weight decay.
        lora_r: LoRA rank (``lora``).
        lora_alpha: LoRA scaling numerator (``lora``).
        lora_per_persona: (``lora``) one LoRA adapter per persona cluster — the first source's persona variant —
            instead of one for all users; users without a persona (the background users) share one more adapter.
            The clusters come from the personas (``recsim-personas personas cluster``).
        validation_share: share of the history users held out to choose the best epoch (their NLL).
        patience: stop after this many epochs without a better validation NLL.
        seed: seed of the initialisation, the chunks' order, the validation users, the prior folds and dropout.
    """

    strategy: str = "enc"
    anchor: str = "bias"
    prior_folds: int = 5
    prior_folds_by: str = "random"
    epochs: int = 8
    batch_size: int = 32
    max_chunks_per_epoch: int | None = None
    targets_per_cut: int = 16
    min_prefix: int = 5
    rating_mse_weight: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.01
    lora_r: int = 8
    lora_alpha: int = 16
    lora_per_persona: bool = False
    validation_share: float = 0.1
    patience: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        from recsim_personas.errors import unknown_choice

        if self.strategy not in STRATEGIES:
            raise unknown_choice("UserLLMTrainConfig.strategy", str(self.strategy), STRATEGIES)
        if self.anchor not in ANCHORS:
            raise unknown_choice("UserLLMTrainConfig.anchor", str(self.anchor), ANCHORS)
        if self.prior_folds_by not in FOLDS_BY:
            raise unknown_choice("UserLLMTrainConfig.prior_folds_by", str(self.prior_folds_by), FOLDS_BY)
        for name in ("prior_folds", "epochs", "batch_size", "targets_per_cut", "min_prefix", "lora_r", "lora_alpha"):
            _check_int("UserLLMTrainConfig", name, getattr(self, name), 1)
        for name in ("patience", "seed"):
            _check_int("UserLLMTrainConfig", name, getattr(self, name), 0)
        if not isinstance(self.lora_per_persona, bool):
            raise ConfigError(
                f"UserLLMTrainConfig.lora_per_persona must be true or false, got {self.lora_per_persona!r}."
            )
        if self.lora_per_persona and self.strategy != "lora":
            raise ConfigError(
                f"UserLLMTrainConfig.lora_per_persona needs strategy 'lora', got {self.strategy!r}. Fix: pass"
                " --strategy lora, or drop --lora-per-persona."
            )
        if self.max_chunks_per_epoch is not None:
            _check_int("UserLLMTrainConfig", "max_chunks_per_epoch", self.max_chunks_per_epoch, 1)
        _check_real("UserLLMTrainConfig", "lr", self.lr, 0.0, 1.0, open_low=True)
        _check_real("UserLLMTrainConfig", "rating_mse_weight", self.rating_mse_weight, 0.0, 100.0)
        _check_real("UserLLMTrainConfig", "weight_decay", self.weight_decay, 0.0, 1.0)
        _check_real("UserLLMTrainConfig", "validation_share", self.validation_share, 0.0, 0.5)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserLLMTrainConfig:
        return config_from_dict(cls, d, "UserLLMTrainConfig field")
