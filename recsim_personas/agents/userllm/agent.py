"""A trained USER-LLM agent as a :class:`~recsim_personas.agents.rater.Rater`, its simulation sessions, and its
artifact directory.

**Speed by construction.** At load the agent computes, once: every movie's backbone states below the lowest
cross-attention block (with the default single block after the last layer, the block's attention queries and the
mean text state per movie: :meth:`~recsim_personas.agents.userllm.model.UserLLM.movie_cache`), and every user's
tokens from its logged history (with the default, the block's keys and values per user). A batch of requests then
costs a gather of cache rows and a small attention per request (:meth:`~.model.UserLLM.top_logits`), one
batched call per env step. A simulation's session keeps its own copy of the users' histories and tokens: a watch
the simulation reports (:meth:`UserLLMSession.observe`) is appended to the user's history and only that user's
tokens are recomputed. The shared agent never changes.

A directory (``recsim-personas userllm train ... --out DIR``)::

    agent.safetensors   the trained weights (without the frozen backbone's own weights, which load from
                        UserLLMConfig.backbone), the movies' token ids and the users' logged histories
                        (and, for the default single block after the last layer, every movie's cache of the fast
                        path, so a loaded agent runs no backbone)
    agent.json          configs, item table, user ids, the training report
    prior/              the anchoring prior (a classical rater fitted on the history), when anchored
    manifest.json       written last
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsim_personas.agents.precision import PrecisionVerdict
from recsim_personas.agents.rater import as_requests
from recsim_personas.agents.userllm.config import UserEncoderConfig, UserLLMConfig, UserLLMTrainConfig
from recsim_personas.agents.userllm.events import Histories, ItemTable
from recsim_personas.agents.userllm.incremental import EncodedHistory
from recsim_personas.agents.userllm.model import UserLLM, load_backbone
from recsim_personas.artifacts import ArtifactKind, check_input, read_manifest, verify_files
from recsim_personas.errors import ArtifactError, UnknownUserError

logger = logging.getLogger(__name__)

USERLLM = ArtifactKind(
    format="recsim-personas/userllm-agent",
    version=2,
    what="USER-LLM agent",
    fix="train one with `recsim-personas userllm train --split DIR --encoder DIR --out DIR`",
)
WEIGHTS_FILE = "agent.safetensors"
BODY_FILE = "agent.json"
PRIOR_DIR = "prior"
WATCH_GAP_BUCKET = 2
"""Time-gap bucket given to a watch reported by a simulation (a gap under ten minutes: the previous movie of the
same sitting); the simulation's reports carry no clock."""
_BATCH = 2048
MOVIE_CACHE = ("pooled", "queries", "weights")
"""The per-movie tensors of the fast path (:meth:`UserLLM.movie_cache`), stored in the artifact."""


def frozen_key(name: str, strategy: str) -> bool:
    """True for the weights a trained agent does not store: the backbone's own (unless ``full`` trained them)."""
    return strategy != "full" and name.startswith("backbone.") and "lora_" not in name


class UserLLMAgent:
    """A trained USER-LLM agent: rating distributions of (user, movie) requests.

    Args:
        model: the trained :class:`~recsim_personas.agents.userllm.model.UserLLM` (put in eval mode).
        items: the split's items.
        text_ids: the movies' description token ids, int64 (n_items, T); text_mask: int64 (n_items, T).
        histories: the users' logged histories (the split's history, latest ``max_len`` events).
        prior: the anchoring prior (an :class:`~recsim_personas.agents.prior.AnchorPrior`) or ``None``.
        train_config: how it was trained; split_id: the split; report: the training report.
    """

    def __init__(
        self,
        model: UserLLM,
        items: ItemTable,
        text_ids: np.ndarray,
        text_mask: np.ndarray,
        histories: Histories,
        prior: Any,
        train_config: UserLLMTrainConfig,
        split_id: str | None,
        report: dict[str, Any] | None = None,
        user_adapter: np.ndarray | None = None,
    ) -> None:
        self.model = model.eval()
        if (model.adapters is None) != (user_adapter is None):
            raise ValueError("a USER-LLM agent with one adapter per persona needs each user's adapter, and only it")
        self.user_adapter = None if user_adapter is None else np.asarray(user_adapter, dtype=np.int64)
        """Per user row (of ``histories``): the index of its persona adapter in ``model.adapters``, or ``None``."""
        self.items = items
        self.text_ids = np.asarray(text_ids, dtype=np.int64)
        self.text_mask = np.asarray(text_mask, dtype=np.int64)
        self.histories = histories
        self.prior = prior
        self.train_config = train_config
        self.split_id = split_id
        self.report = dict(report or {})
        self.name = f"userllm-{model.config.integration}"
        self.path: Path | None = None
        self._user_row = {int(u): r for r, u in enumerate(histories.user_ids.tolist())}
        self._movies: dict[str, torch.Tensor] | None = None
        self._state: dict[str, torch.Tensor] | None = None
        self.dtype = "float32"
        self.precision: PrecisionVerdict | None = None
        self._float32: dict[str, Any] | None = None  # the float32 weights and caches while running in another dtype

    # ------------------------------------------------------------------------------------- precision
    def to_dtype(self, dtype: str) -> None:
        """Run in ``dtype`` (``"float32"`` or ``"bfloat16"``): the weights and the movie and user caches converted.
        Going back to float32 restores the float32 originals exactly. Sessions opened before keep their dtype."""
        from recsim_personas.agents.backbone_config import torch_dtype

        if dtype == self.dtype:
            return
        if dtype == "float32":
            if self._float32 is None:
                raise RuntimeError(f"the agent runs in {self.dtype} without its float32 originals")
            self.model.to(torch.float32)
            self.model.load_state_dict(self._float32["weights"])  # exact: never widened from bfloat16
            self._movies, self._state = self._float32["movies"], self._float32["state"]
            self._float32 = None
        else:
            target = torch_dtype(dtype)
            if self._float32 is None:
                weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self._float32 = {"weights": weights, "movies": self.movie_states(), "state": self.logged_state()}
            self.model.to(target)
            movies, state = self._float32["movies"], self._float32["state"]
            self._movies = {k: v if k == "mask" else v.to(target) for k, v in movies.items()}
            self._state = {k: v.to(target) for k, v in state.items()}
        self.dtype = dtype

    def choose_precision(
        self,
        dtype: str = "auto",
        *,
        requests: int = 640,
        cache_dir: str | os.PathLike[str] | None = None,
        refresh: bool = False,
    ) -> PrecisionVerdict | None:
        """Run in ``dtype``; ``"auto"`` measures (:func:`~recsim_personas.agents.precision.measure_precision`):
        a seeded batch of ``requests`` (user, movie) pairs rated in float32 and in bfloat16, bfloat16 kept only
        when faster and its expected ratings within the tolerance. The verdict is cached per machine and
        workload (the architecture and the trained weights' digest) and kept in :attr:`precision`."""
        from recsim_personas.agents.precision import INFERENCE_DTYPES, measure_precision
        from recsim_personas.errors import unknown_choice

        if dtype not in INFERENCE_DTYPES:
            raise unknown_choice("inference dtype", str(dtype), INFERENCE_DTYPES)
        if dtype != "auto":
            self.to_dtype(dtype)
            return None
        rng = np.random.default_rng(0)
        users = self.histories.user_ids[rng.integers(0, len(self.histories.user_ids), requests)]
        items = self.items.item_ids[rng.integers(0, len(self.items.item_ids), requests)]
        levels = np.arange(1.0, 6.0)

        def probe(d: str) -> np.ndarray:
            self.to_dtype(d)
            return self.predict(users, items) @ levels

        c = self.model.config
        key = (
            f"userllm:{c.backbone}:{c.integration}:{list(self.model.cross_layers)}:{c.cross_heads}x{c.cross_head_dim}"
            f":latents={c.n_latents}:requests={requests}:weights={self.digest[:16]}"
        )
        try:
            verdict = measure_precision(probe, key=key, cache_dir=cache_dir, refresh=refresh)
        except BaseException:
            self.to_dtype("float32")
            raise
        self.to_dtype(verdict.dtype)
        self.precision = verdict
        logger.info("%s: runs in %s (dtype='auto': %s)", self.name, self.dtype, verdict.reason)
        return verdict

    @property
    def digest(self) -> str:
        """sha256 of the trained weights file when read from a directory, else of the architecture."""
        import hashlib

        if self.path is not None:
            files = read_manifest(self.path, USERLLM).get("files") or {}
            if isinstance(files, dict) and WEIGHTS_FILE in files:
                return str(files[WEIGHTS_FILE])
        return hashlib.sha256(json.dumps(self.model.config.to_dict(), sort_keys=True).encode()).hexdigest()

    # ---------------------------------------------------------------------------------------- caches
    @torch.no_grad()
    def movie_states(self) -> dict[str, torch.Tensor]:
        """The per-movie part of every request, computed once: ``{"mask"}`` plus either the top block's cache
        (:meth:`UserLLM.movie_cache`) or ``{"hidden"}`` — the states below the lowest block (the embeddings for
        the soft prompt). With one adapter per persona, the rows of adapter ``a`` are ``a × n_items + item row``
        (the backbone's states differ per adapter); ``"mask"`` has one row per movie."""
        if self._movies is None:
            ids, mask = torch.as_tensor(self.text_ids), torch.as_tensor(self.text_mask)
            model = self.model
            parts: dict[str, list[torch.Tensor]] = {}
            for adapter in model.adapters or [None]:
                if adapter is not None:
                    model.use_adapter(adapter)
                if model.config.integration == "soft_prompt":
                    out = {"hidden": model.embed(ids)}
                elif model.top_only:
                    out = model.movie_cache(model.all_text_states(ids, mask, depth=model.n_layers), mask)
                else:
                    out = {"hidden": model.all_text_states(ids, mask)}
                for k, v in out.items():
                    parts.setdefault(k, []).append(v)
            self._movies = {k: torch.cat(v) for k, v in parts.items()} | {"mask": mask}
        return self._movies

    @torch.no_grad()
    def tokens_of(self, hist: Histories) -> torch.Tensor:
        """User tokens of histories, float (U, K, h)."""
        from recsim_personas.agents.userllm.pretrain import as_tensors

        out = []
        for start in range(0, len(hist), 256):
            out.append(self.model.user_tokens(*as_tensors(hist.take(np.arange(start, min(len(hist), start + 256))))))
        return torch.cat(out) if out else torch.zeros((0, self.model.config.n_latents, self.model.hidden))

    @torch.no_grad()
    def user_state(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """What requests read of their users: the top block's keys and values (:meth:`UserLLM.user_cache`) when
        :attr:`UserLLM.top_only`, else ``{"tokens"}``; rows = users."""
        return self.model.user_cache(tokens) if self.model.top_only else {"tokens": tokens}

    def logged_state(self) -> dict[str, torch.Tensor]:
        """Every user's :meth:`user_state` from its logged history (computed once)."""
        if self._state is None:
            self._state = self.user_state(self.tokens_of(self.histories))
        return self._state

    def user_rows(self, users: np.ndarray) -> np.ndarray:
        """Rows of user ids (raises :class:`UnknownUserError` naming the first unknown one)."""
        rows = np.fromiter((self._user_row.get(int(u), -1) for u in users), dtype=np.int64, count=len(users))
        if (rows < 0).any():
            bad = int(users[np.argmax(rows < 0)])
            raise UnknownUserError(
                f"user {bad} has no history in the split this USER-LLM agent was trained on. Fix: ask about the"
                " split's users (sampled or background)."
            )
        return rows

    # --------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def logits(self, user_rows: np.ndarray, item_rows: np.ndarray, users: dict[str, torch.Tensor]) -> np.ndarray:
        """Rating logits float64 (n, 5) of rows into a :meth:`user_state` and item rows (before the prior)."""
        movies = self.movie_states()
        out = np.empty((len(user_rows), 5), dtype=np.float64)
        adapter = None if self.user_adapter is None else self.user_adapter[user_rows]
        flat = item_rows if adapter is None else adapter * len(self.items.item_ids) + item_rows
        if adapter is not None and not self.model.top_only:  # layers run per request: one adapter at a time
            for a in np.unique(adapter).tolist():
                sel = np.flatnonzero(adapter == a)
                self.model.use_adapter(self.model.adapters[a])
                out[sel] = self._logits_of(user_rows[sel], item_rows[sel], flat[sel], movies, users)
            return out
        return self._logits_of(user_rows, item_rows, flat, movies, users)

    def _logits_of(self, user_rows, item_rows, flat, movies, users) -> np.ndarray:
        out = np.empty((len(user_rows), 5), dtype=np.float64)
        for start in range(0, len(user_rows), _BATCH):
            u = torch.as_tensor(user_rows[start : start + _BATCH])
            f = torch.as_tensor(flat[start : start + _BATCH])
            if self.model.top_only:
                logits = self.model.top_logits(
                    {k: movies[k][f] for k in MOVIE_CACHE}, {k: v[u] for k, v in users.items()}
                )
            else:
                i = torch.as_tensor(item_rows[start : start + _BATCH])
                logits = self.model.forward_from(movies["hidden"][f], movies["mask"][i], users["tokens"][u])
            out[start : start + len(u)] = logits.double().numpy()
        return out

    def predict_rows(
        self, users: np.ndarray, items: np.ndarray, state: dict[str, torch.Tensor], user_rows: np.ndarray
    ) -> np.ndarray:
        """Rating distributions of id requests whose users are rows ``user_rows`` of a :meth:`user_state`."""
        logits = self.logits(user_rows, self.items.rows(items, where="the rating requests"), state)
        if self.prior is not None:
            logits = logits + self.prior.log_probs(users, items)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Rating distributions of (user id, item id) requests, float64 (n, 5), from the users' logged histories."""
        users, items = as_requests(users, items)
        return self.predict_rows(users, items, self.logged_state(), self.user_rows(users))

    def session(self) -> UserLLMSession:
        """A simulation's handle: its own histories and tokens, updated by the watches it reports."""
        return UserLLMSession(self)

    # -------------------------------------------------------------------------------------- artifact
    def save(self, out: str | os.PathLike[str]) -> Path:
        """Write the agent directory ``out`` (atomically; the manifest last)."""
        from recsim_personas._io import atomic_dir, write_json
        from recsim_personas.agents.checkpoints import save_tensors
        from recsim_personas.artifacts import write_manifest

        out = Path(out)
        if out.exists():
            raise ArtifactError(f"{str(out)!r} already exists. Fix: choose another --out or pass --overwrite.")
        strategy = self.train_config.strategy
        weights = {k: v for k, v in self.model.state_dict().items() if not frozen_key(k, strategy)}
        h = self.histories
        arrays = {
            **{f"model.{k}": v for k, v in weights.items()},
            "text_ids": torch.as_tensor(self.text_ids),
            "text_mask": torch.as_tensor(self.text_mask),
            "hist_items": torch.as_tensor(h.items),
            "hist_ratings": torch.as_tensor(h.ratings),
            "hist_gaps": torch.as_tensor(h.gaps),
            "hist_lengths": torch.as_tensor(h.lengths),
        }
        if self.model.top_only:  # the per-movie cache: loading the agent then runs no backbone at all
            arrays.update({f"movie.{k}": v for k, v in self.movie_states().items() if k in MOVIE_CACHE})
        with atomic_dir(out) as tmp:
            save_tensors(tmp / WEIGHTS_FILE, arrays)
            files = [WEIGHTS_FILE, BODY_FILE]
            if self.prior is not None:
                for name in self.prior.save(tmp / PRIOR_DIR):
                    files.append(f"{PRIOR_DIR}/{name}")
            body = {
                "split_id": self.split_id,
                "config": self.model.config.to_dict(),
                "encoder_config": self.model.user_encoder.config.to_dict(),
                "train_config": self.train_config.to_dict(),
                **self.items.to_dict(),
                "user_ids": h.user_ids.tolist(),
                "adapters": self.model.adapters,
                "user_adapters": None if self.user_adapter is None else self.user_adapter.tolist(),
                "report": self.report,
            }
            write_json(tmp / BODY_FILE, body)
            write_manifest(
                tmp,
                USERLLM,
                {"split_id": self.split_id, "config": body["config"], "train_config": body["train_config"]},
                files=files,
                libraries=("torch", "transformers", "peft", "safetensors"),
            )
        self.path = out
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, split_id: str | None = None, dtype: str = "auto") -> UserLLMAgent:
        """Read an agent directory (checking its files and, given ``split_id``, the split), to run in ``dtype``
        (``"auto"``: measured on this machine, :meth:`choose_precision`).

        Raises:
            ArtifactError: not a USER-LLM agent, damaged or altered files, another split, weights that do not fit.
        """
        from safetensors.torch import load_file

        from recsim_personas.agents.prior import AnchorPrior
        from recsim_personas.agents.userllm.encoder import UserEncoder
        from recsim_personas.agents.userllm.train import prepare_backbone

        path = Path(path)
        manifest = read_manifest(path, USERLLM, required=("split_id", "files"))
        verify_files(path, manifest, USERLLM)
        if split_id is not None:
            check_input(path, USERLLM, "split", manifest["split_id"], split_id, "train the agent on this split")
        body = json.loads((path / BODY_FILE).read_text(encoding="utf-8"))
        items = ItemTable.from_dict(body)
        config = UserLLMConfig.from_dict(body["config"])
        train_config = UserLLMTrainConfig.from_dict(body["train_config"])
        backbone, _ = load_backbone(config)
        model = UserLLM(config, UserEncoder(UserEncoderConfig.from_dict(body["encoder_config"]), items), backbone)
        prepare_backbone(model, train_config, body.get("adapters"))
        arrays = load_file(str(path / WEIGHTS_FILE))
        weights = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not frozen_key(k, train_config.strategy)]
        if missing or unexpected:
            raise ArtifactError(
                f"USER-LLM agent {str(path)!r}: its weights do not fit its config (missing {missing[:2]!r},"
                f" unexpected {unexpected[:2]!r}). Fix: train it again."
            )
        hist = Histories(
            user_ids=np.asarray(body["user_ids"], dtype=np.int64),
            items=arrays["hist_items"].numpy(),
            ratings=arrays["hist_ratings"].numpy(),
            gaps=arrays["hist_gaps"].numpy(),
            lengths=arrays["hist_lengths"].numpy(),
        )
        prior = AnchorPrior.load(path / PRIOR_DIR) if (path / PRIOR_DIR).is_dir() else None
        agent = cls(
            model,
            items,
            arrays["text_ids"].numpy(),
            arrays["text_mask"].numpy(),
            hist,
            prior,
            train_config,
            manifest["split_id"],
            body.get("report"),
            user_adapter=None if body.get("user_adapters") is None else np.asarray(body["user_adapters"]),
        )
        if model.top_only and all(f"movie.{k}" in arrays for k in MOVIE_CACHE):
            agent._movies = {k: arrays[f"movie.{k}"] for k in MOVIE_CACHE} | {"mask": torch.as_tensor(agent.text_mask)}
        agent.path = path
        agent.choose_precision(dtype)
        return agent


class UserLLMSession:
    """One simulation's view of a :class:`UserLLMAgent`: the users' histories grow with the watches the simulation
    reports, and only those users' tokens are recomputed — when they are next asked about (the shared agent is
    never modified).

    A user's encoded history is kept once computed, so a later watch costs one appended event per encoder layer
    (:class:`~recsim_personas.agents.userllm.incremental.IncrementalEncoder`), not the whole history; a history
    that outgrows the encoder's ``max_len`` window is encoded again from its latest window.
    """

    def __init__(self, agent: UserLLMAgent) -> None:
        from recsim_personas.agents.userllm.incremental import IncrementalEncoder

        self.agent = agent
        self._state: dict[str, torch.Tensor] | None = None
        self._extra: dict[int, list[tuple[int, int]]] = {}  # user row -> [(item row, rating)] watched here
        self._dirty: set[int] = set()  # user rows whose tokens are behind their history
        self._encoded: dict[int, EncodedHistory] = {}  # user rows -> their encoded current history
        self._incremental = IncrementalEncoder(agent.model.user_encoder)

    def _current(self) -> dict[str, torch.Tensor]:
        if self._state is None:  # copied on first use: the agent's own state is shared by every session
            self._state = {k: v.clone() for k, v in self.agent.logged_state().items()}
        return self._state

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = as_requests(users, items)
        rows = self.agent.user_rows(users)
        self._refresh(rows)
        return self.agent.predict_rows(users, items, self._current(), rows)

    @torch.no_grad()
    def _refresh(self, rows: np.ndarray) -> None:
        """Recompute the tokens of the requested users whose history grew since (lazily: a user who watched and
        left is recomputed only when it is asked about again)."""
        from recsim_personas.agents.userllm.pretrain import as_tensors

        stale = sorted(self._dirty.intersection(np.unique(rows).tolist()))
        if not stale:
            return
        base = self.agent.histories
        max_len = self._incremental.max_len
        grow = [r for r in stale if r in self._encoded and int(base.lengths[r]) + len(self._extra[r]) <= max_len]
        whole = np.asarray(sorted(set(stale) - set(grow)), dtype=np.int64)
        if whole.size:
            encoded = self._incremental.encode(*as_tensors(self.histories_of(whole)))
            self._encoded.update(zip(whole.tolist(), encoded, strict=True))
        # the events each growing history has not encoded yet, appended one round per event
        pending = {r: self._extra[r][len(self._encoded[r]) - int(base.lengths[r]) :] for r in grow}
        for step in range(max((len(p) for p in pending.values()), default=0)):
            batch = [r for r in grow if len(pending[r]) > step]
            events = torch.as_tensor([pending[r][step] for r in batch], dtype=torch.long)
            self._incremental.append(
                [self._encoded[r] for r in batch],
                events[:, 0],
                events[:, 1],
                torch.full_like(events[:, 0], WATCH_GAP_BUCKET),
            )
        model = self.agent.model
        tokens = model.tokens_from_events(*self._incremental.padded([self._encoded[r] for r in stale]))
        state = self._current()
        for key, value in self.agent.user_state(tokens).items():
            state[key][torch.as_tensor(stale)] = value
        self._dirty.difference_update(stale)

    def observe(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        users, items = as_requests(users, items)
        if not len(users):
            return
        rows = self.agent.user_rows(users)
        item_rows = self.agent.items.rows(items, where="the observed watches")
        for r, i, v in zip(rows.tolist(), item_rows.tolist(), np.asarray(ratings).tolist(), strict=True):
            self._extra.setdefault(r, []).append((i, int(v)))
        self._dirty.update(rows.tolist())

    def histories_of(self, rows: np.ndarray) -> Histories:
        """The current histories of user rows ``rows``: logged events then this simulation's watches, the latest
        ``max_len`` kept."""
        base = self.agent.histories
        max_len = self.agent.model.user_encoder.config.max_len
        out_items, out_ratings, out_gaps, lengths = [], [], [], []
        for r in rows.tolist():
            n = int(base.lengths[r])
            extra = self._extra.get(r, [])
            items = [*base.items[r, :n].tolist(), *(i for i, _ in extra)][-max_len:]
            ratings = [*base.ratings[r, :n].tolist(), *(v for _, v in extra)][-max_len:]
            gaps = [*base.gaps[r, :n].tolist(), *([WATCH_GAP_BUCKET] * len(extra))][-max_len:]
            out_items.append(items)
            out_ratings.append(ratings)
            out_gaps.append(gaps)
            lengths.append(len(items))
        width = max(lengths, default=1)

        def pad(rows_: list[list[int]], fill: int) -> np.ndarray:
            return np.asarray([x + [fill] * (width - len(x)) for x in rows_], dtype=np.int64).reshape(-1, width)

        return Histories(
            user_ids=base.user_ids[rows],
            items=pad(out_items, -1),
            ratings=pad(out_ratings, 0),
            gaps=pad(out_gaps, 0),
            lengths=np.asarray(lengths, dtype=np.int64),
        )
