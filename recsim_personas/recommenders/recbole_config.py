"""Which RecBole models the adapter trains, and how: the model registry, per-model settings, :class:`RecBoleConfig`.

- :func:`recbole_models` — RecBole's general and sequential models, read from its own registry
  (``recbole.model.general_recommender`` / ``sequential_recommender``).
- :data:`UNSUPPORTED` — models among them that need what a split does not have (item features, a knowledge
  graph, a click label); :func:`resolve_model` refuses them by name, with the reason, before any work.
- :data:`MODEL_PARAMS` — the RecBole parameters a model needs to train at all (its loss, negative sampling).
- :class:`RecBoleConfig` — the training settings, and :meth:`RecBoleConfig.recbole_params`, the ``config_dict``
  handed to RecBole's ``Config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from recsim_personas.errors import ConfigError, config_from_dict

Kind = Literal["general", "sequential"]

MODEL_DATASET = "recsim"
"""Name of the RecBole dataset (and of its atomic files) a model is trained on."""

RESERVED = (
    "model",
    "dataset",
    "data_path",
    "benchmark_filename",
    "load_col",
    "eval_args",
    "checkpoint_dir",
    "use_gpu",
    "device",
    "seed",
    "epochs",
    "learning_rate",
    "train_batch_size",
    "embedding_size",
    "hidden_size",
    "MAX_ITEM_LIST_LENGTH",
    "show_progress",
    "save_dataset",
    "save_dataloaders",
    "log_wandb",
    "metrics",
    "topk",
    "state",
    "metric_decimal_place",
    "eval_step",
    "stopping_step",
    "valid_metric",
    "pretrain_epochs",
)
"""RecBole parameters this adapter sets itself (not allowed in :attr:`RecBoleConfig.params`)."""

UNSUPPORTED: dict[str, str] = {
    "FDSA": "item feature fields (RecBole's 'selected_features')",
    "GRU4RecF": "item feature fields (RecBole's 'selected_features')",
    "SASRecF": "item feature fields (RecBole's 'selected_features')",
    "S3Rec": "item attribute fields for its pre-training stage",
    "GRU4RecKG": "a knowledge graph (.kg/.link/.ent files)",
    "KSR": "a knowledge graph (.kg/.link/.ent files)",
    "DIN": "context features and a click label (it is a click-through-rate model)",
    "DIEN": "context features and a click label (it is a click-through-rate model)",
}
"""RecBole general/sequential models that need more than user-item-time interactions, and what they need."""

NEGATIVE_SAMPLING: dict[str, Any] = {
    "distribution": "uniform",
    "sample_num": 1,
    "alpha": 1.0,
    "dynamic": False,
    "candidate_num": 0,
}
"""RecBole's default negative sampling: one uniformly drawn unseen item per training interaction."""

MODEL_PARAMS: dict[str, dict[str, Any]] = {
    # Sequential models train with the cross-entropy loss over all items and no sampled negatives (the adapter's
    # default for them); these two only have a pairwise loss, scored against one sampled negative item.
    "FPMC": {"loss_type": "BPR", "train_neg_sample_args": NEGATIVE_SAMPLING},
    "TransRec": {"loss_type": "BPR", "train_neg_sample_args": NEGATIVE_SAMPLING},
}
"""RecBole parameters a model requires to train (applied before :attr:`RecBoleConfig.params`)."""
PRETRAINING = ("RaCT",)
"""Models whose RecBole trainer trains for ``pretrain_epochs`` (RecBole's default 150 for RaCT's actor
pre-training, its default stage) instead of ``epochs``: the adapter sets ``pretrain_epochs`` to the epoch cap."""


# ------------------------------------------------------------------------------------------- models
def recbole_models() -> dict[str, Kind]:
    """RecBole's general and sequential models, supported or not: ``{class name: kind}`` (a fresh copy)."""
    return dict(_recbole_models())


@functools.cache
def _recbole_models() -> dict[str, Kind]:
    from recsim_personas.recommenders.recbole_compat import apply

    apply()
    import recbole.model.general_recommender as general
    import recbole.model.sequential_recommender as sequential
    from recbole.model.abstract_recommender import GeneralRecommender, SequentialRecommender

    out: dict[str, Kind] = {}
    for module, base, kind in (
        (general, GeneralRecommender, "general"),
        (sequential, SequentialRecommender, "sequential"),
    ):
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base:
                out[name] = kind  # type: ignore[assignment]
    return out


def resolve_model(name: str) -> tuple[str, Kind]:
    """RecBole's spelling and kind of a model name (case-insensitive).

    Raises:
        ConfigError: not a RecBole general or sequential model (the message lists the closest names), or one
            in :data:`UNSUPPORTED` (the message says what it needs).
    """
    from recsim_personas.recommenders.recbole_compat import RECBOLE_VERSION

    models = _recbole_models()
    if not isinstance(name, str) or not name:
        raise ConfigError(f"expected a RecBole model name such as 'BPR', got {name!r}. Fix: pass the model's name.")
    by_lower = {m.lower(): m for m in models}
    canonical = by_lower.get(name.lower())
    if canonical is None:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
        hint = (" Did you mean " + " or ".join(repr(by_lower[c]) for c in close) + "?") if close else ""
        raise ConfigError(
            f"unknown RecBole model {name!r}: expected one of RecBole {RECBOLE_VERSION}'s general or sequential"
            f" models.{hint} Fix: pass one of the known models: {', '.join(sorted(models))}."
        )
    if canonical in UNSUPPORTED:
        raise ConfigError(
            f"RecBole model {canonical} needs {UNSUPPORTED[canonical]}, which a protocol split does not provide"
            " (its atomic files hold user, item and time only). Fix: pick an interaction-only model, e.g."
            " BPR, LightGCN, GRU4Rec or SASRec."
        )
    return canonical, models[canonical]


# ------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class RecBoleConfig:
    """How to train a RecBole model on a split.

    Attributes:
        model: a RecBole general or sequential model name (case-insensitive; stored in RecBole's spelling).
        epochs: training epochs, exactly (no validation); ``None``: early stopping on a validation slice of
            the history (see ``max_epochs``, ``stopping_step``, ``valid_share``).
        max_epochs: with ``epochs=None``, the most epochs trained before early stopping ends it.
        stopping_step: with ``epochs=None``, stop after this many epochs without a better validation NDCG@10
            (RecBole's ``stopping_step``); the best epoch's weights are kept.
        valid_share: with ``epochs=None``, the share of each sampled user's train ratings (their latest,
            at least one) held out of training to validate a general model; sequential models validate on
            each user's last history item (RecBole's leave-one-out split) either way. Never the test part.
        learning_rate: Adam learning rate.
        train_batch_size: training batch size.
        embedding_size: embedding size of general models (``embedding_size``) and hidden size of sequential
            ones (``hidden_size``).
        max_seq_len: longest history a sequential model reads (RecBole's ``MAX_ITEM_LIST_LENGTH``); also the
            observation history the policy asks the environment for.
        seed: seed of RecBole's initialisation and sampling (global random states are restored afterwards).
        num_threads: torch threads while training and scoring (restored afterwards); 1 is fastest on a
            shared machine.
        params: further RecBole parameters for the model (e.g. ``{"n_layers": 2}``), JSON values only.
    """

    model: str
    epochs: int | None = None
    max_epochs: int = 50
    stopping_step: int = 5
    valid_share: float = 0.1
    learning_rate: float = 1e-3
    train_batch_size: int = 2048
    embedding_size: int = 64
    max_seq_len: int = 50
    seed: int = 0
    num_threads: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        canonical, _ = resolve_model(self.model)
        object.__setattr__(self, "model", canonical)
        positive = ["max_epochs", "stopping_step", "train_batch_size", "embedding_size", "max_seq_len", "num_threads"]
        for name in [*positive, *(["epochs"] if self.epochs is not None else [])]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"RecBoleConfig.{name} must be a positive integer, got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"RecBoleConfig.seed must be a non-negative integer, got {self.seed!r}.")
        for name, upper, bound in (
            ("learning_rate", math.inf, "a positive number"),
            ("valid_share", 0.5, "a number in (0, 0.5]"),
        ):
            value = getattr(self, name)
            number = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
            if not number or not 0 < value <= upper:
                raise ConfigError(f"RecBoleConfig.{name} must be {bound}, got {value!r}.")
        if not isinstance(self.params, Mapping):
            raise ConfigError(f"RecBoleConfig.params must be a mapping of RecBole parameters, got {self.params!r}.")
        taken = sorted(set(self.params) & set(RESERVED))
        if taken:
            raise ConfigError(
                f"RecBoleConfig.params sets {taken[0]!r}, which the adapter sets itself. Fix: use the"
                " RecBoleConfig field (epochs, max_epochs, stopping_step, learning_rate, train_batch_size,"
                " embedding_size, max_seq_len, seed) or drop it."
            )
        try:
            json.dumps(dict(self.params))
        except TypeError as exc:
            raise ConfigError(f"RecBoleConfig.params must hold JSON values only: {exc}.") from None
        object.__setattr__(self, "params", dict(self.params))

    @property
    def kind(self) -> Kind:
        return resolve_model(self.model)[1]

    @property
    def early_stopping(self) -> bool:
        """Whether training stops on the validation slice (``epochs is None``)."""
        return self.epochs is None

    @property
    def epoch_cap(self) -> int:
        """The most epochs training runs: ``epochs``, or ``max_epochs`` with early stopping."""
        return self.max_epochs if self.epochs is None else self.epochs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecBoleConfig:
        return config_from_dict(cls, d, "RecBoleConfig field")

    def recbole_params(self, data_path: str, checkpoint_dir: str, progress: bool) -> dict[str, Any]:
        """The ``config_dict`` handed to RecBole's ``Config``."""
        kind = self.kind
        params: dict[str, Any] = {
            "data_path": data_path,
            "checkpoint_dir": checkpoint_dir,
            "use_gpu": False,
            "seed": self.seed,
            "reproducibility": True,
            "epochs": self.epoch_cap,
            "learning_rate": float(self.learning_rate),
            "train_batch_size": self.train_batch_size,
            "show_progress": progress,
            "save_dataset": False,
            "save_dataloaders": False,
            "log_wandb": False,
            "metrics": ["Recall", "NDCG", "MRR"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "eval_batch_size": 4096,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "metric_decimal_place": 6,
            "state": "WARNING",
        }
        if self.early_stopping:
            params["eval_step"] = 1
            params["stopping_step"] = self.stopping_step
        if kind == "general":
            params["benchmark_filename"] = ["train", "valid", "test"]
            params["eval_args"] = {"group_by": "user", "order": "TO", "mode": "full", "split": {"RS": [0.8, 0.1, 0.1]}}
            params["embedding_size"] = self.embedding_size
        else:
            params["eval_args"] = {"group_by": "user", "order": "TO", "mode": "full", "split": {"LS": "valid_only"}}
            params["MAX_ITEM_LIST_LENGTH"] = self.max_seq_len
            params["hidden_size"] = self.embedding_size
            params["train_neg_sample_args"] = None
            params["loss_type"] = "CE"
        if self.model in PRETRAINING:  # its trainer runs RecBole's pretrain_epochs, not epochs
            params["pretrain_epochs"] = self.epoch_cap
        params.update(MODEL_PARAMS.get(self.model, {}))
        params.update(self.params)
        return params
