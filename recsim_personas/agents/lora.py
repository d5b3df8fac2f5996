"""Persona-LoRA training: one PEFT LoRA adapter per persona cluster (or one for all users) with RAFT data.

The training driver of the persona agents (:func:`train_agents`):

1. RAFT examples from the split's train ratings (:mod:`recsim_personas.agents.raft`): each train
   interaction with the user's Ms, the ``memories`` most similar other train memories, the item and the real
   rating; the latest ``validation_share`` of each user's train ratings form the validation slice.
2. Prompts are token ids from :class:`~recsim_personas.agents.prompt.PromptBuilder` (``"paper"`` template
   for causal LMs, ``"compact"`` for the encoder), within the backbone's token budget.
3. **Adapters**: variant ``"persona"`` trains one adapter per persona cluster (``persona_<c>``, on the
   examples of that cluster's users); ``"single"`` trains one adapter (``single``) on everyone. All live in
   one ``PeftModel``; :func:`peft.PeftModel.set_adapter` makes the one being trained the only trainable one.
   The encoder's ``rating_head`` is saved per adapter (``modules_to_save``).
4. **Prior anchoring** (``anchor="bias"``, the default): the loss is the cross entropy of
   ``backbone logits + log P_prior(r | u, i)``, where ``P_prior`` is the classical
   :class:`~recsim_personas.agents.classical.BiasRater` (``anchor="mf"``: the biased-MF rater; ``"knn"``:
   item-kNN with baseline; ``"blend"``: the hold-out-weighted blend of the three) fitted on the split's
   history (train + background, never a test rating). The adapter learns the residual. The prior's fit is
   stored in the artifact (:class:`AnchorPrior`, via :func:`~recsim_personas.agents.classical.save_rater`),
   so inference does not refit it.
   **Out-of-fold prior for the training examples** (``prior_folds``, default 5): the RAFT examples *are*
   history ratings, so the prior fitted on the whole history has seen every one of them (biased MF reaches
   RMSE 0.80 on them in-sample, against 0.91 out of fold and 0.95 on the test part) and an adapter trained
   against it learns to trust a prior that is far more accurate on its training data than it will be on
   new ratings. So the split's train ratings are dealt into ``prior_folds`` seeded folds; each example is
   anchored on a prior fitted on the history *without its fold* (:func:`out_of_fold_log_probs`) — the
   same position as a test rating, which the stored prior has not seen either. ``prior_folds=1`` keeps the
   in-sample prior (ablation).
5. **Early stopping** on the validation slice: the validation NLL is measured before training (the
   untrained adapter, which with anchoring is the prior) and after every epoch; the best state is kept and
   training stops after ``patience`` epochs without improvement.
6. **Resumable**: after every epoch the adapter's weights (and its best weights so far) are checkpointed as
   safetensors with a JSON state; a rerun of the same command continues from the last finished epoch (the
   Adam moments restart) and skips adapters already saved. A run directory holding another configuration,
   split or persona set is refused.

Artifact layout (``out/``)::

    run.json                    what is being trained (written first; a rerun must match it)
    prior/prior.json, prior/user_bias.parquet, prior/item_bias.parquet
    checkpoints/<adapter>/      last.safetensors, best.safetensors, state.json (while training)
    adapters/<adapter>/         adapter_config.json + adapter_model.safetensors (PEFT's own format)
    train_log.jsonl             one line per adapter epoch (losses, seconds)
    manifest.json               written last: base model + fingerprint, split id, personas manifest hash,
                                cluster map user -> adapter, configs, validation losses, library versions

The rank defaults follow the paper for causal LMs (r = 256, alpha = 32) and are small for the CPU encoder
(r = 16, alpha = 32).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from recsim_personas import __version__
from recsim_personas._io import atomic_path, sha256_file, write_json
from recsim_personas.agents.backbones import BackboneConfig, build_backbone, lora_targets
from recsim_personas.agents.classical import (
    BiasRater,
    MFConfig,
    MFRater,
    PointRater,
    _gaussian_table,
    load_rater,
    make_rater,
    save_rater,
)
from recsim_personas.agents.prompt import PromptBuilder, PromptConfig
from recsim_personas.agents.raft import RaftConfig, RaftExample, raft_examples
from recsim_personas.errors import ArtifactError, ConfigError, UnknownUserError, config_from_dict, unknown_choice

logger = logging.getLogger(__name__)

AGENTS_FORMAT = "recsim-personas/persona-agents"
AGENTS_FORMAT_VERSION = 1
VARIANTS: tuple[str, ...] = ("persona", "single")
PRIORS: tuple[str, ...] = ("bias", "mf", "knn", "blend")
ANCHORS: tuple[str, ...] = (*PRIORS, "none")
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
SINGLE_ADAPTER = "single"
DEFAULT_RANK = {"causal": 256, "encoder": 16}
DEFAULT_ALPHA = {"causal": 32, "encoder": 32}
DEFAULT_LR = {"causal": 2e-4, "encoder": 1e-3}
DEFAULT_TEMPLATE = {"causal": "paper", "encoder": "compact"}


def adapter_name(cluster: int) -> str:
    """PEFT adapter name of persona cluster ``cluster`` (``persona_<c>``)."""
    return f"persona_{int(cluster)}"


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------
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
        prior_folds: folds of the out-of-fold prior the training examples are anchored on (see the module
            docstring); 1 = the prior fitted on the whole history (in-sample for the examples).
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
        if self.template is not None and self.template not in ("paper", "compact"):
            raise unknown_choice("LoraTrainConfig.template", str(self.template), ("paper", "compact"))

    def resolved(self, kind: str) -> LoraTrainConfig:
        """A copy with every ``None`` default filled in for backbone ``kind``."""
        return dataclasses.replace(
            self,
            rank=self.rank or DEFAULT_RANK[kind],
            alpha=self.alpha or DEFAULT_ALPHA[kind],
            lr=float(self.lr or DEFAULT_LR[kind]),
            template=self.template or DEFAULT_TEMPLATE[kind],
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


# ---------------------------------------------------------------------------------------------------------
# the anchoring prior
# ---------------------------------------------------------------------------------------------------------
class AnchorPrior:
    """The classical prior the agents' logits are anchored on (a fitted classical rater) and its log-probs.

    Args:
        rater: a fitted classical :class:`~recsim_personas.agents.classical.PointRater` (``bias``, ``mf``,
            ``knn`` or ``blend``).
    """

    def __init__(self, rater: PointRater) -> None:
        if not isinstance(rater, PointRater) or rater.name not in PRIORS:
            raise ConfigError(
                f"the anchoring prior must be one of the classical raters {', '.join(PRIORS)}, got {rater!r}."
            )
        rater._check_fitted()
        self.rater = rater
        self.name = rater.name

    @classmethod
    def fit(cls, history: pd.DataFrame, kind: str = "bias") -> AnchorPrior:
        """Fit the ``kind`` rater (one of :data:`PRIORS`) on ``history`` (train + background ratings; never a
        test rating). Deterministic (MF draws from its own seeded generator)."""
        if kind not in PRIORS:
            raise unknown_choice("anchoring prior", str(kind), PRIORS)
        return cls(make_rater(kind).fit(history))

    def log_probs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``log P_prior(rating = k + 1 | user, item)``, float64 (n, 5), finite."""
        return np.log(np.maximum(self.rater.predict(users, items), 1e-12))

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        """Write the fitted rater (``rater.json`` + ``rater.npz``, no pickle); returns their sha256."""
        return save_rater(self.rater, out_dir)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnchorPrior:
        """Read a saved prior (also the ``prior.json`` + parquet layout of bias / MF priors saved earlier)."""
        path = Path(path)
        if (path / "prior.json").is_file() and not (path / "rater.json").is_file():
            return cls(_load_parquet_prior(path))
        return cls(load_rater(path))


def _load_parquet_prior(path: Path) -> BiasRater | MFRater:
    """A bias / MF prior in the layout of earlier artifacts: ``prior.json`` + ``user_bias`` / ``item_bias`` parquet."""
    try:
        meta = json.loads((path / "prior.json").read_text(encoding="utf-8"))
        users = pd.read_parquet(path / "user_bias.parquet")
        items = pd.read_parquet(path / "item_bias.parquet")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read the anchoring prior in {str(path)!r}: {exc}.") from exc
    uid = pd.Index(users["id"].to_numpy(dtype=np.int64))
    iid = pd.Index(items["id"].to_numpy(dtype=np.int64))
    rater: BiasRater | MFRater
    if meta["rater"] == "bias":
        rater = BiasRater(meta["reg_user"], meta["reg_item"], meta["n_sweeps"], meta["calibration_share"])
        rater.user_bias_ = pd.Series(users["bias"].to_numpy(), index=uid)
        rater.item_bias_ = pd.Series(items["bias"].to_numpy(), index=iid)
    elif meta["rater"] == "mf":
        rater = MFRater(MFConfig(**meta["config"]), meta["calibration_share"])
        rater._best_epochs = meta["best_epochs"]
        rater.user_index_, rater.item_index_ = uid, iid
        rater.bu_, rater.bi_ = users["bias"].to_numpy(), items["bias"].to_numpy()
        rater.P_ = users.filter(regex=r"^f\d+$").to_numpy(dtype=np.float64)
        rater.Q_ = items.filter(regex=r"^f\d+$").to_numpy(dtype=np.float64)
    else:
        raise ArtifactError(f"{path / 'prior.json'}: unknown prior rater {meta['rater']!r}.")
    rater.mu_ = float(meta["mu"])
    rater.sigma = float(meta["sigma"])
    rater._table = _gaussian_table(rater.sigma)
    return rater


def out_of_fold_log_probs(
    split: Any, kind: str, folds: int, seed: int, *, full: AnchorPrior | None = None
) -> pd.DataFrame:
    """Log-probabilities of every train rating of ``split`` under a prior that has not seen it.

    The train ratings are dealt into ``folds`` folds (seeded, uniformly at random); for each fold the prior
    ``kind`` is fitted on the split's history without that fold's ratings and predicts them. ``folds=1``
    gives the in-sample log-probabilities of the prior fitted on the whole history (``full`` when the caller
    has already fitted it).

    Returns:
        A frame indexed by ``(user_id, item_id)`` with columns ``lp1`` … ``lp5`` (float64) and ``fold``.
    """
    if folds < 1:
        raise ConfigError(f"prior_folds must be >= 1, got {folds!r}.")
    train = split.train.reset_index(drop=True)
    cols = [f"lp{k}" for k in range(1, 6)]
    users = train["user_id"].to_numpy(dtype=np.int64)
    items = train["item_id"].to_numpy(dtype=np.int64)
    out = np.empty((len(train), 5), dtype=np.float64)
    fold = np.zeros(len(train), dtype=np.int64)
    if folds == 1:
        out[:] = (full or AnchorPrior.fit(split.history(), kind)).log_probs(users, items)
    else:
        fold = np.random.default_rng(seed).permutation(np.arange(len(train)) % folds)
        for k in range(folds):
            held = fold == k
            history = pd.concat([train[~held], split.background], ignore_index=True)
            out[held] = AnchorPrior.fit(history, kind).log_probs(users[held], items[held])
    frame = pd.DataFrame(out, columns=cols)
    frame["fold"] = fold
    frame.index = pd.MultiIndex.from_arrays([users, items], names=["user_id", "item_id"])
    return frame


# ---------------------------------------------------------------------------------------------------------
# small helpers shared with inference
# ---------------------------------------------------------------------------------------------------------
def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"recsim_personas": __version__}
    for pkg in ("torch", "transformers", "peft", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            out[pkg] = None
    return out


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


def make_lora_config(kind: str, backbone: torch.nn.Module, config: LoraTrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=int(config.rank or DEFAULT_RANK[kind]),
        lora_alpha=int(config.alpha or DEFAULT_ALPHA[kind]),
        lora_dropout=float(config.dropout),
        target_modules=lora_targets(kind, backbone),
        modules_to_save=["rating_head"] if kind == "encoder" else None,
    )


def encode_rows(backbone: Any, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """Pad token-id rows the backbone's way (causal: left + answer lead; encoder: right)."""
    return backbone.encode([list(r) for r in rows])


def batched_logits(
    model: torch.nn.Module,
    backbone: Any,
    rows: Sequence[Sequence[int]],
    adapter_names: Sequence[str] | None,
    batch_size: int,
    *,
    max_tokens: int | None = 2048,
    single_adapter_passes: bool = False,
) -> torch.Tensor:
    """Rating logits (n, 5) float32 of token-id prompts, batched by length, rows in input order (no grad).

    Prompts are sorted by length and cut into forward passes of at most ``batch_size`` prompts and at most
    ``max_tokens`` tokens once padded (``None``: no token cap; a longer prompt still gets a pass of its own).
    With ``adapter_names`` every pass is routed row by row by PEFT, whatever mix of adapters it holds. The
    token cap keeps a pass's activations in cache and out of freshly page-faulted buffers: on the project's
    2-core Xeon, MiniLM passes of ≤ 2,048 tokens (8 prompts of 256) rated 1.08–1.20× as fast as whole
    64-prompt passes (float32 and bfloat16, 1 and 2 threads; of caps 1,024 to 4,096, 2,048 was the best or
    within 1 % of it in each setting). The logits are the same up to rounding (float32 ~1e-7; bfloat16
    ~1e-3: its matmul rounding depends on the shapes).

    ``single_adapter_passes=True`` (inference on a ``PeftModel`` whose adapters need no gradient, in eval mode;
    :class:`~recsim_personas.agents.persona_agents.PersonaAgents` passes it): prompts of equal length are
    ordered by adapter as well, so a pass holds as few adapters as the length order allows (the padding does not
    change), and a pass whose prompts all use one adapter runs PEFT's plain forward with that adapter active
    (``PeftModel.set_adapter(name, inference_mode=True)``: every adapter stays frozen) instead of the
    mixed-batch route, which gathers and scatters each adapter's rows at every LoRA layer (MiniLM, bfloat16, one
    thread: 168 ms for a pass of 8 × 256 tokens against 260 ms routed). The logits are the same up to rounding
    (as above: in bfloat16 a pass of other rows rounds differently). A pass mixing adapters is still one
    forward pass routed row by row with ``adapter_names``. The model's active adapter is left at the last one
    used.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}.")
    lengths = [len(r) for r in rows]
    plain = single_adapter_passes and adapter_names is not None and _plain_routing(model)
    if plain:  # ascending length, then adapter (lexsort: the last key is the primary one; stable)
        rank = {n: k for k, n in enumerate(sorted(set(adapter_names)))}
        order = np.lexsort((np.array([rank[n] for n in adapter_names], dtype=np.int64), np.array(lengths)))
    else:
        order = np.argsort(lengths, kind="stable")
    out = torch.empty((len(rows), 5), dtype=torch.float32)
    with torch.inference_mode():
        lo = 0
        while lo < len(order):
            hi = min(lo + batch_size, len(order))
            if max_tokens is not None:  # ascending lengths: the pass's padded length is its last row's
                while hi - lo > 1 and (hi - lo) * lengths[order[hi - 1]] > max_tokens:
                    hi -= 1
            idx = order[lo:hi]
            batch = encode_rows(backbone, [rows[i] for i in idx])
            names = None if adapter_names is None else [adapter_names[i] for i in idx]
            if plain and len(set(names)) == 1 and names[0] in model.peft_config:
                if model.active_adapter != names[0]:
                    model.set_adapter(names[0], inference_mode=True)
                logits = model(**batch)
            else:
                logits = model(**batch, **({} if names is None else {"adapter_names": names}))
            out[torch.as_tensor(idx)] = logits.float()
            lo = hi
    return out


def _plain_routing(model: torch.nn.Module) -> bool:
    """Whether :func:`batched_logits` may run single-adapter passes by switching ``model``'s active adapter: a
    ``PeftModel`` in eval mode with one active adapter (switching with ``inference_mode=True`` freezes them all)."""
    return (
        isinstance(getattr(model, "peft_config", None), dict)
        and callable(getattr(model, "set_adapter", None))
        and not model.training
        and isinstance(getattr(model, "active_adapter", None), str)
    )


# ---------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------
@dataclass
class AdapterResult:
    """What happened to one adapter."""

    name: str
    status: Literal["trained", "skipped"]
    n_train: int
    n_valid: int
    epochs: int
    best_epoch: int
    best_valid_nll: float
    initial_valid_nll: float
    seconds: float


@dataclass
class TrainResult:
    """A finished training run: the artifact directory and per-adapter results."""

    out: Path
    manifest: dict[str, Any]
    adapters: list[AdapterResult]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "variant": self.manifest["train_config"]["variant"],
            "anchor": self.manifest["train_config"]["anchor"],
            "memories": self.manifest["train_config"]["memories"],
            "backbone": self.manifest["backbone"],
            "adapters": [dataclasses.asdict(a) for a in self.adapters],
            "seconds": self.seconds,
        }


def _run_spec(split: Any, pset: Any, backbone_cfg: BackboneConfig, config: LoraTrainConfig, fp: str) -> dict:
    return {
        "format": AGENTS_FORMAT,
        "split_id": split.split_id,
        "personas_manifest": sha256_file(Path(pset.path) / "manifest.json") if pset.path else "",
        "backbone": backbone_cfg.to_dict(),
        "base_fingerprint": fp,
        "train_config": config.to_dict(),
    }


def _check_run_dir(out: Path, spec: dict[str, Any], overwrite: bool) -> None:
    run_file = out / "run.json"
    if run_file.is_file():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if old == spec:
            return
        if not overwrite:
            diff = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
            raise ArtifactError(
                f"{str(out)!r} holds a persona-agent run with a different {', '.join(diff)}. Fix: choose another"
                " --out, or pass --overwrite to replace it."
            )
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ArtifactError(
                f"{str(out)!r} is not empty and is not a persona-agent run. Fix: choose another --out, or pass"
                " --overwrite to replace it."
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(run_file, spec)


def _adapter_state(model: Any, name: str) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def _load_adapter_state(model: Any, name: str, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ArtifactError(f"checkpoint of adapter {name!r} has unexpected tensors, e.g. {unexpected[0]!r}.")


def _save_checkpoint(ckpt: Path, model: Any, name: str, best: dict[str, torch.Tensor], state: dict) -> None:
    from safetensors.torch import save_file

    ckpt.mkdir(parents=True, exist_ok=True)
    with atomic_path(ckpt / "last.safetensors") as tmp:
        save_file(_adapter_state(model, name), str(tmp))
    with atomic_path(ckpt / "best.safetensors") as tmp:
        save_file(best, str(tmp))
    write_json(ckpt / "state.json", state)  # last: a state names only complete weight files


def _save_adapter(model: Any, name: str, out: Path) -> None:
    """``save_pretrained`` of one adapter into ``out/adapters/<name>`` (atomic: temp dir + rename)."""
    target = out / "adapters" / name
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


def _autocast(precision: str) -> Any:
    """``torch.autocast`` on the CPU in bfloat16 for ``precision="bfloat16"``, a no-op context otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")


def _nll(
    model: Any,
    backbone: Any,
    rows: list[list[int]],
    y: np.ndarray,
    prior: np.ndarray | None,
    batch_size: int,
    precision: str = "float32",
) -> float:
    """Mean NLL (anchored if ``prior``) of ratings ``y`` (1..5) under the active adapter, eval mode."""
    if not rows:
        return float("nan")
    was_training = model.training
    model.eval()
    with _autocast(precision):
        logits = batched_logits(model, backbone, rows, None, batch_size).double()
    if prior is not None:
        logits = logits + torch.as_tensor(prior)
    nll = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y - 1, dtype=torch.long))
    model.train(was_training)
    return float(nll)


def _build_rows(builder: PromptBuilder, examples: list[RaftExample]) -> list[list[int]]:
    return [builder.build(e.user_id, e.item_id, e.memories).ids for e in examples]


def train_agents(
    split: Any,
    pset: Any,
    clusters: Any,
    index: Any,
    backbone_config: BackboneConfig,
    config: LoraTrainConfig,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train persona (or single) LoRA adapters on RAFT data and save them with a manifest; resumable.

    Args:
        split: the protocol :class:`~recsim_personas.data.protocol.Split` (saved: it has a ``split_id``).
        pset: its :class:`~recsim_personas.personas.store.PersonaSet` (Ms and Ml).
        clusters: the persona :class:`~recsim_personas.personas.clustering.ClusterResult` (needed for the
            ``persona`` variant; ignored for ``single``).
        index: the :class:`~recsim_personas.personas.memory.MemoryIndex` (needed when ``memories > 0``).
        backbone_config: which base model.
        config: how to train (see :class:`LoraTrainConfig`).
        out: the artifact directory (see the module docstring). Rerunning the same call resumes.
        overwrite: replace an artifact of another configuration in ``out``.
        progress: tqdm progress bars (stderr).
        cache_dir: model cache root (see :func:`~recsim_personas.agents.backbones.model_cache_root`).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ArtifactError: ``out`` holds another run, or the personas are from another split.
        UnknownUserError: a user of the split has no persona cluster.
    """
    from peft import get_peft_model
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    kind = backbone_config.kind
    cfg = config.resolved(kind)
    out = Path(out)
    pset.check_split(split.split_id)
    if cfg.variant == "persona" and clusters is None:
        raise ConfigError(
            "the persona variant needs the persona clusters. Fix: run `recsim-personas personas cluster`."
        )
    if cfg.memories > 0 and index is None:
        raise ConfigError(
            "training with memories needs the memory index. Fix: run `recsim-personas personas index`, or use"
            " memories=0."
        )
    users = [int(u) for u in split.user_ids]
    cmap = cluster_map(clusters, users, cfg.variant)
    names = sorted(set(cmap.values()), key=lambda n: (len(n), n))

    backbone, tokenizer = build_backbone(backbone_config, cache_dir=cache_dir)
    fp = base_fingerprint(backbone)
    spec = _run_spec(split, pset, backbone_config, cfg, fp)
    _check_run_dir(out, spec, overwrite)
    manifest_file = out / "manifest.json"
    if manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        logger.info("%s is complete; nothing to train.", out)
        results = [
            AdapterResult(n, "skipped", **{k: v for k, v in manifest["adapters"][n].items() if k != "files"})
            for n in names
        ]
        return TrainResult(out, manifest, results, time.perf_counter() - t_start)

    prior_files: dict[str, str] = {}
    prior = None
    oof: pd.DataFrame | None = None
    if cfg.anchor != "none":
        prior = AnchorPrior.fit(split.history(), cfg.anchor)
        prior_files = prior.save(out / "prior")
        oof = out_of_fold_log_probs(split, cfg.anchor, int(cfg.prior_folds), cfg.seed, full=prior)

    raft = RaftConfig(
        memories=cfg.memories,
        validation_share=cfg.validation_share,
        max_train=cfg.max_train,
        max_valid=cfg.max_valid,
        seed=cfg.seed,
    )
    train_ex, valid_ex = raft_examples(split.train, index if cfg.memories else None, raft)
    builder = PromptBuilder(
        tokenizer,
        pset,
        split.catalog().describe,
        prompt_config(kind, str(cfg.template), int(backbone_config.max_length or 256)),
    )

    lora_cfg = make_lora_config(kind, backbone, cfg)
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(names))
    model = None
    for k, name in enumerate(names):
        with torch.random.fork_rng():  # PEFT draws lora_A from torch's global generator: seed it locally
            torch.manual_seed(int(seeds[k].generate_state(1)[0]))
            if model is None:
                model = get_peft_model(backbone, lora_cfg, adapter_name=name)
            else:
                model.add_adapter(name, lora_cfg)
    assert model is not None

    results: list[AdapterResult] = []
    adapter_meta: dict[str, dict[str, Any]] = {}
    bar = tqdm(names, desc="adapters", unit="adapter", disable=not progress)
    for k, name in enumerate(bar):
        bar.set_postfix_str(name)
        tr = [e for e in train_ex if cmap[e.user_id] == name]
        va = [e for e in valid_ex if cmap[e.user_id] == name]
        done = out / "adapters" / name / "done.json"
        if done.is_file():
            meta = json.loads(done.read_text(encoding="utf-8"))
            results.append(AdapterResult(name, "skipped", **meta))
            adapter_meta[name] = meta
            logger.info("adapter %s is already trained; skipping it.", name)
            continue
        meta = _train_one(model, backbone, builder, oof, name, tr, va, cfg, seeds[k], out, progress)
        _save_adapter(model, name, out)
        write_json(done, meta)
        with open(out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"adapter": name, "event": "saved", **meta}) + "\n")
        shutil.rmtree(out / "checkpoints" / name, ignore_errors=True)
        results.append(AdapterResult(name, "trained", **meta))
        adapter_meta[name] = meta

    files = {}
    for name in names:
        d = out / "adapters" / name
        files[name] = {p.name: sha256_file(p) for p in sorted(d.iterdir()) if p.is_file()}
    manifest = {
        **spec,
        "format_version": AGENTS_FORMAT_VERSION,
        "kind": kind,
        "prompt": dataclasses.asdict(builder.cfg),
        "personas_path": str(Path(pset.path).resolve()) if pset.path else None,
        "cluster_map": {str(u): n for u, n in sorted(cmap.items())},
        "adapters": {n: {**adapter_meta[n], "files": files[n]} for n in names},
        "prior": {"rater": prior.name, "files": prior_files} if prior is not None else None,
        "raft": dataclasses.asdict(raft),
        "counts": {"train": len(train_ex), "valid": len(valid_ex)},
        "truncation": builder.truncation_stats(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    write_json(manifest_file, manifest)
    return TrainResult(out, manifest, results, time.perf_counter() - t_start)


def _train_one(
    model: Any,
    backbone: Any,
    builder: PromptBuilder,
    prior: pd.DataFrame | None,
    name: str,
    train: list[RaftExample],
    valid: list[RaftExample],
    cfg: LoraTrainConfig,
    seed: np.random.SeedSequence,
    out: Path,
    progress: bool,
) -> dict[str, Any]:
    """Train adapter ``name`` with early stopping and per-epoch checkpoints; leaves its best state loaded.

    ``prior``: the examples' anchoring log-probabilities (:func:`out_of_fold_log_probs`), or ``None``.
    """
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    model.set_adapter(name)
    ckpt = out / "checkpoints" / name
    tr_rows, va_rows = _build_rows(builder, train), _build_rows(builder, valid)
    tr_y = np.array([e.rating for e in train], dtype=np.int64)
    va_y = np.array([e.rating for e in valid], dtype=np.int64)

    def prior_of(examples: list[RaftExample]) -> np.ndarray | None:
        if prior is None or not examples:
            return None
        keys = pd.MultiIndex.from_arrays([[e.user_id for e in examples], [e.item_id for e in examples]])
        return prior.loc[keys, [f"lp{k}" for k in range(1, 6)]].to_numpy(dtype=np.float64)

    tr_prior, va_prior = prior_of(train), prior_of(valid)
    state: dict[str, Any]
    if (ckpt / "state.json").is_file():
        state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        _load_adapter_state(model, name, load_file(str(ckpt / "last.safetensors")))
        best = load_file(str(ckpt / "best.safetensors"))
        logger.info("adapter %s: resuming after epoch %d", name, state["epoch"])
    else:
        initial = _nll(model, backbone, va_rows, va_y, va_prior, cfg.eval_batch_size, cfg.precision)
        state = {"epoch": 0, "best_epoch": 0, "best_valid_nll": initial, "initial_valid_nll": initial, "since": 0}
        best = _adapter_state(model, name)
    rng = np.random.default_rng(seed)
    torch_seed = int(seed.generate_state(1)[0])
    for _ in range(state["epoch"]):  # the shuffles of finished epochs, so a resumed run sees the same order
        rng.permutation(len(tr_rows))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=float(cfg.lr or 1e-3), weight_decay=cfg.weight_decay)
    stopped = state["since"] >= cfg.patience
    while state["epoch"] < cfg.epochs and not stopped and tr_rows:
        epoch = state["epoch"] + 1
        order = rng.permutation(len(tr_rows))
        model.train()
        losses = []
        steps = range(0, len(order), cfg.batch_size)
        with torch.random.fork_rng():  # dropout draws from torch's global generator: seed it locally
            torch.manual_seed(torch_seed + epoch)
            for lo in tqdm(steps, desc=f"{name} epoch {epoch}", unit="step", disable=not progress, leave=False):
                idx = order[lo : lo + cfg.batch_size]
                batch = encode_rows(backbone, [tr_rows[i] for i in idx])
                with _autocast(cfg.precision):
                    logits = model(**batch)
                logits = logits.double()
                if tr_prior is not None:
                    logits = logits + torch.as_tensor(tr_prior[idx])
                loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(tr_y[idx] - 1, dtype=torch.long))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        valid_nll = _nll(model, backbone, va_rows, va_y, va_prior, cfg.eval_batch_size, cfg.precision)
        improved = bool(valid_nll < state["best_valid_nll"] - 1e-6) or not va_rows
        if improved:
            best = _adapter_state(model, name)
            state.update(best_epoch=epoch, best_valid_nll=valid_nll, since=0)
        else:
            state["since"] += 1
        state["epoch"] = epoch
        stopped = state["since"] >= cfg.patience
        _save_checkpoint(ckpt, model, name, best, state)
        entry = {
            "adapter": name,
            "epoch": epoch,
            "train_nll": float(np.mean(losses)),
            "valid_nll": valid_nll,
            "best_epoch": state["best_epoch"],
            "seconds": time.perf_counter() - t0,
        }
        with open(out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        logger.info("adapter %s epoch %d: train NLL %.4f, valid NLL %.4f", name, epoch, entry["train_nll"], valid_nll)
    _load_adapter_state(model, name, best)
    model.eval()
    return {
        "n_train": len(train),
        "n_valid": len(valid),
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_valid_nll": state["best_valid_nll"],
        "initial_valid_nll": state["initial_valid_nll"],
        "seconds": time.perf_counter() - t0,
    }


def read_agents_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a trained persona-agent directory.

    Raises:
        ArtifactError: no manifest (training unfinished: rerun it, it resumes) or another format.
    """
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        hint = "it does not exist" if not path.exists() else "training has not finished (no manifest.json)"
        raise ArtifactError(
            f"{str(path)!r} is not a trained persona-agent directory ({hint}). Fix: run (or rerun, it resumes)"
            " `recsim-personas agents train --split SPLIT --personas DIR --out DIR`."
        )
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ArtifactError(f"{mf}: not valid JSON ({exc}).") from exc
    if manifest.get("format") != AGENTS_FORMAT:
        raise ArtifactError(f"{mf}: format is {manifest.get('format')!r}, expected {AGENTS_FORMAT!r}.")
    if manifest.get("format_version") != AGENTS_FORMAT_VERSION:
        raise ArtifactError(f"{mf}: unsupported format_version {manifest.get('format_version')!r}.")
    return manifest
