"""Pretraining the user encoder on next-event prediction, its artifact, and its next-item evaluation.

The histories are the split's *history* — the sampled users' train part and the background users' ratings —
never a test rating. A share of the history users (``PretrainConfig.validation_share``) is held out to pick the
best epoch (early stopping on their mean next-event loss).

An encoder directory (``recsim-personas userllm pretrain --split DIR --out DIR``)::

    encoder.safetensors   the NextEventModel's weights at the best epoch (encoder + next-event heads)
    encoder.json          the configs, the split id, the item ids, the loss curve and the test-part report
    manifest.json         written last (artifacts.py): an unfinished directory has none
    checkpoint/           while training: last/best weights, AdamW state, epoch counters (resumable)

An interrupted run continues from its last finished epoch when started again with the same settings: the
data order and dropout are drawn from seeds that depend only on the epoch, so the resumed loss curve is the
uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recsim_personas._io import write_json
from recsim_personas.agents.checkpoints import save_tensors
from recsim_personas.agents.userllm.checkpoint import SPEC_FILE, load_epoch, prepare_run, save_epoch
from recsim_personas.agents.userllm.config import PretrainConfig, UserEncoderConfig
from recsim_personas.agents.userllm.encoder import NextEventModel
from recsim_personas.agents.userllm.events import Histories, ItemTable, histories
from recsim_personas.artifacts import ArtifactKind, check_input, read_manifest, verify_files, write_manifest
from recsim_personas.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split

logger = logging.getLogger(__name__)

USER_ENCODER = ArtifactKind(
    format="recsim-personas/user-encoder",
    version=1,
    what="user encoder",
    fix="pretrain one with `recsim-personas userllm pretrain --split DIR --out DIR`",
)
WEIGHTS_FILE = "encoder.safetensors"
BODY_FILE = "encoder.json"
CHECKPOINT_DIR = "checkpoint"


def as_tensors(h: Histories) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(items, ratings, gaps, lengths)`` long tensors of histories, as :class:`UserEncoder` takes them."""
    return (
        torch.as_tensor(h.items, dtype=torch.long),
        torch.as_tensor(h.ratings, dtype=torch.long),
        torch.as_tensor(h.gaps, dtype=torch.long),
        torch.as_tensor(h.lengths, dtype=torch.long),
    )


@dataclass
class PretrainedEncoder:
    """A pretrained :class:`NextEventModel` with what it was built for.

    Attributes:
        model: the model, in eval mode.
        items: the split's items it reads.
        encoder_config, config: its settings.
        split_id: the split it was pretrained on.
        report: the loss curve, the best epoch and the test-part next-item figures.
        path: the directory it was read from or written to.
    """

    model: NextEventModel
    items: ItemTable
    encoder_config: UserEncoderConfig
    config: PretrainConfig
    split_id: str | None
    report: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def histories(self, ratings: Any, *, where: str = "ratings") -> Histories:
        """Histories of a ratings frame, cut to the encoder's ``max_len``."""
        return histories(ratings, self.items, self.encoder_config.max_len, where=where)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, split_id: str | None = None) -> PretrainedEncoder:
        """Read an encoder directory (checking its files and, given ``split_id``, the split).

        Raises:
            ArtifactError: not a finished encoder, damaged or altered files, or another split.
        """
        from safetensors.torch import load_file

        path = Path(path)
        manifest = read_manifest(path, USER_ENCODER, required=("split_id", "files"))
        verify_files(path, manifest, USER_ENCODER)
        if split_id is not None:
            check_input(path, USER_ENCODER, "split", manifest["split_id"], split_id, "pretrain on this split")
        body = json.loads((path / BODY_FILE).read_text(encoding="utf-8"))
        items = ItemTable.from_dict(body)
        encoder_config = UserEncoderConfig.from_dict(body["encoder_config"])
        model = NextEventModel(encoder_config, items)
        state = load_file(str(path / WEIGHTS_FILE))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ArtifactError(
                f"user encoder {str(path)!r}: its weights do not fit its config (missing {missing[:2]!r},"
                f" unexpected {unexpected[:2]!r}). Fix: pretrain it again."
            )
        model.eval()
        return cls(
            model=model,
            items=items,
            encoder_config=encoder_config,
            config=PretrainConfig.from_dict(body["config"]),
            split_id=manifest["split_id"],
            report=dict(body.get("report") or {}),
            path=path,
        )


def length_batches(lengths: np.ndarray, rows: np.ndarray, batch_size: int, seed: Any) -> list[np.ndarray]:
    """Batches of ``rows`` of similar lengths (little padding), in a random order.

    The rows are sorted by length with random tie-breaking, cut into batches of ``batch_size``, and the batches
    shuffled — all from ``seed``, so an epoch's batches depend only on it.

    Args:
        lengths: history length of each row, int (n,); rows: the rows, int (n,).
    """
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(rows)), np.asarray(lengths)))
    batches = [rows[order[a : a + batch_size]] for a in range(0, len(rows), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]


def _learning_rate(config: PretrainConfig, step: int) -> float:
    return config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))


def _mean_loss(model: NextEventModel, hist: Histories, rows: np.ndarray, config: PretrainConfig) -> dict[str, float]:
    """Event-weighted mean next-event losses of user rows ``rows`` (eval mode, no gradients)."""
    weights = (config.item_weight, config.genre_weight, config.rating_weight)
    totals = {"loss": 0.0, "item": 0.0, "genre": 0.0, "rating": 0.0}
    events = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), config.batch_size):
            batch = hist.take(rows[start : start + config.batch_size])
            loss, parts = model.loss(*as_tensors(batch), weights=weights)
            n = parts["events"]
            if n == 0:
                continue
            totals["loss"] += float(loss) * n
            for key in ("item", "genre", "rating"):
                totals[key] += parts[key] * n
            events += n
    return {k: v / max(events, 1) for k, v in totals.items()}


def _spec(split: Split, encoder_config: UserEncoderConfig, config: PretrainConfig) -> dict[str, Any]:
    return {
        "split_id": split.manifest.get("split_id"),
        "encoder_config": encoder_config.to_dict(),
        "config": config.to_dict(),
    }


def pretrain_encoder(
    split: Split,
    out: str | os.PathLike[str],
    *,
    encoder_config: UserEncoderConfig | None = None,
    config: PretrainConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
) -> PretrainedEncoder:
    """Pretrain the user encoder on the split's history and save it to ``out`` (see the module docstring).

    Args:
        split: a loaded protocol split.
        out: the encoder directory (created; an unfinished run with the same settings is resumed).
        encoder_config: the encoder's shape (default :class:`UserEncoderConfig`).
        config: pretraining settings (default :class:`PretrainConfig`).
        overwrite: replace a finished encoder or an unfinished run with other settings at ``out``.
        progress: a progress bar over the epochs.
        evaluate: score next-item Recall@10 / NDCG@10 on the test part (:func:`next_item_metrics`) into the report.

    Raises:
        ArtifactError: ``out`` holds something else (see the message for the fix).
        ConfigError: the history has no user with two events.
    """
    from tqdm.auto import tqdm

    encoder_config = encoder_config or UserEncoderConfig()
    config = config or PretrainConfig()
    out = Path(out)
    spec = _spec(split, encoder_config, config)
    prepare_run(out, spec, USER_ENCODER, overwrite=overwrite, epochs_in="config")
    started = time.perf_counter()

    items = ItemTable.from_split(split, encoder_config.year_bucket)
    hist = histories(split.history(), items, encoder_config.max_len, where="the split's history")
    usable = np.flatnonzero(hist.lengths >= 2)
    if usable.size == 0:
        raise ConfigError("the split's history has no user with two ratings; nothing to predict.")
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    init_seed, valid_seed, order_seed, dropout_seed = (int(s.generate_state(1)[0]) for s in seeds)
    is_valid = np.random.default_rng(valid_seed).random(usable.size) < config.validation_share
    if is_valid.all():
        is_valid[0] = False
    train_rows, valid_rows = usable[~is_valid], usable[is_valid]

    with torch.random.fork_rng():  # the initialisation draws from torch's global generator: seed it locally
        torch.manual_seed(init_seed)
        model = NextEventModel(encoder_config, items)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weights = (config.item_weight, config.genre_weight, config.rating_weight)

    ckpt = out / CHECKPOINT_DIR
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_epoch": 0, "best_loss": math.inf, "since": 0, "curve": []}
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    resumed = load_epoch(ckpt, model, optimizer)
    if resumed is not None:
        state, best = resumed
        logger.info("resuming the user encoder's pretraining after epoch %d", state["epoch"])

    bar = tqdm(total=config.epochs, initial=state["epoch"], desc="pretrain user encoder", disable=not progress)
    while state["epoch"] < config.epochs and state["since"] < config.patience:
        epoch = state["epoch"]
        model.train()
        batches = length_batches(hist.lengths[train_rows], train_rows, config.batch_size, [order_seed, epoch])
        train_loss, train_events = 0.0, 0
        with torch.random.fork_rng():  # dropout draws from torch's global generator: seed it per epoch
            torch.manual_seed(dropout_seed + epoch)
            for rows in batches:
                batch = hist.take(rows)
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(config, state["step"])
                loss, parts = model.loss(*as_tensors(batch), weights=weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                state["step"] += 1
                train_loss += float(loss.detach()) * parts["events"]
                train_events += parts["events"]
        valid = _mean_loss(model, hist, valid_rows if valid_rows.size else train_rows, config)
        state["epoch"] = epoch + 1
        state["curve"].append({"epoch": epoch + 1, "train_loss": train_loss / max(train_events, 1), **valid})
        if valid["loss"] < state["best_loss"]:
            state.update(best_epoch=epoch + 1, best_loss=valid["loss"], since=0)
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["since"] += 1
        save_epoch(ckpt, model.state_dict(), best, optimizer, state)
        bar.update(1)
        bar.set_postfix(valid=f"{valid['loss']:.3f}", item=f"{valid['item']:.3f}")
    bar.close()

    model.load_state_dict(best)
    model.eval()
    report: dict[str, Any] = {
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_valid_loss": state["best_loss"],
        "curve": state["curve"],
        "train_users": int(train_rows.size),
        "valid_users": int(valid_rows.size),
        "events": int(hist.lengths.sum()),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    result = PretrainedEncoder(
        model=model,
        items=items,
        encoder_config=encoder_config,
        config=config,
        split_id=spec["split_id"],
        report=report,
        path=out,
    )
    if evaluate:
        report["test"] = next_item_metrics(result, split)
    report["seconds"] = time.perf_counter() - started
    save_tensors(out / WEIGHTS_FILE, model.state_dict())
    write_json(
        out / BODY_FILE,
        {
            **spec,
            **items.to_dict(),
            "report": report,
        },
    )
    write_manifest(
        out,
        USER_ENCODER,
        {"split_id": spec["split_id"], "encoder_config": spec["encoder_config"], "config": spec["config"]},
        files=[WEIGHTS_FILE, BODY_FILE],
        libraries=("torch", "safetensors"),
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    (out / SPEC_FILE).unlink(missing_ok=True)
    logger.info("pretrained the user encoder in %.1f s (best epoch %d)", report["seconds"], state["best_epoch"])
    return result


def next_item_scores(encoder: PretrainedEncoder, hist: Histories, batch_size: int = 256) -> np.ndarray:
    """Next-item logits after each history, float32 (U, n_items)."""
    out = np.empty((len(hist), encoder.items.n_items), dtype=np.float32)
    encoder.model.eval()
    for start in range(0, len(hist), batch_size):
        rows = np.arange(start, min(len(hist), start + batch_size))
        out[rows] = encoder.model.next_item_logits(*as_tensors(hist.take(rows))).numpy()
    return out


def next_item_metrics(encoder: PretrainedEncoder, split: Split, k: int = 10) -> dict[str, float]:
    """Next-item Recall@k / NDCG@k / MRR@k on the test part, RecBole's full-ranking protocol.

    For each sampled user with a test rating, the encoder reads its train part and ranks every movie it did not
    rate there; the top ``k`` is compared with the movies it rated in the test part — the definitions of
    :func:`recsim_personas.recommenders.offline.ranking_metrics`, as the gap report scores recommenders.
    """
    from recsim_personas.recommenders.offline import ranking_metrics

    hist = encoder.histories(split.train, where="the split's train part")
    scores = next_item_scores(encoder, hist)
    rows = {u: r for r, u in enumerate(hist.user_ids.tolist())}
    train_users = np.asarray([rows[u] for u in split.train["user_id"].tolist()], dtype=np.int64)
    scores[train_users, encoder.items.rows(split.train["item_id"].to_numpy())] = -np.inf
    test = split.test[split.test["user_id"].isin(rows)]
    positives = np.zeros(scores.shape, dtype=bool)
    positives[[rows[u] for u in test["user_id"].tolist()], encoder.items.rows(test["item_id"].to_numpy())] = True
    evaluated = np.flatnonzero(positives.any(axis=1))
    if evaluated.size == 0:
        raise ConfigError("no sampled user has a test rating; nothing to evaluate.")
    top = np.argsort(-scores[evaluated], axis=1, kind="stable")[:, :k]
    per_user = ranking_metrics(top, positives[evaluated])
    return {f"{name}@{k}": float(v.mean()) for name, v in per_user.items()} | {"users": int(evaluated.size)}
