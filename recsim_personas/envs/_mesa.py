"""Mesa, imported without its side effect on :mod:`multiprocessing`.

``import mesa`` imports ``mesa.batchrunner``, which calls ``multiprocessing.set_start_method("spawn", force=True)``.
Left in place, every process the user starts afterwards is spawned — Gymnasium's ``AsyncVectorEnv`` children then
start without this package imported, so ``gym.make("recsim_personas/MovieLens-v1")`` in them cannot find the id.
The start method the user had (or the platform default) is restored right after the import.
"""

from __future__ import annotations

import multiprocessing

_BEFORE = multiprocessing.get_start_method(allow_none=True)

import mesa  # noqa: E402
from mesa.experimental.devs import DEVSimulator, Priority  # noqa: E402

if multiprocessing.get_start_method(allow_none=True) != _BEFORE:
    multiprocessing.set_start_method(_BEFORE, force=True)

__all__ = ["DEVSimulator", "Priority", "mesa"]
