"""Persona-LoRA training: one PEFT LoRA adapter per persona cluster (or one for all users) on RAFT data.

The training driver of the persona agents (:func:`train_agents`):

1. RAFT examples from the split's train ratings (:mod:`recsim_personas.agents.raft`): each train
   interaction with the user's Ms, the ``memories`` most similar other train memories, the item and the real
   rating; the latest ``validation_share`` of each user's train ratings form the validation slice.
2. Prompts are token ids from :class:`~recsim_personas.agents.prompt.PromptBuilder` (``"paper"`` template
   for causal LMs, ``"compact"`` for the encoder), within the backbone's token budget.
3. **Adapters** (:mod:`~recsim_personas.agents.adapters`): variant ``"persona"`` trains one adapter per persona
   cluster (``persona_<c>``, on the examples of that cluster's users); ``"single"`` trains one adapter
   (``single``) on everyone. All live in one ``PeftModel``; :func:`peft.PeftModel.set_adapter` makes the one
   being trained the only trainable one. The encoder's ``rating_head`` is saved per adapter
   (``modules_to_save``).
4. **Prior anchoring** (:mod:`~recsim_personas.agents.prior`; ``anchor="bias"``, the default): the loss is the
   cross entropy of ``backbone logits + log P_prior(r | u, i)``; the training examples are anchored on an
   out-of-fold prior (``prior_folds``, default 5), the stored prior is fitted on the whole history.
5. **Early stopping** on the validation slice: the validation NLL is measured before training (the
   untrained adapter, which with anchoring is the prior) and after every epoch; the best state is kept and
   training stops after ``patience`` epochs without improvement.
6. **Resumable, exactly** (:mod:`~recsim_personas.agents.checkpoints`): after every epoch the adapter's
   weights, its best weights so far and the AdamW state are checkpointed; a rerun of the same command continues
   from the last finished epoch with the same data order and dropout draws, so its loss curve is that of an
   uninterrupted run, and skips adapters already saved. A run directory holding another configuration, split
   or persona set is refused (:mod:`~recsim_personas.agents.agent_artifact`, which also describes the layout).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from recsim_personas._io import write_json
from recsim_personas.agents.adapters import (
    adapter_state,
    base_fingerprint,
    cluster_map,
    load_adapter_state,
    make_lora_config,
    save_adapter,
)
from recsim_personas.agents.agent_artifact import (
    prepare_run_dir,
    read_agents_manifest,
    run_spec,
    write_agents_manifest,
)
from recsim_personas.agents.backbone_config import BackboneConfig
from recsim_personas.agents.backbones import build_backbone
from recsim_personas.agents.checkpoints import load_checkpoint, save_checkpoint
from recsim_personas.agents.inference import batched_logits, encode_rows
from recsim_personas.agents.prior import AnchorPrior, out_of_fold_log_probs
from recsim_personas.agents.prompt import PromptBuilder
from recsim_personas.agents.raft import RaftConfig, RaftExample, raft_examples
from recsim_personas.agents.train_config import LoraTrainConfig, prompt_config
from recsim_personas.artifacts import file_digests, has_manifest
from recsim_personas.errors import ConfigError

logger = logging.getLogger(__name__)


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
        split: the protocol :class:`~recsim_personas.data.split.Split` (saved: it has a ``split_id``).
        pset: its :class:`~recsim_personas.personas.store.PersonaSet` (Ms and Ml).
        clusters: the persona :class:`~recsim_personas.personas.clustering.ClusterResult` (needed for the
            ``persona`` variant; ignored for ``single``).
        index: the :class:`~recsim_personas.personas.memory.MemoryIndex` (needed when ``memories > 0``).
        backbone_config: which base model.
        config: how to train (see :class:`LoraTrainConfig`).
        out: the artifact directory (layout: :mod:`~recsim_personas.agents.agent_artifact`). Rerunning the same
            call resumes.
        overwrite: replace an artifact of another configuration in ``out``.
        progress: tqdm progress bars (stderr).
        cache_dir: model cache root (see :func:`~recsim_personas.agents.model_loading.model_cache_root`).

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
    spec = run_spec(split, pset, backbone_config, cfg, base_fingerprint(backbone))
    prepare_run_dir(out, spec, overwrite)
    if has_manifest(out):
        manifest = read_agents_manifest(out)
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
    budget = int(backbone_config.max_length)  # type: ignore[arg-type]  # resolved by BackboneConfig
    builder = PromptBuilder(tokenizer, pset, split.catalog().describe, prompt_config(kind, str(cfg.template), budget))

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
        save_adapter(model, name, out)
        write_json(done, meta)
        with open(out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"adapter": name, "event": "saved", **meta}) + "\n")
        shutil.rmtree(out / "checkpoints" / name, ignore_errors=True)
        results.append(AdapterResult(name, "trained", **meta))
        adapter_meta[name] = meta

    files = {}
    for name in names:
        d = out / "adapters" / name
        files[name] = file_digests(d, sorted(p.name for p in d.iterdir() if p.is_file()))
    body = {
        "kind": kind,
        "prompt": dataclasses.asdict(builder.cfg),
        "personas_path": str(Path(pset.path).resolve()) if pset.path else None,
        "cluster_map": {str(u): n for u, n in sorted(cmap.items())},
        "adapters": {n: {**adapter_meta[n], "files": files[n]} for n in names},
        "prior": {"rater": prior.name, "files": prior_files} if prior is not None else None,
        "raft": dataclasses.asdict(raft),
        "counts": {"train": len(train_ex), "valid": len(valid_ex)},
        "truncation": builder.truncation_stats(),
    }
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    manifest = write_agents_manifest(out, spec, body)
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
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=float(cfg.lr), weight_decay=cfg.weight_decay)  # type: ignore[arg-type]
    state: dict[str, Any]
    resumed = load_checkpoint(ckpt, model, name, opt)
    if resumed is not None:
        state, best = resumed
        logger.info("adapter %s: resuming after epoch %d", name, state["epoch"])
    else:
        initial = _nll(model, backbone, va_rows, va_y, va_prior, cfg.eval_batch_size, cfg.precision)
        state = {"epoch": 0, "best_epoch": 0, "best_valid_nll": initial, "initial_valid_nll": initial, "since": 0}
        best = adapter_state(model, name)
    rng = np.random.default_rng(seed)
    torch_seed = int(seed.generate_state(1)[0])
    for _ in range(state["epoch"]):  # the shuffles of finished epochs, so a resumed run sees the same order
        rng.permutation(len(tr_rows))
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
            best = adapter_state(model, name)
            state.update(best_epoch=epoch, best_valid_nll=valid_nll, since=0)
        else:
            state["since"] += 1
        state["epoch"] = epoch
        stopped = state["since"] >= cfg.patience
        save_checkpoint(ckpt, model, name, best, state, opt)
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
    load_adapter_state(model, name, best)
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
