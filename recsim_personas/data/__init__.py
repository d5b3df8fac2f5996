"""MovieLens data: readers, resolution/download, the item catalog, the paper's protocol split, RecBole export.

- :func:`load_movielens` → :class:`MovieLens` (:mod:`.movielens`; the file readers are in :mod:`.readers`,
  where the data comes from in :mod:`.datasets`).
- :class:`ProtocolConfig` (:mod:`.protocol_config`), applied by :func:`make_split` / :func:`prepare_split`
  (:mod:`.protocol`) → a :class:`Split`, the artifact later stages load with :func:`load_split` (:mod:`.split`).
- :class:`ItemCatalog` and :func:`render_description` (:mod:`.catalog`): the paper's item descriptions.

The names are imported lazily (on first attribute access), so importing a light submodule such as
:mod:`.protocol_config` (the command line builds its options from it) does not load pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsim_personas._lazy import lazy_exports

if TYPE_CHECKING:
    from recsim_personas.data.catalog import ItemCatalog, render_description
    from recsim_personas.data.datasets import DATASETS, resolve_dataset_dir
    from recsim_personas.data.movielens import MovieLens, load_movielens
    from recsim_personas.data.protocol import make_split, prepare_split
    from recsim_personas.data.protocol_config import ProtocolConfig
    from recsim_personas.data.split import Split, load_split

_EXPORTS = {
    "ItemCatalog": "catalog",
    "render_description": "catalog",
    "DATASETS": "datasets",
    "resolve_dataset_dir": "datasets",
    "MovieLens": "movielens",
    "load_movielens": "movielens",
    "make_split": "protocol",
    "prepare_split": "protocol",
    "ProtocolConfig": "protocol_config",
    "Split": "split",
    "load_split": "split",
}

__all__ = [
    "DATASETS",
    "ItemCatalog",
    "MovieLens",
    "ProtocolConfig",
    "Split",
    "load_movielens",
    "load_split",
    "make_split",
    "prepare_split",
    "render_description",
    "resolve_dataset_dir",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
