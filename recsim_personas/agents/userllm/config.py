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
