"""Training a RecBole model on a split (:func:`train_recbole`) and RecBole's own evaluation of it.

Training uses RecBole's lower-level API only (``Config``, ``create_dataset``, ``data_preparation``,
``get_model``, ``get_trainer``), behind :mod:`recsim_personas.recommenders.recbole_compat`, on the files of
:mod:`recsim_personas.recommenders.recbole_data`:

- **general models** (Pop, BPR, LightGCN, ...): ``train`` = the split's history (train part of the sampled
  users + every rating of the other users), ``test`` = the split's test part. The model learns from the
  whole history; :func:`recbole_evaluate` runs RecBole's own evaluator on the test part (full ranking,
  history items excluded), which is the protocol of :mod:`recsim_personas.recommenders.offline`.
- **sequential models** (SASRec, GRU4Rec, ...): the history ordered by time per user; RecBole's
  leave-one-out ``valid_only`` split keeps each user's last item out of training (sequential datasets are
  augmented by RecBole itself, which benchmark files do not allow).

With ``RecBoleConfig.epochs`` set, training runs exactly that many epochs and never looks at a validation
set. With ``epochs=None`` RecBole's trainer stops early on NDCG@10 of a validation slice carved from the
history (general models: each sampled user's latest train ratings, held out of training; sequential models:
each user's last history item), after at most ``max_epochs``, and the best epoch's weights are kept. Either
way the first epoch's time × the epoch cap is logged as the expected training time.

Every RecBole failure while building or training is a :class:`~recsim_personas.errors.PolicyError` that names
the model, the stage and the fix.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsim_personas.errors import ArtifactError, ConfigError, RecsimPersonasError
from recsim_personas.recommenders.recbole_config import RecBoleConfig
from recsim_personas.recommenders.recbole_data import build, failure, make_model, recbole_run, tokens

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split
    from recsim_personas.recommenders.recbole_policy import RecBolePolicy

logger = logging.getLogger(__name__)


def train_recbole(
    split: str | os.PathLike[str] | Split,
    config: RecBoleConfig | str,
    *,
    slate_size: int = 10,
    progress: bool = True,
) -> RecBolePolicy:
    """Train a RecBole model on a split's history and return it as a policy.

    Args:
        split: a split directory or a loaded ``Split``.
        config: a :class:`RecBoleConfig` or just a model name (defaults for the rest: early stopping).
        slate_size: items per slate the policy serves.
        progress: show RecBole's per-epoch progress bars (stderr); epoch losses are logged either way.

    Raises:
        ConfigError: an unknown model name (with close matches) or a model that needs features this adapter
            does not provide.
        PolicyError: RecBole failed to build or train the model (names the model, the stage and the fix).
    """
    from recsim_personas.data import load_split
    from recsim_personas.recommenders.recbole_compat import import_recbole
    from recsim_personas.recommenders.recbole_policy import RecBolePolicy

    if isinstance(config, str):
        config = RecBoleConfig(model=config)
    split = load_split(split)
    api = import_recbole()
    start = time.perf_counter()
    with recbole_run(config) as tmp:
        built = build(api, split, config, tmp, progress)
        model = make_model(api, built, config)
        try:
            trainer = api.get_trainer(built.config["MODEL_TYPE"], config.model)(built.config, model)
        except Exception as exc:
            raise failure(config.model, "setting up RecBole's trainer", exc) from exc
        if config.early_stopping:
            logger.info(
                "training %s on %d ratings for at most %d epochs, stopping after %d without a better validation"
                " NDCG@10 (%d validation users)",
                config.model,
                len(built.train_data.dataset),
                config.epoch_cap,
                config.stopping_step,
                _n_users(built.valid_data),
            )
        else:
            logger.info(
                "training %s on %d history ratings for %d epochs",
                config.model,
                len(built.train_data.dataset),
                config.epochs,
            )
        _log_epochs(trainer, config)
        valid = built.valid_data if config.early_stopping else None
        try:
            trainer.fit(built.train_data, valid_data=valid, saved=config.early_stopping, show_progress=progress)
            if config.early_stopping:
                _keep_best(trainer, model)
        except RecsimPersonasError:
            raise
        except Exception as exc:
            raise failure(config.model, "training", exc) from exc
    seconds = time.perf_counter() - start
    logger.info("trained %s in %.1f s", config.model, seconds)
    return RecBolePolicy(config, model, built.dataset, split, slate_size=slate_size, train_seconds=seconds)


def _n_users(loader: Any) -> int:
    try:
        return int(loader.dataset.inter_feat[loader.dataset.uid_field].unique().numel())
    except (AttributeError, TypeError, KeyError):
        return 0


def _log_epochs(trainer: Any, config: RecBoleConfig) -> None:
    """Log each epoch's loss through this module's logger (RecBole logs to the root logger), and after the
    first epoch the expected training time (its seconds × the epoch cap)."""
    inner = trainer._train_epoch
    cap = config.epoch_cap

    def train_epoch(train_data: Any, epoch_idx: int, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        loss = inner(train_data, epoch_idx, *args, **kwargs)
        seconds = time.perf_counter() - t0
        value = sum(loss) if isinstance(loss, tuple) else loss
        logger.info(
            "%s epoch %d/%d: loss %.4f (%.1f s)", config.model, epoch_idx + 1, trainer.epochs, float(value), seconds
        )
        if epoch_idx == 0 and trainer.epochs > 1:
            bound = "at most " if config.early_stopping else ""
            logger.info(
                "%s: expected training time %s%s (first epoch %.1f s x %d epochs)",
                config.model,
                bound,
                _duration(seconds * cap),
                seconds,
                cap,
            )
        return loss

    trainer._train_epoch = train_epoch


def _duration(seconds: float) -> str:
    """``"12.3 s"``, ``"4.5 min"`` or ``"2.1 h"``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _keep_best(trainer: Any, model: Any) -> None:
    """Load the best validation epoch's weights, which RecBole's trainer saved in its checkpoint."""
    import recbole.trainer.trainer as trainer_module

    checkpoint = Path(trainer.saved_model_file)
    if trainer.best_valid_result is None or not checkpoint.is_file():
        return  # the trainer did not validate (e.g. a one-pass traditional model): the weights are final
    # RecBole's trainer wrote this checkpoint in this process, so its torch proxy unpickles it (recbole_compat).
    state = trainer_module.torch.load(str(checkpoint), map_location="cpu")
    model.load_state_dict(state["state_dict"])
    model.load_other_parameter(state.get("other_parameter"))
    logger.info(
        "%s: kept epoch %d (validation NDCG@10 %.4f)",
        type(model).__name__,
        state["epoch"] + 1,
        trainer.best_valid_score,
    )


def recbole_evaluate(policy: RecBolePolicy, split: str | os.PathLike[str] | Split) -> dict[str, float]:
    """RecBole's own evaluator on the split's test part for a general model: Recall@10, NDCG@10, MRR@10.

    The RecBole dataset's test part is the split's test part and its training part the history, so the
    protocol is that of :func:`~recsim_personas.recommenders.offline.evaluate_offline`: per sampled user,
    a full ranking of the items with the user's history items excluded.

    Raises:
        ConfigError: a sequential model (RecBole evaluates those next-item by next-item, another protocol).
        ArtifactError: the policy was trained on another split.
        PolicyError: RecBole's evaluation failed.
    """
    from recsim_personas.data import load_split
    from recsim_personas.recommenders.recbole_compat import import_recbole

    if policy.kind != "general":
        raise ConfigError(
            f"recbole_evaluate needs a general model; {policy.config.model} is sequential and RecBole evaluates"
            " those item by item (another protocol). Use recsim_personas.recommenders.offline.evaluate_offline."
        )
    split = load_split(split)
    if split.split_id != policy.split_id:
        raise ArtifactError(
            f"{policy.name} was trained on split {policy.split_id[:12]}, not {split.split_id[:12]}. Fix: evaluate it"
            " on the split it was trained on."
        )
    api = import_recbole()
    with recbole_run(policy.config) as tmp:
        built = build(api, split, policy.config, tmp, progress=False)
        if tokens(built.dataset, policy.iid_field) != policy.item_tokens:
            raise ArtifactError(f"{policy.name}: RecBole's item mapping rebuilt from the split differs.")
        try:
            trainer = api.get_trainer(built.config["MODEL_TYPE"], policy.config.model)(built.config, policy.model)
            result = trainer.evaluate(built.test_data, load_best_model=False, show_progress=False)
        except Exception as exc:
            raise failure(policy.config.model, "evaluating on the test part", exc) from exc
    policy.model.eval()
    return {key: float(value) for key, value in result.items()}
