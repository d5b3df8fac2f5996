"""The RecBole dataset, data loaders and model built from a split, and the conditions RecBole runs under.

:func:`build` writes the split's training files (:func:`recsim_personas.data.recbole_export.write_training_files`)
into a temporary directory and hands them to RecBole's ``Config`` / ``create_dataset`` / ``data_preparation``;
:func:`make_model` builds the model on the result. Both run inside :func:`recbole_run`: one torch thread (or
as configured), every global random state restored afterwards, RecBole's deprecation warnings and its
``print`` calls (FEARec prints while it builds) kept out of the user's terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.errors import PolicyError, RecsimPersonasError
from recsim_personas.recommenders.recbole_config import MODEL_DATASET, RecBoleConfig

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, restoring the previous number afterwards."""
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def _isolated_rng() -> Iterator[None]:
    """Let RecBole seed the global generators (its samplers use them), then restore every global state.

    Also silences the deprecation warnings RecBole 1.2.1's own code triggers on this stack (pandas'
    chained ``fillna(inplace=True)``, ``torch.cuda.amp``) while it runs.
    """
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"recbole(\.|$)")
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _stdout_to_log() -> Iterator[None]:
    """Log what RecBole's models ``print`` (at DEBUG) instead of writing it to stdout."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        if buffer.getvalue().strip():
            logger.debug("RecBole printed: %s", buffer.getvalue().strip())


@contextlib.contextmanager
def recbole_run(config: RecBoleConfig) -> Iterator[Path]:
    """A temporary working directory for RecBole, under ``config.num_threads`` torch threads, with the global
    random states restored and RecBole's warnings and prints kept quiet; yields the directory."""
    with (
        tempfile.TemporaryDirectory(prefix="recsim-recbole-") as tmp,
        torch_threads(config.num_threads),
        _isolated_rng(),
        _stdout_to_log(),
    ):
        yield Path(tmp)


@dataclass
class Built:
    """A RecBole config, dataset and data loaders built from a split."""

    config: Any
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any


def build(api: Any, split: Split, config: RecBoleConfig, tmp: str | Path, progress: bool) -> Built:
    """RecBole's config, dataset and data loaders for ``config`` on ``split``, files written under ``tmp``.

    Raises:
        PolicyError: RecBole could not build them.
    """
    from recsim_personas.data.recbole_export import write_training_files

    sequential = config.kind == "sequential"
    valid_share = config.valid_share if config.early_stopping and not sequential else None
    data_path = write_training_files(
        split, Path(tmp) / "data", MODEL_DATASET, sequential=sequential, valid_share=valid_share
    )
    params = config.recbole_params(str(data_path), str(Path(tmp) / "checkpoints"), progress)
    try:
        rb_config = api.Config(model=config.model, dataset=MODEL_DATASET, config_dict=params)
        api.init_seed(config.seed, True)
        dataset = api.create_dataset(rb_config)
        train_data, valid_data, test_data = api.data_preparation(rb_config, dataset)
    except RecsimPersonasError:
        raise
    except Exception as exc:
        raise failure(config.model, "building its RecBole dataset", exc) from exc
    return Built(rb_config, dataset, train_data, valid_data, test_data)


def make_model(api: Any, built: Built, config: RecBoleConfig) -> Any:
    """The RecBole model of ``config`` on ``built``'s training data (on the CPU).

    Raises:
        PolicyError: RecBole could not build it.
    """
    try:
        return api.get_model(config.model)(built.config, built.train_data.dataset).to(built.config["device"])
    except Exception as exc:
        raise failure(config.model, "building the model", exc) from exc


def failure(model: str, stage: str, exc: BaseException) -> PolicyError:
    """The :class:`PolicyError` for a RecBole model that failed at ``stage`` (e.g. ``"training"``)."""
    return PolicyError(
        f"recbole:{model} failed while {stage}: {type(exc).__name__}: {exc}. Fix: drop recbole:{model} from the"
        " policies, or adjust its settings (RecBoleConfig.params, e.g. its embedding or layer sizes, or epochs);"
        " the compatibility sweep (benchmarks/recbole_compat_sweep.py) lists the models that train here."
    )


def tokens(dataset: Any, field_name: str) -> list[str]:
    """RecBole's tokens of a field in id order (id 0 is its padding token ``[PAD]``)."""
    return [str(t) for t in dataset.field2id_token[field_name]]
