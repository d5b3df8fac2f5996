"""Training a USER-LLM agent on a split's history ratings (see :class:`~.config.UserLLMTrainConfig`).

Data: the split's history (the sampled users' train part and the background users; never a test rating). Each
user's ratings, in time order, are cut into chunks of ``targets_per_cut`` after its first ``min_prefix``; the
user encoder reads everything before a chunk (its latest ``max_len`` events) and the agent rates the chunk's
movies. Anchored (``anchor``), the logits are ``head + log P_prior``, with the prior of each training rating
fitted without it (``prior_folds`` folds over the history) and the stored prior fitted on the whole history.

The run directory holds ``spec.json`` and ``checkpoint/`` while training (an interrupted run with the same
settings resumes after its last finished epoch, exactly); the finished agent is saved with
:meth:`~.agent.UserLLMAgent.save` and the two are removed.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recsim_personas.agents.userllm.agent import USERLLM, UserLLMAgent
from recsim_personas.agents.userllm.checkpoint import SPEC_FILE, load_epoch, prepare_run, save_epoch
from recsim_personas.agents.userllm.config import UserLLMConfig, UserLLMTrainConfig
from recsim_personas.agents.userllm.events import Histories, ItemTable, histories
from recsim_personas.agents.userllm.model import UserLLM, load_backbone
from recsim_personas.agents.userllm.pretrain import PretrainedEncoder
from recsim_personas.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"


def movie_texts(split: Split, items: ItemTable, tokenizer: Any, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask of each movie's description (``ItemCatalog.describe``), int64 (n_items, T)
    each, right-padded to the longest (at most ``max_tokens``)."""
    texts = split.catalog().describe_many(items.item_ids.tolist())
    enc = tokenizer(texts, truncation=True, max_length=max_tokens, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


SHARED_ADAPTER = "shared"
"""The adapter of the users without a persona cluster (``lora_per_persona``)."""


def prepare_backbone(model: UserLLM, config: UserLLMTrainConfig, adapters: list[str] | None = None) -> None:
    """Add LoRA adapters to the backbone (``strategy="lora"``, PEFT: one named ``default``, or one per name in
    ``adapters``) and set which parameters train."""
    if config.strategy == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        from recsim_personas.agents.adapters import lora_targets

        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=lora_targets(model.kind))
        with warnings.catch_warnings():  # PEFT warns when a second adapter goes into the same model: intended here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            for name in adapters or ["default"]:
                inject_adapter_in_model(lora, model.backbone, adapter_name=name)
        model.adapters = list(adapters) if adapters else None
    trains = {
        "full": lambda name: True,
        "enc": lambda name: not name.startswith("backbone."),
        "lora": lambda name: not name.startswith("backbone.") or "lora_" in name,
        "proj": lambda name: not name.startswith(("backbone.", "user_encoder.")),
    }[config.strategy]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trains(name))


@dataclass(frozen=True)
class Chunks:
    """Training chunks: user row, first target event, one past the last target event; int64 (C,) each."""

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def make_chunks(lengths: np.ndarray, rows: np.ndarray, min_prefix: int, size: int) -> Chunks:
    """Chunks of ``size`` consecutive events of each user row in ``rows``, after its first ``min_prefix``."""
    out_r, out_s, out_e = [], [], []
    for r in rows.tolist():
        n = int(lengths[r])
        for s in range(min_prefix, n, size):
            out_r.append(r)
            out_s.append(s)
            out_e.append(min(n, s + size))
    return Chunks(*(np.asarray(x, dtype=np.int64) for x in (out_r, out_s, out_e)))


def prefixes(full: Histories, rows: np.ndarray, cuts: np.ndarray, max_len: int) -> Histories:
    """The events before each cut (the latest ``max_len``), left-aligned: what the encoder reads for a chunk."""
    start = np.maximum(cuts - max_len, 0)
    width = max(int((cuts - start).max(initial=1)), 1)
    idx = start[:, None] + np.arange(width)[None, :]
    valid = idx < cuts[:, None]
    safe = np.minimum(idx, full.items.shape[1] - 1)
    take = lambda a, fill: np.where(valid, a[rows[:, None], safe], fill)  # noqa: E731
    return Histories(
        user_ids=full.user_ids[rows],
        items=take(full.items, -1),
        ratings=take(full.ratings, 0),
        gaps=take(full.gaps, 0),
        lengths=cuts - start,
    )


def expected_error(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared error of the expected rating ``Σ_r r · softmax(logits)_r`` against the real one (``labels`` 0..4
    for 1..5), per row."""
    levels = torch.arange(1, 6, dtype=logits.dtype, device=logits.device)
    expected = torch.softmax(logits, dim=-1) @ levels
    return (expected - (labels + 1).to(logits.dtype)) ** 2


def _targets(chunks: Chunks, picked: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(chunk position in the batch, user row, event column)`` of every target of chunks ``picked``."""
    counts = chunks.ends[picked] - chunks.starts[picked]
    which = np.repeat(np.arange(len(picked)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return which, chunks.rows[picked][which], chunks.starts[picked][which] + offsets


class _Batches:
    """Everything a training step needs, in tensors; built once per run."""

    def __init__(
        self,
        model: UserLLM,
        full: Histories,
        log_prior: np.ndarray | None,
        text_ids,
        text_mask,
        frozen: bool,
        user_adapter: np.ndarray | None = None,
    ):
        self.model, self.full, self.log_prior = model, full, log_prior
        self.user_adapter = user_adapter  # per user row: its adapter's index in model.adapters
        self.text_ids, self.text_mask = torch.as_tensor(text_ids), torch.as_tensor(text_mask)
        self.max_len = model.user_encoder.config.max_len
        self.states: torch.Tensor | None = None
        if frozen and model.config.integration == "cross_attention":  # the backbone below the blocks never changes
            depth = model.n_layers if model.top_only else model.cached_depth
            self.states = model.all_text_states(self.text_ids, self.text_mask, depth=depth)

    def logits_and_labels(self, chunks: Chunks, picked: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        from recsim_personas.agents.userllm.pretrain import as_tensors

        model = self.model
        tokens = model.user_tokens(
            *as_tensors(prefixes(self.full, chunks.rows[picked], chunks.starts[picked], self.max_len))
        )
        which, rows, cols = _targets(chunks, picked)
        items = self.full.items[rows, cols]
        labels = torch.as_tensor(self.full.ratings[rows, cols] - 1)
        if model.adapters is None or self.user_adapter is None:
            logits = self._logits(items, which, tokens)
        else:  # each group of targets through its users' adapter, then back in target order
            groups = self.user_adapter[rows]
            parts, where = [], []
            for g in np.unique(groups).tolist():
                sel = np.flatnonzero(groups == g)
                model.use_adapter(model.adapters[g])
                parts.append(self._logits(items[sel], which[sel], tokens))
                where.append(sel)
            order = np.argsort(np.concatenate(where), kind="stable")
            logits = torch.cat(parts)[torch.as_tensor(order)]
        if self.log_prior is not None:
            logits = logits + torch.as_tensor(self.log_prior[rows, cols], dtype=logits.dtype)
        return logits, labels

    def _logits(self, items: np.ndarray, which: np.ndarray, tokens: torch.Tensor) -> torch.Tensor:
        """Rating logits (before the prior) of target movies ``items`` whose users' tokens are ``tokens[which]``."""
        model = self.model
        if model.top_only:
            uniq, inverse = np.unique(items, return_inverse=True)
            u = torch.as_tensor(uniq)
            hidden = (
                self.states[u]
                if self.states is not None
                else model.text_states(self.text_ids[u], self.text_mask[u], depth=model.n_layers)
            )
            movie = model.movie_cache(hidden, self.text_mask[u])
            inv = torch.as_tensor(inverse)
            user = model.user_cache(tokens)
            w = torch.as_tensor(which)
            logits = model.top_logits({k: v[inv] for k, v in movie.items()}, {k: v[w] for k, v in user.items()})
        else:
            i = torch.as_tensor(items)
            if model.config.integration == "soft_prompt":
                hidden = model.embed(self.text_ids[i])
            elif self.states is not None:
                hidden = self.states[i]
            else:
                hidden = model.text_states(self.text_ids[i], self.text_mask[i])
            logits = model.forward_from(hidden, self.text_mask[i], tokens[torch.as_tensor(which)])
        return logits


def _spec(split: Split, encoder: PretrainedEncoder, config: UserLLMConfig, train: UserLLMTrainConfig) -> dict[str, Any]:
    return {
        "split_id": split.manifest.get("split_id"),
        "encoder": None if encoder.path is None else str(Path(encoder.path).resolve()),
        "config": config.to_dict(),
        "train_config": train.to_dict(),
    }


def train_userllm(
    split: Split,
    encoder: PretrainedEncoder | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: UserLLMConfig | None = None,
    train: UserLLMTrainConfig | None = None,
    clusters: Mapping[int, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> UserLLMAgent:
    """Train a USER-LLM agent and save it to ``out`` (see the module docstring).

    Args:
        split: a loaded protocol split.
        encoder: the pretrained user encoder (or its directory), pretrained on this split.
        out: the agent directory (created; an unfinished run with the same settings is resumed).
        config: the architecture (default :class:`UserLLMConfig`).
        train: the training settings (default :class:`UserLLMTrainConfig`).
        clusters: user id → persona adapter name (``recsim_personas.agents.adapters.cluster_map``), needed by
            ``train.lora_per_persona``; the history users not in it share the adapter ``"shared"``.
        overwrite: replace a finished agent, or an unfinished run with other settings, at ``out``.
        progress: a progress bar over the epochs.

    Raises:
        ArtifactError: ``out`` holds something else, or the encoder is another split's.
        ConfigError: no user has more than ``min_prefix`` ratings.
    """
    from tqdm.auto import tqdm

    from recsim_personas.agents.prior import AnchorPrior, ratings_out_of_fold_log_probs, ratings_temporal_log_probs

    config = config or UserLLMConfig()
    train = train or UserLLMTrainConfig()
    if not isinstance(encoder, PretrainedEncoder):
        encoder = PretrainedEncoder.load(encoder, split_id=split.manifest.get("split_id"))
    elif encoder.split_id != split.manifest.get("split_id"):
        raise ArtifactError(
            f"the user encoder was pretrained on split {encoder.split_id!r}, not {split.manifest.get('split_id')!r}."
            " Fix: pretrain it on this split (`recsim-personas userllm pretrain`)."
        )
    if train.lora_per_persona and not clusters:
        raise ConfigError(
            "lora_per_persona trains one adapter per persona cluster and needs the clusters. Fix: pass the personas"
            " (`--personas DIR`, clustered with `recsim-personas personas cluster`)."
        )
    if not train.lora_per_persona:
        clusters = None
    out = Path(out)
    spec = _spec(split, encoder, config, train)
    if clusters is not None:
        spec["clusters"] = {str(u): str(a) for u, a in sorted(clusters.items())}
    prepare_run(out, spec, USERLLM, overwrite=overwrite, epochs_in="train_config")
    started = time.perf_counter()

    items = encoder.items
    history = split.history().sort_values(["user_id", "timestamp", "item_id"], kind="mergesort").reset_index(drop=True)
    counts = history.groupby("user_id").size()
    full = histories(history, items, int(counts.max()), where="the split's history")
    logged = prefixes(full, np.arange(len(full)), full.lengths, encoder.encoder_config.max_len)  # the latest events
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(train.seed).spawn(5)]
    init_seed, valid_seed, order_seed, dropout_seed, fold_seed = seeds

    log_prior = prior = None
    if train.anchor != "none":
        out_of_fold = ratings_temporal_log_probs if train.prior_folds_by == "time" else ratings_out_of_fold_log_probs
        flat = out_of_fold(history, train.anchor, train.prior_folds, fold_seed)
        log_prior = np.zeros((*full.items.shape, 5), dtype=np.float32)
        user_rows = np.searchsorted(full.user_ids, history["user_id"].to_numpy(dtype=np.int64))
        position = np.arange(len(history)) - np.concatenate([[0], np.cumsum(counts.to_numpy())[:-1]])[user_rows]
        log_prior[user_rows, position] = flat
        prior = AnchorPrior.fit(history, train.anchor)

    users = np.flatnonzero(full.lengths > train.min_prefix)
    if users.size == 0:
        raise ConfigError(f"no user of the split's history has more than min_prefix={train.min_prefix} ratings.")
    is_valid = np.random.default_rng(valid_seed).random(users.size) < train.validation_share
    if is_valid.all():
        is_valid[0] = False
    train_chunks = make_chunks(full.lengths, users[~is_valid], train.min_prefix, train.targets_per_cut)
    valid_chunks = make_chunks(
        full.lengths, users[is_valid] if is_valid.any() else users[:1], train.min_prefix, train.targets_per_cut
    )

    backbone, tokenizer = load_backbone(config)
    text_ids, text_mask = movie_texts(split, items, tokenizer, config.max_text_tokens)
    adapters = user_adapter = None
    if clusters is not None:
        adapters = [*sorted({str(a) for a in clusters.values()} - {SHARED_ADAPTER}), SHARED_ADAPTER]
        index = {name: k for k, name in enumerate(adapters)}
        user_adapter = np.asarray(
            [index[str(clusters.get(int(u), SHARED_ADAPTER))] for u in full.user_ids.tolist()], dtype=np.int64
        )
    with torch.random.fork_rng():  # initialisation draws from torch's global generator: seed it locally
        torch.manual_seed(init_seed)
        model = UserLLM(config, copy.deepcopy(encoder.model.encoder), backbone)
        prepare_backbone(model, train, adapters)
    frozen = train.strategy in ("enc", "proj")
    batches = _Batches(model, full, log_prior, text_ids, text_mask, frozen, user_adapter)
    backbone_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    other_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    groups = [{"params": other_params, "lr": train.lr}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": train.lr / 10})
    optimizer = torch.optim.AdamW(groups, weight_decay=train.weight_decay)

    def trainable() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    ckpt = out / CHECKPOINT_DIR
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_nll": math.inf, "since": 0, "curve": []}
    best = trainable()
    resumed = load_epoch(ckpt, model, optimizer, strict=False)
    if resumed is not None:
        state, best = resumed
        logger.info("resuming the USER-LLM agent's training after epoch %d", state["epoch"])

    def validation() -> tuple[float, float]:
        """The held-out users' NLL and squared error of the expected rating (per rating)."""
        model.eval()
        nll, sq, n = 0.0, 0.0, 0
        with torch.no_grad():
            order = np.arange(len(valid_chunks.rows))
            for a in range(0, order.size, train.batch_size):
                logits, labels = batches.logits_and_labels(valid_chunks, order[a : a + train.batch_size])
                nll += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
                sq += float(expected_error(logits, labels).sum())
                n += len(labels)
        return nll / max(n, 1), sq / max(n, 1)

    if not state["curve"]:
        state["initial_valid_nll"] = validation()[0]
    n_chunks = len(train_chunks.rows)
    if train.max_chunks_per_epoch is not None:
        n_chunks = min(n_chunks, train.max_chunks_per_epoch)
    steps = math.ceil(n_chunks / train.batch_size)  # per epoch
    bar = tqdm(
        total=train.epochs * steps,
        initial=state["epoch"] * steps,
        desc=f"train USER-LLM ({train.strategy})",
        unit="step",
        disable=not progress,
    )
    while state["epoch"] < train.epochs and state["since"] < train.patience:
        epoch = state["epoch"]
        model.train()
        order = np.random.default_rng([order_seed, epoch]).permutation(len(train_chunks.rows))
        if train.max_chunks_per_epoch is not None:
            order = order[: train.max_chunks_per_epoch]
        total, n = 0.0, 0
        with torch.random.fork_rng():  # dropout draws from torch's global generator: seed it per epoch
            torch.manual_seed(dropout_seed + epoch)
            for a in range(0, order.size, train.batch_size):
                logits, labels = batches.logits_and_labels(train_chunks, order[a : a + train.batch_size])
                loss = torch.nn.functional.cross_entropy(logits, labels)
                if train.rating_mse_weight:
                    loss = loss + train.rating_mse_weight * expected_error(logits, labels).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
                optimizer.step()
                total += float(loss.detach()) * len(labels)
                n += len(labels)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, train_loss=f"{total / n:.4f}", refresh=False)
        nll, mse = validation()
        objective = nll + train.rating_mse_weight * mse  # what the epochs are chosen by: the training loss
        state["epoch"] = epoch + 1
        state["curve"].append(
            {"epoch": epoch + 1, "train_loss": total / max(n, 1), "valid_nll": nll, "valid_rmse": math.sqrt(mse)}
        )
        if objective < state.get("best_objective", state["best_nll"]):  # older checkpoints chose by the NLL
            state.update(best_epoch=epoch + 1, best_nll=nll, best_objective=objective, since=0)
            best = trainable()
        else:
            state["since"] += 1
        save_epoch(ckpt, trainable(), best, optimizer, state)
        bar.set_postfix(epoch=epoch + 1, valid_nll=f"{nll:.4f}")
    bar.close()

    model.load_state_dict(best, strict=False)
    model.eval()
    report = {
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_valid_nll": state["best_nll"],
        "initial_valid_nll": state.get("initial_valid_nll"),
        "curve": state["curve"],
        "train_chunks": len(train_chunks.rows),
        "train_ratings": int((train_chunks.ends - train_chunks.starts).sum()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": time.perf_counter() - started,
    }
    agent = UserLLMAgent(
        model, items, text_ids, text_mask, logged, prior, train, spec["split_id"], report, user_adapter=user_adapter
    )
    if batches.states is not None and model.top_only:  # the final states are at hand: the movie cache from them
        with torch.no_grad():
            agent._movies = model.movie_cache(batches.states, batches.text_mask) | {"mask": batches.text_mask}
    for name in (CHECKPOINT_DIR, SPEC_FILE):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    out.rmdir()  # empty now: save writes the whole directory atomically
    agent.save(out)
    logger.info("trained the USER-LLM agent in %.0f s (best epoch %d)", report["seconds"], state["best_epoch"])
    return agent
