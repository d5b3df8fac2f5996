"""The long-term memory index: retrieve a user's past reasons (Ml) most similar to a movie, with FAISS.

Each memory is embedded *together with its item's description*: its key vector is the L2-normalised sum
of the unit embedding of the movie's description and the unit embedding of the reason. A request
``(user_id, item_id)`` is answered with that user's memories whose key vectors have the largest inner
product (cosine similarity) with the embedding of the requested item's description.

**One FAISS structure for every user**: an ``IndexIVFFlat`` (inner product) whose inverted lists are keyed by
user — list *j* holds exactly the memories of the *j*-th user (ascending ids), in row order, and each vector's
id is its row in :attr:`MemoryIndex.memories`. There is no clustering: memories are added to their user's list
(``add_core`` with the list numbers given), and a batch of requests is answered by one
``search_preassigned`` call that scans, for each request, its user's list only (``nprobe`` = 1). The search is
exhaustive within the list, so the results are exact — the same hits, order and scores as a flat index per
user — while the vectors are stored once and a batch costs one call, whatever the number of users
(``benchmarks/memory_index_scaling.py`` measures it against one ``IndexFlatIP`` per user).

Guarantees:

- **Only the user's own memories** are searched (the user's list).
- **Never the target item**: memories of the requested item are dropped from the answer (the search asks
  for as many extra neighbours as there are, so ``k`` are still returned).
- **No test leakage**: the index is built from ``memories.parquet``, i.e. from train interactions only;
  memories added later (``add``, e.g. by the simulator) are the user's own new experiences.

On disk (``<personas>/memory/``): ``memories.parquet`` (rows in index order), ``vectors.npy`` (float32,
(n_memories, d)), ``item_ids.npy`` + ``item_vectors.npy`` (description embeddings of every catalog item)
and, written last, ``manifest.json`` (:data:`MEMORY_INDEX`, by :mod:`recsim_personas.artifacts`: the
embedder, the dimension, the persona set it was built from, the file hashes and the library versions).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas._io import atomic_path
from recsim_personas.artifacts import (
    MANIFEST,
    ArtifactKind,
    check_input,
    read_manifest,
    verify_files,
    write_manifest,
)
from recsim_personas.data.catalog import ItemCatalog
from recsim_personas.errors import ArtifactError, ConfigError, UnknownUserError
from recsim_personas.personas.embedders import l2_normalise
from recsim_personas.personas.store import PersonaSet

logger = logging.getLogger(__name__)

MEMORY_FORMAT = "recsim-personas/memory-index"
MEMORY_INDEX = ArtifactKind(
    MEMORY_FORMAT,
    1,
    "memory index",
    "build it with `recsim-personas personas index --personas DIR --split SPLIT`",
)
"""The memory index artifact (the files of the module docstring)."""
_FILES = ("memories.parquet", "vectors.npy", "item_ids.npy", "item_vectors.npy")
_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "reason"]


@dataclass(frozen=True)
class MemoryHit:
    """One retrieved memory."""

    item_id: int
    rating: int
    reason: str
    score: float


class MemoryIndex:
    """Every user's memory key vectors in one FAISS index keyed by user, plus the description vectors of every item.

    Args:
        memories: frame with ``user_id``, ``item_id``, ``rating``, ``reason`` (and ``timestamp``); row i ↔
            ``vectors[i]``.
        vectors: float32 (n_memories, d) unit-norm key vectors.
        item_ids: int64 (n_items,) catalog item ids; ``item_vectors[j]`` embeds the description of ``item_ids[j]``.
        item_vectors: float32 (n_items, d) unit-norm.
        embedder_id: the embedder that made the vectors.
    """

    def __init__(
        self,
        memories: pd.DataFrame,
        vectors: np.ndarray,
        item_ids: np.ndarray,
        item_vectors: np.ndarray,
        embedder_id: str,
    ) -> None:
        if len(memories) != len(vectors):
            raise ArtifactError(f"memory index: {len(memories)} memories but {len(vectors)} vectors.")
        self.embedder_id = embedder_id
        self.dim = int(item_vectors.shape[1])
        self._frame = memories.reset_index(drop=True)
        self._added: list[dict[str, Any]] = []
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self._item_order = np.argsort(self.item_ids, kind="stable")
        self._items_sorted = self.item_ids[self._item_order]
        self._m_user = self._frame["user_id"].to_numpy(dtype=np.int64)
        self._m_item = self._frame["item_id"].to_numpy(dtype=np.int64)
        self._m_rating = self._frame["rating"].to_numpy(dtype=np.int64)
        self._m_reason = self._frame["reason"].tolist()
        self._build(np.ascontiguousarray(vectors, dtype=np.float32))

    def _build(self, vectors: np.ndarray) -> None:
        """(Re)build the index keyed by user over ``vectors`` (n_memories, d), row i ↔ memory i."""
        import faiss

        self._users = np.unique(self._m_user)  # ascending: list j holds the memories of self._users[j]
        lists = np.searchsorted(self._users, self._m_user).astype(np.int64)
        self._sizes = np.bincount(lists, minlength=len(self._users)).astype(np.int64)
        self._stride = int(self._m_item.max(initial=0)) + 1
        self._pairs = np.sort(lists * self._stride + self._m_item)  # (list, item) keys, to count a target's memories
        # No clustering: the coarse quantizer stays empty, each list is a user and is filled with add_core.
        self._quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(self._quantizer, self.dim, max(len(self._users), 1), faiss.METRIC_INNER_PRODUCT)
        ivf.is_trained = True
        ivf.nprobe = 1
        self._ivf = ivf
        self._add(vectors, np.arange(len(vectors), dtype=np.int64), lists)

    def _add(self, vectors: np.ndarray, rows: np.ndarray, lists: np.ndarray) -> None:
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(rows, dtype=np.int64)
        lists = np.ascontiguousarray(lists, dtype=np.int64)
        if len(x):  # the arrays stay referenced by these names while FAISS reads through the pointers
            self._ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def build(cls, pset: PersonaSet, catalog: ItemCatalog, embedder: Any) -> MemoryIndex:
        """Embed every catalog description and every memory's reason, and index them."""
        item_ids = catalog.item_ids
        item_vectors = embedder.embed(catalog.describe_many(item_ids))
        memories = pset.memories[_COLUMNS].reset_index(drop=True)
        reason_vecs = embedder.embed(memories["reason"].tolist())
        pos = pd.Index(item_ids).get_indexer(memories["item_id"])
        if (pos < 0).any():
            bad = memories["item_id"][pos < 0].iloc[0]
            raise ArtifactError(
                f"memory of item_id {bad} has no description in the catalog. Fix: pass the split the personas"
                " were distilled from."
            )
        keys = l2_normalise(item_vectors[pos] + reason_vecs)
        return cls(memories, keys, item_ids, item_vectors, embedder.model_id)

    @property
    def memories(self) -> pd.DataFrame:
        """Every memory, row i ↔ id i in the index: ``user_id``, ``item_id``, ``rating``, ``timestamp``, ``reason``."""
        if self._added:
            self._frame = pd.concat([self._frame, pd.DataFrame(self._added)], ignore_index=True)
            self._added = []
        return self._frame

    def key_vector(self, item_id: int, reason_vector: np.ndarray) -> np.ndarray:
        """Key vector of a new memory about ``item_id`` whose reason embeds to ``reason_vector`` (d,)."""
        return l2_normalise((self.item_vector([item_id])[0] + reason_vector)[None, :])[0]

    def add(self, user_id: int, item_id: int, rating: int, reason: str, key: np.ndarray, timestamp: int = 0) -> None:
        """Add one memory (e.g. a simulated watch) to ``user_id``'s memories.

        Costs O(n_memories) (the per-memory arrays grow); the first memory of a user the index does not hold
        (or of an item id above every indexed one) rebuilds the index.
        """
        uid, item = int(user_id), int(item_id)
        row = len(self._m_reason)
        vec = np.asarray(key, dtype=np.float32).reshape(1, self.dim)
        self._m_user = np.append(self._m_user, uid)
        self._m_item = np.append(self._m_item, item)
        self._m_rating = np.append(self._m_rating, int(rating))
        self._m_reason.append(reason)
        self._added.append(
            {"user_id": uid, "item_id": item, "rating": int(rating), "timestamp": timestamp, "reason": reason}
        )
        if not self.has_user(uid):
            self._build(np.concatenate([self.vectors()[:row], vec]))
            return
        if item >= self._stride:  # the (list, item) keys need a wider stride
            self._build(np.concatenate([self.vectors(), vec]))
            return
        lst = int(np.searchsorted(self._users, uid))
        self._add(vec, np.array([row]), np.array([lst]))
        self._sizes[lst] += 1
        key = lst * self._stride + item
        self._pairs = np.insert(self._pairs, np.searchsorted(self._pairs, key), key)

    def vectors(self) -> np.ndarray:
        """The key vectors, float32 (n_memories, d), row i ↔ memory i (read back from the index)."""
        from faiss.contrib.inspect_tools import get_invlist

        out = np.empty((int(self._ivf.ntotal), self.dim), dtype=np.float32)
        for lst in range(int(self._ivf.nlist)):
            ids, codes = get_invlist(self._ivf.invlists, lst)
            out[ids] = codes.view(np.float32).reshape(len(ids), self.dim)
        return out

    # -- retrieval ------------------------------------------------------------------------------
    def item_vector(self, item_ids: Any) -> np.ndarray:
        """Description embeddings (n, d) of catalog items."""
        pos = _positions(self._items_sorted, np.asarray(item_ids, dtype=np.int64).reshape(-1), self._item_order)
        if (pos < 0).any():
            bad = np.asarray(item_ids)[pos < 0][0]
            raise ConfigError(
                f"item_id {bad} is not in the catalog the memory index was built with. Fix: rebuild the index"
                " with `recsim-personas personas index` on this split."
            )
        return self.item_vectors[pos]

    def has_user(self, user_id: int) -> bool:
        return bool(_positions(self._users, np.array([int(user_id)]))[0] >= 0)

    def retrieve(self, user_id: int, item_id: int, k: int = 1) -> list[MemoryHit]:
        """Top-``k`` memories of ``user_id`` most similar to ``item_id``'s description (never ``item_id`` itself)."""
        return self.retrieve_batch(np.array([user_id]), np.array([item_id]), k)[0]

    def retrieve_batch(self, user_ids: np.ndarray, item_ids: np.ndarray, k: int = 1) -> list[list[MemoryHit]]:
        """Batched :meth:`retrieve`: one list of at most ``k`` hits per request, best first, in request order.

        Args:
            user_ids: int (n,) the requesting users.
            item_ids: int (n,) the requested items.
            k: hits per request.

        Raises:
            UnknownUserError: a user with no memories in the index.
            ConfigError: ``k < 0``, or an item that is not in the catalog.
        """
        if k < 0:
            raise ConfigError(f"k must be >= 0, got {k!r}.")
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        items = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        out: list[list[MemoryHit]] = [[] for _ in range(len(users))]
        if k == 0 or len(users) == 0:
            return out
        queries = np.ascontiguousarray(self.item_vector(items))
        lists = _positions(self._users, users)
        if (lists < 0).any():
            bad = int(users[lists < 0][0])
            raise UnknownUserError(f"user_id {bad} has no memories in the index ({len(self._users)} users).")
        # Ask each user's requests for k + (the most memories of one requested item among them) neighbours, as many
        # as the user holds at most; the search is exhaustive, but which of two equal scores comes first depends on
        # that number, so it is the number the per-user flat indexes used (one search per distinct value here).
        indexed = (items >= 0) & (items < self._stride)
        keys = np.where(indexed, lists * self._stride + items, -1)  # -1: an item no memory is about
        own = np.searchsorted(self._pairs, keys, side="right") - np.searchsorted(self._pairs, keys, side="left")
        if own.any():
            most = np.zeros(len(self._users), dtype=np.int64)
            np.maximum.at(most, lists, own)
            wanted = np.minimum(k + most[lists], self._sizes[lists])
        else:
            wanted = np.minimum(k, self._sizes[lists])
        width = int(wanted.max())
        if wanted.min() == width:  # the usual case: one search for the whole batch
            scores, rows = self._search(queries, width, lists)
        else:
            scores = np.full((len(users), width), -np.inf, dtype=np.float32)
            rows = np.full((len(users), width), -1, dtype=np.int64)
            for kk in np.unique(wanted):
                sel = np.flatnonzero(wanted == kk)
                scores[sel, :kk], rows[sel, :kk] = self._search(queries[sel], int(kk), lists[sel])
        valid = rows >= 0
        valid &= self._m_item[np.where(valid, rows, 0)] != items[:, None]
        valid &= np.cumsum(valid, axis=1) <= k
        reasons, item_of, rating_of = self._m_reason, self._m_item, self._m_rating
        for q, j in zip(*np.nonzero(valid), strict=True):
            row = int(rows[q, j])
            out[q].append(MemoryHit(int(item_of[row]), int(rating_of[row]), reasons[row], float(scores[q, j])))
        return out

    def _search(self, queries: np.ndarray, k: int, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores float32 (n, k) and rows int64 (n, k) (-1: none) of the k best memories in each query's list."""
        coarse = np.zeros((len(queries), 1), dtype=np.float32)
        return self._ivf.search_preassigned(np.ascontiguousarray(queries), k, lists[:, None], coarse)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike[str], *, personas_manifest: str = "") -> None:
        """Write the index files and (last) its manifest into ``out_dir``.

        Args:
            out_dir: the directory (``<personas>/memory``).
            personas_manifest: the digest of the persona set's manifest it was built from.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)
        memories, vectors = self.memories, self.vectors()
        writers = {
            "memories.parquet": lambda p: memories.to_parquet(p, index=False),
            "vectors.npy": lambda p: np.save(p, vectors, allow_pickle=False),
            "item_ids.npy": lambda p: np.save(p, self.item_ids, allow_pickle=False),
            "item_vectors.npy": lambda p: np.save(p, self.item_vectors, allow_pickle=False),
        }
        for name, write in writers.items():
            with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
                write(f)
        body = {
            "embedder": self.embedder_id,
            "dim": self.dim,
            "memories": len(memories),
            "personas_manifest": personas_manifest,
        }
        write_manifest(out, MEMORY_INDEX, body, files=_FILES, libraries=("faiss-cpu", "pandas", "pyarrow"))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, personas_manifest: str | None = None) -> MemoryIndex:
        """Load and verify a memory index; with ``personas_manifest``, refuse one built from other personas.

        Raises:
            ArtifactError: no index there, a damaged manifest, a file that does not match it, or an index built
                from another persona set.
        """
        path = Path(path)
        manifest = read_manifest(path, MEMORY_INDEX, required=("embedder", "personas_manifest", "files"))
        verify_files(path, manifest, MEMORY_INDEX)
        if personas_manifest is not None:
            check_input(
                path,
                MEMORY_INDEX,
                "persona set",
                manifest["personas_manifest"],
                personas_manifest,
                "rebuild it with `recsim-personas personas index`",
            )
        return cls(
            pd.read_parquet(path / "memories.parquet"),
            np.load(path / "vectors.npy", allow_pickle=False),
            np.load(path / "item_ids.npy", allow_pickle=False),
            np.load(path / "item_vectors.npy", allow_pickle=False),
            manifest["embedder"],
        )


def _positions(keys: np.ndarray, queries: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Where each of ``queries`` stands in the ascending ``keys`` (int64 (n,); -1 when absent).

    With ``order`` (``keys = values[order]``), the positions are in ``values`` instead.
    """
    if not len(keys):
        return np.full(len(queries), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    found = keys[pos] == queries
    pos = pos if order is None else order[pos]
    return np.where(found, pos, -1).astype(np.int64)
