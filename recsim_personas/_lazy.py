"""Lazy package exports (PEP 562): a subpackage names what it exports without importing its modules.

``from recsim_personas.envs import MovieLensEnv`` imports ``recsim_personas.envs.movielens_env`` only then,
so importing one light submodule (e.g. the CLI glue) does not pull in Mesa, pandas or torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, resolving ``name`` from ``package.<exports[name]>``.

    A resolved name is stored on the package, so each is imported once.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
