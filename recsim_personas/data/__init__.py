"""MovieLens data: readers, resolution/download, the item catalog, the paper's protocol split, RecBole export."""

from recsim_personas.data.catalog import ItemCatalog, render_description
from recsim_personas.data.datasets import DATASETS, resolve_dataset_dir
from recsim_personas.data.movielens import MovieLens, load_movielens
from recsim_personas.data.protocol import ProtocolConfig, Split, make_split, prepare_split

__all__ = [
    "DATASETS",
    "ItemCatalog",
    "MovieLens",
    "ProtocolConfig",
    "Split",
    "load_movielens",
    "make_split",
    "prepare_split",
    "render_description",
    "resolve_dataset_dir",
]
