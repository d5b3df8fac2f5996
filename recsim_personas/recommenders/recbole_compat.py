"""Make RecBole 1.2.1 run on this stack without touching site-packages.

RecBole 1.2.1 (2023) predates numpy 2, scipy 1.13 and torch 2.6. Four things break, and each has a shim
here, applied by :func:`apply` (idempotent, and before ``recbole`` is imported):

- **numpy 2** removed ``np.float_``, ``np.complex_`` and ``np.unicode_``. RecBole's
  ``Config.compatibility_settings`` reads them to re-create ``np.float``/``np.int``/... aliases, so building
  any ``Config`` raises ``AttributeError``. The shim restores the three names as the numpy 2 types
  (``float64``, ``complex128``, ``str_``).
- **scipy ≥ 1.13**: ``dok_matrix`` no longer has the private ``_update`` RecBole's graph models (LightGCN,
  NGCF, GCMC, SpectralCF, NCL, ...) call to fill their adjacency matrix. The shim adds it back, writing to
  the matrix's key → value store exactly as the old method did (no validation, no zero removal).
- **torch ≥ 2.6** loads with ``weights_only=True`` by default, and RecBole's trainer checkpoints hold a
  pickled ``Config`` (so ``Trainer.evaluate(load_best_model=True)`` and ``resume_checkpoint`` fail). The shim
  does *not* change ``torch.load`` globally: only inside ``recbole.trainer.trainer`` the name ``torch`` is a
  thin proxy whose ``save`` remembers the sha256 of every checkpoint RecBole writes in this process and
  whose ``load`` unpickles fully (``weights_only=False``) only a file whose bytes are one of those; any
  other file is loaded with torch's safe default and fails as it would without the shim.
- RecBole's trainer opens a TensorBoard writer in ``./log_tensorboard`` of the *current directory* (not a
  version problem, but the library never writes relative to the cwd): inside ``recbole.trainer.trainer``,
  ``get_tensorboard`` returns a writer that discards everything (RecBole's log lines and progress bars still
  show the training).
- RecBole's ``Config`` reads ``--key=value`` options from the *process's* command line and lets them
  override the configuration (warning about every other argument); the ``Config`` that
  :func:`import_recbole` returns sees an empty command line (everything goes through ``config_dict``).
- **pandas 3** changed NaN filling in a way RecBole silently mishandles; ``pandas<3`` is a declared bound
  (``pyproject.toml``) and :func:`check_versions` refuses pandas ≥ 3 with a clear message.

Use :func:`import_recbole` to get RecBole's lower-level API with the shims in place.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recsim_personas.errors import ConfigError

logger = logging.getLogger(__name__)

RECBOLE_VERSION = "1.2.1"
NUMPY_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}
"""numpy 1 names RecBole reads → the numpy 2 type each stands for."""

_lock = threading.Lock()


@dataclass(frozen=True)
class CompatReport:
    """Which shims :func:`apply` installed (True) because this stack needs them.

    Attributes:
        numpy_aliases: the numpy 1 aliases that were missing and were added.
        scipy_dok_update: ``dok_matrix._update`` was missing and was added.
        torch_checkpoints: ``torch.load`` defaults to ``weights_only=True`` here, so RecBole's trainer got the
            checkpoint proxy.
    """

    numpy_aliases: tuple[str, ...]
    scipy_dok_update: bool
    torch_checkpoints: bool


_report: CompatReport | None = None


def check_versions() -> None:
    """Refuse library versions the shims do not cover.

    Raises:
        ConfigError: pandas ≥ 3 (RecBole's NaN filling silently does nothing there), or a RecBole other than
            1.2.1 (the shims are written against it).
    """
    from importlib.metadata import PackageNotFoundError, version

    import pandas as pd

    _check_pandas(pd.__version__)
    try:
        rb = version("recbole")
    except PackageNotFoundError:
        raise ConfigError(
            f"RecBole is not installed; expected recbole=={RECBOLE_VERSION}. Fix: `make setup` (it runs"
            f" `pip install --no-deps recbole=={RECBOLE_VERSION}`)."
        ) from None
    if rb != RECBOLE_VERSION:
        raise ConfigError(
            f"expected recbole=={RECBOLE_VERSION} (the version the compat shims are written for), found {rb!r}."
            f" Fix: pip install --no-deps recbole=={RECBOLE_VERSION}."
        )


def _check_pandas(found: str) -> None:
    major = int(found.split(".")[0])
    if major >= 3:
        raise ConfigError(
            f"expected pandas<3 for RecBole {RECBOLE_VERSION} (its NaN filling silently does nothing on pandas 3),"
            f" found pandas {found!r}. Fix: pip install 'pandas>=2.1,<3'."
        )


def _patch_numpy() -> tuple[str, ...]:
    import numpy as np

    added = []
    for alias, target in NUMPY_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, target))
            added.append(alias)
    return tuple(added)


def _dok_update(self: Any, data: Any) -> None:
    """scipy < 1.13's ``dok_matrix._update``: store ``{(row, col): value}`` without checks."""
    self._dict.update(data)


def _patch_scipy() -> bool:
    from scipy.sparse import dok_matrix

    if hasattr(dok_matrix, "_update"):
        return False
    if not hasattr(dok_matrix((1, 1)), "_dict"):
        raise ConfigError(
            "this scipy's dok_matrix has neither _update nor _dict; the RecBole compat shim does not cover it."
            " Fix: pip install 'scipy>=1.11,<2'."
        )
    dok_matrix._update = _dok_update
    return True


def _file_digest(f: Any) -> str | None:
    """sha256 of a checkpoint given as a path, or None for file objects (never trusted)."""
    if not isinstance(f, str | os.PathLike):
        return None
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class _RecBoleTorch(types.ModuleType):
    """``torch`` as seen from ``recbole.trainer.trainer``: full unpickling only for its own checkpoints.

    Every attribute is torch's, except ``save`` (records the sha256 of the written file) and ``load``
    (``weights_only=False`` only for a file whose sha256 was recorded by ``save`` in this process).
    """

    def __init__(self, torch: types.ModuleType) -> None:
        super().__init__("torch")
        self._torch = torch
        self.trusted: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def save(self, obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        self._torch.save(obj, f, *args, **kwargs)
        digest = _file_digest(f)
        if digest is not None:
            self.trusted.add(digest)

    def load(self, f: Any, *args: Any, weights_only: bool | None = None, **kwargs: Any) -> Any:
        if weights_only is None and _file_digest(f) in self.trusted:
            weights_only = False  # a checkpoint RecBole's trainer wrote itself in this process
        return self._torch.load(f, *args, weights_only=weights_only, **kwargs)


class _NullWriter:
    """A TensorBoard ``SummaryWriter`` stand-in that records nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _null_tensorboard(logger: Any) -> _NullWriter:
    return _NullWriter()


def _torch_needs_shim() -> bool:
    import inspect

    import torch

    default = inspect.signature(torch.load).parameters["weights_only"].default
    # torch < 2.6: default False; torch ≥ 2.6: None meaning True (unless TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD).
    return default is not False


def _patch_torch() -> bool:
    import torch

    trainer = importlib.import_module("recbole.trainer.trainer")
    trainer.get_tensorboard = _null_tensorboard
    if isinstance(trainer.torch, _RecBoleTorch):
        return True
    if not _torch_needs_shim():
        return False
    trainer.torch = _RecBoleTorch(torch)
    return True


def apply() -> CompatReport:
    """Install the shims this stack needs (idempotent) and import RecBole; returns what was installed."""
    global _report
    with _lock:
        if _report is not None:
            return _report
        check_versions()
        aliases = _patch_numpy()
        dok = _patch_scipy()
        torch_shim = _patch_torch()
        _report = CompatReport(numpy_aliases=aliases, scipy_dok_update=dok, torch_checkpoints=torch_shim)
        logger.debug("RecBole compat: %s", _report)
        return _report


@dataclass(frozen=True)
class RecBoleAPI:
    """RecBole's lower-level API, imported after :func:`apply` (no ``quick_start``)."""

    Config: Any
    create_dataset: Any
    data_preparation: Any
    get_model: Any
    get_trainer: Any
    init_seed: Any
    Interaction: Any
    ModelType: Any


def _config_ignoring_argv(config_class: Callable[..., Any]) -> Callable[..., Any]:
    """RecBole's ``Config`` with an empty command line.

    ``Config`` reads ``--key=value`` options from ``sys.argv`` and lets them override the configuration (and
    warns about every other argument), so ``recsim-personas benchmark --seed=3`` would silently set RecBole's
    seed. The library passes everything through ``config_dict``; the process's command line is not RecBole's.
    """

    def make(*args: Any, **kwargs: Any) -> Any:
        saved = sys.argv
        sys.argv = saved[:1]
        try:
            return config_class(*args, **kwargs)
        finally:
            sys.argv = saved

    return make


def import_recbole() -> RecBoleAPI:
    """Apply the shims, then import and return the parts of RecBole this library uses."""
    apply()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.utils import ModelType, get_model, get_trainer, init_seed

    return RecBoleAPI(
        Config=_config_ignoring_argv(Config),
        create_dataset=create_dataset,
        data_preparation=data_preparation,
        get_model=get_model,
        get_trainer=get_trainer,
        init_seed=init_seed,
        Interaction=Interaction,
        ModelType=ModelType,
    )
