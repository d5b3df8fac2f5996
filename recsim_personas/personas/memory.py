"""The long-term memory index: retrieve a user's past reasons (Ml) most similar to a movie, with FAISS.

Each memory is embedded *together with its item's description*: its key vector is the L2-normalised sum
of the unit embedding of the movie's description and the unit embedding of the reason. A request
``(user_id, item_id)`` is answered with that user's memories whose key vectors have the largest inner
product (cosine similarity) with the embedding of the requested item's description.

Guarantees:

- **Only the user's own memories** are searched (one FAISS ``IndexFlatIP`` per user).
- **Never the target item**: memories of the requested item are dropped from the answer (the search asks
  for enough extra neighbours to still return ``k``).
- **No test leakage**: the index is built from ``memories.parquet``, i.e. from train interactions only;
  memories added later (``add``, e.g. by the simulator) are the user's own new experiences.

Retrieval is batched: requests are grouped by user and each group is one FAISS search.

On disk (``<personas>/memory/``): ``memories.parquet`` (rows in index order), ``vectors.npy`` (float32,
(n_memories, d)), ``item_ids.npy`` + ``item_vectors.npy`` (description embeddings of every catalog item)
and ``manifest.json`` (embedder, dimension, the persona set it was built from, file hashes).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas._io import atomic_path, sha256_file, write_json
from recsim_personas.data.catalog import ItemCatalog
from recsim_personas.errors import ArtifactError, ConfigError, UnknownUserError
from recsim_personas.personas.embedders import l2_normalise
from recsim_personas.personas.store import PersonaSet

logger = logging.getLogger(__name__)

MEMORY_FORMAT = "recsim-personas/memory-index"


@dataclass(frozen=True)
class MemoryHit:
    """One retrieved memory."""

    item_id: int
    rating: int
    reason: str
    score: float


class MemoryIndex:
    """Per-user FAISS indexes over memory key vectors, plus the description vectors of every item.

    Args:
        memories: frame with ``user_id``, ``item_id``, ``rating``, ``reason`` (row i ↔ ``vectors[i]``).
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
        import faiss

        if len(memories) != len(vectors):
            raise ArtifactError(f"memory index: {len(memories)} memories but {len(vectors)} vectors.")
        self.embedder_id = embedder_id
        self.dim = int(item_vectors.shape[1])
        self._faiss = faiss
        self.memories = memories.reset_index(drop=True)
        self._vectors = [np.ascontiguousarray(vectors, dtype=np.float32)]
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self._item_pos = pd.Index(self.item_ids)
        self._index: dict[int, Any] = {}
        self._rows: dict[int, list[int]] = {}
        self._m_item = self.memories["item_id"].to_numpy(dtype=np.int64)
        self._m_rating = self.memories["rating"].to_numpy(dtype=np.int64)
        self._m_reason = self.memories["reason"].tolist()
        for uid, rows in self.memories.groupby("user_id").indices.items():
            index = faiss.IndexFlatIP(self.dim)
            index.add(self._vectors[0][rows])
            self._index[int(uid)] = index
            self._rows[int(uid)] = [int(r) for r in rows]

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def build(cls, pset: PersonaSet, catalog: ItemCatalog, embedder: Any) -> MemoryIndex:
        """Embed every catalog description and every memory's reason, and index them."""
        item_ids = catalog.item_ids
        item_vectors = embedder.embed(catalog.describe_many(item_ids))
        memories = pset.memories[["user_id", "item_id", "rating", "timestamp", "reason"]].reset_index(drop=True)
        reason_vecs = embedder.embed(memories["reason"].tolist())
        pos = pd.Index(item_ids).get_indexer(memories["item_id"])
        if (pos < 0).any():
            bad = memories["item_id"][pos < 0].iloc[0]
            raise ArtifactError(f"memory of item_id {bad} has no description in the catalog; is this the right split?")
        keys = l2_normalise(item_vectors[pos] + reason_vecs)
        return cls(memories, keys, item_ids, item_vectors, embedder.model_id)

    def key_vector(self, item_id: int, reason_vector: np.ndarray) -> np.ndarray:
        """Key vector of a new memory about ``item_id`` whose reason embeds to ``reason_vector`` (d,)."""
        return l2_normalise((self.item_vector([item_id])[0] + reason_vector)[None, :])[0]

    def add(self, user_id: int, item_id: int, rating: int, reason: str, key: np.ndarray, timestamp: int = 0) -> None:
        """Add one memory (e.g. a simulated watch) to ``user_id``'s index."""
        uid = int(user_id)
        row = len(self._m_reason)
        vec = np.asarray(key, dtype=np.float32).reshape(1, self.dim)
        self._vectors.append(vec)
        self._m_item = np.append(self._m_item, int(item_id))
        self._m_rating = np.append(self._m_rating, int(rating))
        self._m_reason.append(reason)
        if uid not in self._index:
            self._index[uid] = self._faiss.IndexFlatIP(self.dim)
            self._rows[uid] = []
        self._index[uid].add(vec)
        self._rows[uid].append(row)
        self.memories = pd.concat(
            [
                self.memories,
                pd.DataFrame(
                    [
                        {
                            "user_id": uid,
                            "item_id": int(item_id),
                            "rating": int(rating),
                            "timestamp": timestamp,
                            "reason": reason,
                        }
                    ]
                ),
            ],
            ignore_index=True,
        )

    # -- retrieval ------------------------------------------------------------------------------
    def item_vector(self, item_ids: Any) -> np.ndarray:
        """Description embeddings (n, d) of catalog items."""
        pos = self._item_pos.get_indexer(np.asarray(item_ids, dtype=np.int64))
        if (pos < 0).any():
            bad = np.asarray(item_ids)[pos < 0][0]
            raise ConfigError(f"item_id {bad} is not in the catalog the memory index was built with.")
        return self.item_vectors[pos]

    def has_user(self, user_id: int) -> bool:
        return int(user_id) in self._index

    def retrieve(self, user_id: int, item_id: int, k: int = 1) -> list[MemoryHit]:
        """Top-``k`` memories of ``user_id`` most similar to ``item_id``'s description (never ``item_id`` itself)."""
        return self.retrieve_batch(np.array([user_id]), np.array([item_id]), k)[0]

    def retrieve_batch(self, user_ids: np.ndarray, item_ids: np.ndarray, k: int = 1) -> list[list[MemoryHit]]:
        """Batched :meth:`retrieve`: one list of at most ``k`` hits per request, in request order.

        Raises:
            UnknownUserError: a user with no memories in the index.
        """
        if k < 0:
            raise ConfigError(f"k must be >= 0, got {k!r}.")
        users = np.asarray(user_ids, dtype=np.int64)
        items = np.asarray(item_ids, dtype=np.int64)
        out: list[list[MemoryHit]] = [[] for _ in range(len(users))]
        if k == 0 or len(users) == 0:
            return out
        queries = self.item_vector(items)
        for uid in np.unique(users):
            index = self._index.get(int(uid))
            if index is None:
                raise UnknownUserError(f"user_id {int(uid)} has no memories in the index ({len(self._index)} users).")
            sel = np.flatnonzero(users == uid)
            rows = self._rows[int(uid)]
            # drop the target item's own memories: ask for as many extra neighbours as there are
            own = (self._m_item[np.asarray(rows)][None, :] == items[sel][:, None]).sum(axis=1)
            kk = min(len(rows), k + int(own.max()))
            scores, local = index.search(np.ascontiguousarray(queries[sel]), kk)
            for qi, q in enumerate(sel):
                target = items[q]
                hits = []
                for s, li in zip(scores[qi], local[qi], strict=True):
                    if li < 0:
                        continue
                    row = rows[li]
                    if self._m_item[row] == target:
                        continue
                    hits.append(
                        MemoryHit(int(self._m_item[row]), int(self._m_rating[row]), self._m_reason[row], float(s))
                    )
                    if len(hits) == k:
                        break
                out[q] = hits
        return out

    # -- persistence ----------------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike[str], *, personas_manifest: str = "") -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)
        vectors = np.concatenate(self._vectors)
        files = {
            "memories.parquet": lambda p: self.memories.to_parquet(p, index=False),
            "vectors.npy": lambda p: np.save(p, vectors, allow_pickle=False),
            "item_ids.npy": lambda p: np.save(p, self.item_ids, allow_pickle=False),
            "item_vectors.npy": lambda p: np.save(p, self.item_vectors, allow_pickle=False),
        }
        for name, write in files.items():
            with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
                write(f)
        write_json(
            out / "manifest.json",
            {
                "format": MEMORY_FORMAT,
                "embedder": self.embedder_id,
                "dim": self.dim,
                "memories": len(self.memories),
                "personas_manifest": personas_manifest,
                "files": {n: sha256_file(out / n) for n in files},
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, personas_manifest: str | None = None) -> MemoryIndex:
        path = Path(path)
        mf = path / "manifest.json"
        if not mf.is_file():
            raise ArtifactError(f"no memory index at {str(path)!r}. Fix: run `recsim-personas personas index`.")
        manifest = json.loads(mf.read_text(encoding="utf-8"))
        if manifest.get("format") != MEMORY_FORMAT:
            raise ArtifactError(f"{mf} is not a memory index manifest.")
        for name, digest in manifest["files"].items():
            if not (path / name).is_file() or sha256_file(path / name) != digest:
                raise ArtifactError(f"memory index {str(path)!r}: {name} is missing or does not match its manifest.")
        if personas_manifest is not None and manifest["personas_manifest"] != personas_manifest:
            raise ArtifactError(
                f"memory index {str(path)!r} was built from other personas. Fix: rerun `personas index`."
            )
        return cls(
            pd.read_parquet(path / "memories.parquet"),
            np.load(path / "vectors.npy", allow_pickle=False),
            np.load(path / "item_ids.npy", allow_pickle=False),
            np.load(path / "item_vectors.npy", allow_pickle=False),
            manifest["embedder"],
        )
