"""RecBole models as policies: train any general or sequential RecBole model by name on a split, save, load,
and serve top-k slates of unseen items for our users.

Training uses RecBole's lower-level API only (``Config``, ``create_dataset``, ``data_preparation``,
``get_model``, ``get_trainer``), behind :mod:`recsim_personas.recommenders.recbole_compat`. The RecBole
dataset is written from the split into a temporary directory (atomic files; nothing is written into the
split or the current directory):

- **general models** (Pop, BPR, LightGCN, ...): RecBole's benchmark files — ``train`` = the split's history
  (train part of the sampled users + every rating of the other users), an empty ``valid``, ``test`` = the
  split's test part. The model learns from the whole history; :func:`recbole_evaluate` runs RecBole's own
  evaluator on the test part (full ranking, history items excluded), which is the protocol of
  :mod:`recsim_personas.recommenders.offline`.
- **sequential models** (SASRec, GRU4Rec, ...): one ``.inter`` file = the history, ordered by time per user;
  RecBole's leave-one-out ``valid_only`` split keeps each user's last item out of training (sequential
  datasets are augmented by RecBole itself, which benchmark files do not allow).

Ids: RecBole remaps tokens to its own ids; :class:`RecBolePolicy` maps our item indices (positions in the
split's ascending item ids, as in the environments) and user indices to RecBole ids and back. Items RecBole
never saw get the lowest score (ranked after every known item).

Saving writes a directory: ``model.pth`` (``{"state_dict", "other_parameter"}`` — tensors only, loaded with
``torch.load(weights_only=True)``) and ``manifest.json`` (format, model, split id, the :class:`RecBoleConfig`,
the RecBole parameters, a hash of the id mapping, library versions, sha256 of ``model.pth``). Loading rebuilds
the RecBole dataset from the split, refuses a split other than the one trained on, and checks the id mapping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import json
import logging
import os
import random
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recsim_personas._io import atomic_dir, sha256_file, write_json
from recsim_personas.errors import ArtifactError, ConfigError, RecsimPersonasError, config_from_dict

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.data.protocol import Split

logger = logging.getLogger(__name__)

FORMAT = "recsim-personas/recbole-policy"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.pth"
DATASET = "recsim"
"""Name of the RecBole dataset (and of its atomic files) written from a split."""
RESERVED = (
    "model",
    "dataset",
    "data_path",
    "benchmark_filename",
    "load_col",
    "eval_args",
    "checkpoint_dir",
    "use_gpu",
    "device",
    "seed",
    "epochs",
    "learning_rate",
    "train_batch_size",
    "embedding_size",
    "hidden_size",
    "MAX_ITEM_LIST_LENGTH",
    "show_progress",
    "save_dataset",
    "save_dataloaders",
    "log_wandb",
    "metrics",
    "topk",
    "state",
    "metric_decimal_place",
)
"""RecBole parameters this adapter sets itself (not allowed in :attr:`RecBoleConfig.params`)."""

Kind = Literal["general", "sequential"]


# ------------------------------------------------------------------------------------------- models
def recbole_models() -> dict[str, Kind]:
    """RecBole's general and sequential models: ``{class name: kind}`` (a fresh copy)."""
    return dict(_recbole_models())


@functools.cache
def _recbole_models() -> dict[str, Kind]:
    from recsim_personas.recommenders.recbole_compat import apply

    apply()
    import recbole.model.general_recommender as general
    import recbole.model.sequential_recommender as sequential
    from recbole.model.abstract_recommender import GeneralRecommender, SequentialRecommender

    out: dict[str, Kind] = {}
    for module, base, kind in (
        (general, GeneralRecommender, "general"),
        (sequential, SequentialRecommender, "sequential"),
    ):
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base:
                out[name] = kind  # type: ignore[assignment]
    return out


def resolve_model(name: str) -> tuple[str, Kind]:
    """RecBole's spelling and kind of a model name (case-insensitive).

    Raises:
        ConfigError: not a RecBole general or sequential model; the message lists the closest names.
    """
    models = _recbole_models()
    if not isinstance(name, str) or not name:
        raise ConfigError(f"expected a RecBole model name such as 'BPR', got {name!r}.")
    by_lower = {m.lower(): m for m in models}
    canonical = by_lower.get(name.lower())
    if canonical is None:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
        hint = (" Did you mean " + " or ".join(repr(by_lower[c]) for c in close) + "?") if close else ""
        raise ConfigError(
            f"unknown RecBole model {name!r}: expected one of RecBole {_recbole_version()}'s general or sequential"
            f" models.{hint} Known models: {', '.join(sorted(models))}."
        )
    return canonical, models[canonical]


def _recbole_version() -> str:
    from importlib.metadata import version

    return version("recbole")


# ------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class RecBoleConfig:
    """How to train a RecBole model on a split.

    Attributes:
        model: a RecBole general or sequential model name (case-insensitive; stored in RecBole's spelling).
        epochs: training epochs (no early stopping: RecBole trains exactly this many).
        learning_rate: Adam learning rate.
        train_batch_size: training batch size.
        embedding_size: embedding size of general models (``embedding_size``) and hidden size of sequential
            ones (``hidden_size``).
        max_seq_len: longest history a sequential model reads (RecBole's ``MAX_ITEM_LIST_LENGTH``); also the
            observation history the policy asks the environment for.
        seed: seed of RecBole's initialisation and sampling (global random states are restored afterwards).
        num_threads: torch threads while training and scoring (restored afterwards); 1 is fastest on a
            shared machine.
        params: further RecBole parameters for the model (e.g. ``{"n_layers": 2}``), JSON values only.
    """

    model: str
    epochs: int = 20
    learning_rate: float = 1e-3
    train_batch_size: int = 2048
    embedding_size: int = 64
    max_seq_len: int = 50
    seed: int = 0
    num_threads: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        canonical, _ = resolve_model(self.model)
        object.__setattr__(self, "model", canonical)
        for name in ("epochs", "train_batch_size", "embedding_size", "max_seq_len", "num_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"RecBoleConfig.{name} must be a positive integer, got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"RecBoleConfig.seed must be a non-negative integer, got {self.seed!r}.")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not np.isfinite(lr) or lr <= 0:
            raise ConfigError(f"RecBoleConfig.learning_rate must be a positive number, got {lr!r}.")
        if not isinstance(self.params, Mapping):
            raise ConfigError(f"RecBoleConfig.params must be a mapping of RecBole parameters, got {self.params!r}.")
        taken = sorted(set(self.params) & set(RESERVED))
        if taken:
            raise ConfigError(
                f"RecBoleConfig.params sets {taken[0]!r}, which the adapter sets itself. Fix: use the"
                " RecBoleConfig field (epochs, learning_rate, train_batch_size, embedding_size, max_seq_len, seed)"
                " or drop it."
            )
        try:
            json.dumps(dict(self.params))
        except TypeError as exc:
            raise ConfigError(f"RecBoleConfig.params must hold JSON values only: {exc}.") from None
        object.__setattr__(self, "params", dict(self.params))

    @property
    def kind(self) -> Kind:
        return resolve_model(self.model)[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecBoleConfig:
        return config_from_dict(cls, d, "RecBoleConfig field")

    def recbole_params(self, data_path: str, checkpoint_dir: str, progress: bool) -> dict[str, Any]:
        """The ``config_dict`` handed to RecBole's ``Config``."""
        kind = self.kind
        params: dict[str, Any] = {
            "data_path": data_path,
            "checkpoint_dir": checkpoint_dir,
            "use_gpu": False,
            "seed": self.seed,
            "reproducibility": True,
            "epochs": self.epochs,
            "learning_rate": float(self.learning_rate),
            "train_batch_size": self.train_batch_size,
            "show_progress": progress,
            "save_dataset": False,
            "save_dataloaders": False,
            "log_wandb": False,
            "metrics": ["Recall", "NDCG", "MRR"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "eval_batch_size": 4096,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "metric_decimal_place": 6,
            "state": "WARNING",
        }
        if kind == "general":
            params["benchmark_filename"] = ["train", "valid", "test"]
            params["eval_args"] = {"group_by": "user", "order": "TO", "mode": "full", "split": {"RS": [0.8, 0.1, 0.1]}}
            params["embedding_size"] = self.embedding_size
        else:
            params["eval_args"] = {"group_by": "user", "order": "TO", "mode": "full", "split": {"LS": "valid_only"}}
            params["MAX_ITEM_LIST_LENGTH"] = self.max_seq_len
            params["hidden_size"] = self.embedding_size
            params["train_neg_sample_args"] = None
            params["loss_type"] = "CE"
        params.update(self.params)
        return params


# ------------------------------------------------------------------------------------------- helpers
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


def write_atomic_files(split: Split, directory: str | os.PathLike[str], kind: Kind) -> Path:
    """Write the RecBole dataset of ``split`` for a ``kind`` of model into ``directory/recsim/``.

    Returns:
        ``directory`` (RecBole's ``data_path``).
    """
    root = Path(directory) / DATASET
    root.mkdir(parents=True, exist_ok=True)
    header = ["user_id:token", "item_id:token", "timestamp:float"]
    cols = ["user_id", "item_id", "timestamp"]
    history = split.history()[cols].sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")

    def write(frame: pd.DataFrame, suffix: str) -> None:
        frame = frame[cols].copy()
        frame.columns = header
        frame.to_csv(root / f"{DATASET}.{suffix}", sep="\t", index=False, lineterminator="\n")

    if kind == "general":
        test = split.test[cols].sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
        write(history, "train.inter")
        write(history.iloc[:0], "valid.inter")
        write(test, "test.inter")
    else:
        write(history, "inter")
    return Path(directory)


@dataclass
class _Built:
    """A RecBole config, dataset and data loaders built from a split."""

    config: Any
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any


def _build(api: Any, split: Split, config: RecBoleConfig, tmp: str, progress: bool) -> _Built:
    data_path = write_atomic_files(split, Path(tmp) / "data", config.kind)
    params = config.recbole_params(str(data_path), str(Path(tmp) / "checkpoints"), progress)
    try:
        rb_config = api.Config(model=config.model, dataset=DATASET, config_dict=params)
        api.init_seed(config.seed, True)
        dataset = api.create_dataset(rb_config)
        train_data, valid_data, test_data = api.data_preparation(rb_config, dataset)
    except RecsimPersonasError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"RecBole could not build the dataset for {config.model} ({type(exc).__name__}: {exc}). Models that"
            " need item/user features or a knowledge graph are not supported by this adapter; pick an"
            " interaction-only general or sequential model (e.g. Pop, BPR, LightGCN, SASRec)."
        ) from exc
    return _Built(rb_config, dataset, train_data, valid_data, test_data)


def _make_model(api: Any, built: _Built, config: RecBoleConfig) -> Any:
    try:
        return api.get_model(config.model)(built.config, built.train_data.dataset).to(built.config["device"])
    except Exception as exc:
        raise ConfigError(
            f"RecBole could not build model {config.model} ({type(exc).__name__}: {exc}). This adapter supports"
            " interaction-only general and sequential models (e.g. Pop, BPR, LightGCN, SASRec)."
        ) from exc


def _tokens(dataset: Any, field_name: str) -> list[str]:
    return [str(t) for t in dataset.field2id_token[field_name]]


def _mapping_hash(users: list[str], items: list[str]) -> str:
    return hashlib.sha256(json.dumps({"users": users, "items": items}).encode()).hexdigest()


def _versions() -> dict[str, str]:
    import scipy
    import torch

    from recsim_personas import __version__

    return {
        "recsim_personas": __version__,
        "recbole": _recbole_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


# ------------------------------------------------------------------------------------------- policy
class RecBolePolicy:
    """A trained RecBole model serving top-k slates of unseen items.

    Build it with :func:`train_recbole` or :meth:`load`. It follows the
    :class:`~recsim_personas.recommenders.policies.Policy` protocol: :meth:`act` / :meth:`act_batch` read
    the observation's ``user_index`` (general models) or ``history_items`` (sequential models) and its
    ``seen`` mask, and return the ``slate_size`` best-scored unseen items, best first.

    Attributes:
        name: ``"recbole:<Model>"``.
        config: the :class:`RecBoleConfig` it was trained with.
        kind: ``"general"`` or ``"sequential"``.
        slate_size: items per slate.
        item_ids: our item ids, int64 (n_items,), ascending (index ``j`` ↔ ``item_ids[j]``).
        user_ids: our user ids, int64 (n_users,), ascending (the split's sampled users).
        split_id: the split it was trained on.
        history_len: observation history the policy wants (``config.max_seq_len``).
        model: the RecBole model (torch module, eval mode).
        train_seconds: wall time of training (None after :meth:`load`).
    """

    def __init__(
        self,
        config: RecBoleConfig,
        model: Any,
        dataset: Any,
        split: Split,
        *,
        slate_size: int = 10,
        train_seconds: float | None = None,
    ) -> None:
        import torch

        if isinstance(slate_size, bool) or not isinstance(slate_size, int) or slate_size < 1:
            raise ConfigError(f"slate_size must be a positive integer, got {slate_size!r}.")
        self.config, self.kind = config, config.kind
        self.name = f"recbole:{config.model}"
        self.model = model.eval()
        self.dataset = dataset
        self.split_id = split.split_id
        self.item_ids = np.sort(split.items["item_id"].to_numpy(dtype=np.int64))
        self.user_ids = np.sort(split.user_ids.astype(np.int64))
        if slate_size > len(self.item_ids):
            raise ConfigError(f"slate_size ({slate_size}) cannot exceed the split's {len(self.item_ids)} items.")
        self.slate_size, self.n_items = slate_size, len(self.item_ids)
        self.history_len = config.max_seq_len
        self.train_seconds = train_seconds
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.user_tokens = _tokens(dataset, self.uid_field)
        self.item_tokens = _tokens(dataset, self.iid_field)
        item_token2id = {tok: i for i, tok in enumerate(self.item_tokens)}
        user_token2id = {tok: i for i, tok in enumerate(self.user_tokens)}
        self._rb_item = np.array([item_token2id.get(str(i), -1) for i in self.item_ids], dtype=np.int64)
        """RecBole item id of each of our item indices (-1: unknown to RecBole), int64 (n_items,)."""
        self._rb_user = np.array([user_token2id.get(str(u), -1) for u in self.user_ids], dtype=np.int64)
        """RecBole user id of each of our user indices (-1: unknown), int64 (n_users,)."""
        self._known = self._rb_item >= 0
        self._rb_item_t = torch.as_tensor(np.where(self._known, self._rb_item, 0))

    # --------------------------------------------------------------------------------- protocol
    def seed(self, seed: Any) -> None:
        """RecBole policies are deterministic; accepted for the Policy interface."""

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        batch = {key: np.asarray(value)[None, ...] for key, value in obs.items()}
        return self.act_batch(batch)[0]

    def act_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Slates for a batch of observations: int64 (N, slate_size) of unseen item indices, best first."""
        if "seen" not in obs:
            raise ConfigError(f"{self.name} policy: the observation has no 'seen' mask (keys: {sorted(obs)}).")
        seen = np.asarray(obs["seen"]).astype(bool, copy=False)
        if seen.ndim != 2 or seen.shape[1] != self.n_items:
            raise ConfigError(f"{self.name} policy: obs['seen'] must have shape (N, {self.n_items}), got {seen.shape}.")
        scores = self.score_batch(obs)
        return top_k_unseen(scores, seen, self.slate_size)

    def score_batch(self, obs: Mapping[str, Any], chunk: int = 1024) -> np.ndarray:
        """The model's score of every item for each observation: float64 (N, n_items).

        Items RecBole does not know get ``-1e30`` (below every known item, above the ``-inf`` of seen items
        that :func:`top_k_unseen` uses).

        Raises:
            RecsimPersonasError: a user unknown to the model (general), or a user without history
                (sequential).
        """
        import torch

        n = len(np.asarray(obs["seen"]))
        out = np.empty((n, self.n_items), dtype=np.float64)
        with torch_threads(self.config.num_threads), torch.no_grad():
            for start in range(0, n, chunk):
                rows = slice(start, min(n, start + chunk))
                inter = self._interaction({k: np.asarray(v)[rows] for k, v in obs.items()})
                scores = self.model.full_sort_predict(inter).reshape(rows.stop - rows.start, -1)
                picked = scores[:, self._rb_item_t].double().numpy()
                out[rows] = np.where(self._known, picked, -1e30)
        return out

    def _interaction(self, obs: Mapping[str, np.ndarray]) -> Any:
        import torch
        from recbole.data.interaction import Interaction

        if self.kind == "general":
            if "user_index" not in obs:
                raise ConfigError(f"{self.name} policy: the observation has no 'user_index' (keys: {sorted(obs)}).")
            users = np.asarray(obs["user_index"], dtype=np.int64).reshape(-1)
            bad = (users < 0) | (users >= len(self.user_ids))
            if bad.any():
                raise ConfigError(
                    f"{self.name} policy: user_index {int(users[bad][0])} is outside [0, {len(self.user_ids)}); the"
                    " model serves the sampled users of the split it was trained on."
                )
            rb = self._rb_user[users]
            if (rb < 0).any():
                uid = int(self.user_ids[users[rb < 0][0]])
                raise RecsimPersonasError(f"{self.name} policy: user {uid} is unknown to the RecBole model.")
            return Interaction({self.uid_field: torch.as_tensor(rb)})
        if "history_items" not in obs:
            raise ConfigError(
                f"{self.name} policy: a sequential model needs obs['history_items'] (keys: {sorted(obs)})."
            )
        hist = np.asarray(obs["history_items"], dtype=np.int64)
        mapped = np.where(hist >= 0, self._rb_item[np.clip(hist, 0, self.n_items - 1)], -1)
        valid = mapped > 0  # RecBole id 0 is its padding token
        lengths = valid.sum(axis=1)
        if (lengths == 0).any():
            row = int(np.flatnonzero(lengths == 0)[0])
            who = ""
            if "user_index" in obs:
                u = int(np.asarray(obs["user_index"]).reshape(-1)[row])
                who = f" {int(self.user_ids[u])}" if 0 <= u < len(self.user_ids) else f" index {u}"
            raise RecsimPersonasError(
                f"{self.name} is a sequential model and user{who} has no history it knows (obs['history_items'] is"
                " empty or holds only items the model never saw). Fix: serve this user with a general model"
                " (e.g. recbole:BPR or pop), or give it a history first."
            )
        max_len = self.config.max_seq_len
        seq = np.zeros((len(mapped), max_len), dtype=np.int64)
        for r in range(len(mapped)):
            items = mapped[r][valid[r]][-max_len:]
            seq[r, : len(items)] = items
        lengths = np.minimum(lengths, max_len)
        return Interaction(
            {
                self.model.ITEM_SEQ: torch.as_tensor(seq),
                self.model.ITEM_SEQ_LEN: torch.as_tensor(lengths),
            }
        )

    # -------------------------------------------------------------------------------- save/load
    def save(self, out: str | os.PathLike[str]) -> Path:
        """Write the model directory (``model.pth`` + ``manifest.json``) atomically; returns its path."""
        import torch

        out = Path(out)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
            raise ArtifactError(
                f"{str(out)!r} exists and is not a saved RecBole policy; refusing to replace it. Fix: choose a new or"
                " empty directory."
            )
        with atomic_dir(out) as tmp:
            state = {"state_dict": self.model.state_dict(), "other_parameter": self.model.other_parameter()}
            torch.save(state, tmp / WEIGHTS)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "model": self.config.model,
                "kind": self.kind,
                "split_id": self.split_id,
                "config": self.config.to_dict(),
                "recbole_config": self.config.recbole_params("<split atomic files>", "<temporary>", False),
                "mapping_sha256": _mapping_hash(self.user_tokens, self.item_tokens),
                "train_seconds": self.train_seconds,
                "versions": _versions(),
                "files": {WEIGHTS: sha256_file(tmp / WEIGHTS)},
            }
            write_json(tmp / MANIFEST, manifest)
        logger.info("saved %s to %s", self.name, out)
        return out

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], split: str | os.PathLike[str] | Split, *, slate_size: int = 10
    ) -> RecBolePolicy:
        """Load a model directory written by :meth:`save` for ``split`` (the split it was trained on).

        Raises:
            ArtifactError: not a model directory, files that do not match the manifest, a model trained on
                another split, or an id mapping that differs from the one trained with.
        """
        import torch

        from recsim_personas.data import load_split
        from recsim_personas.recommenders.recbole_compat import import_recbole

        path = Path(path)
        manifest = read_model_manifest(path)
        split = load_split(split)
        if manifest["split_id"] != split.split_id:
            raise ArtifactError(
                f"model {str(path)!r} ({manifest['model']}) was trained on split {manifest['split_id'][:12]}, not on"
                f" the split at {str(split.path)!r} ({split.split_id[:12]}). Fix: pass the split it was trained on,"
                " or train it again on this split (recsim-personas benchmark --policies recbole:"
                f"{manifest['model']} ...)."
            )
        config = RecBoleConfig.from_dict(manifest["config"])
        api = import_recbole()
        with (
            tempfile.TemporaryDirectory(prefix="recsim-recbole-") as tmp,
            torch_threads(config.num_threads),
            _isolated_rng(),
        ):
            built = _build(api, split, config, tmp, progress=False)
            model = _make_model(api, built, config)
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        model.load_other_parameter(state.get("other_parameter"))
        policy = cls(config, model, built.dataset, split, slate_size=slate_size)
        if _mapping_hash(policy.user_tokens, policy.item_tokens) != manifest["mapping_sha256"]:
            raise ArtifactError(
                f"model {str(path)!r}: RecBole's id mapping rebuilt from the split differs from the one the model was"
                " trained with (another RecBole version?). Fix: train the model again."
            )
        return policy


def read_model_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a saved RecBole policy, checked against its files.

    Raises:
        ArtifactError: missing/unreadable manifest, wrong format, or a ``model.pth`` that does not match.
    """
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(
            f"{str(path)!r} is not a saved RecBole policy: {MANIFEST} is missing. Fix: point at a directory written"
            " by RecBolePolicy.save (or `recsim-personas benchmark --out DIR`, which keeps them in DIR/models/)."
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{str(mpath)!r} is not valid JSON: {exc}.") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{str(mpath)!r}: expected format {FORMAT!r} version {FORMAT_VERSION}, got"
            f" {manifest.get('format')!r} version {manifest.get('format_version')!r}."
        )
    for name, digest in manifest.get("files", {}).items():
        if not (path / name).is_file() or sha256_file(path / name) != digest:
            raise ArtifactError(
                f"{str(path / name)!r} is missing or does not match {MANIFEST} (edited or incomplete). Fix: train"
                " the model again."
            )
    return manifest


def top_k_unseen(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best-scored unseen items per row, best first (ties: lower index first).

    Rows with fewer than ``k`` unseen items are filled up with seen ones (as the other policies do).

    Args:
        scores: float (N, n_items).
        seen: bool (N, n_items).
        k: slate size.

    Returns:
        int64 (N, k).
    """
    masked = np.where(seen, -np.inf, scores)
    order = np.argsort(-masked, axis=1, kind="stable")
    return order[:, :k].astype(np.int64)


def train_recbole(
    split: str | os.PathLike[str] | Split,
    config: RecBoleConfig | str,
    *,
    slate_size: int = 10,
    progress: bool = True,
) -> RecBolePolicy:
    """Train a RecBole model on a split's history and return it as a policy.

    Args:
        split: a split directory or a loaded ``Split``.
        config: a :class:`RecBoleConfig` or just a model name (defaults for the rest).
        slate_size: items per slate the policy serves.
        progress: show RecBole's per-epoch progress bars (stderr); epoch losses are logged either way.

    Raises:
        ConfigError: an unknown model name (with close matches) or a model this adapter cannot build.
    """
    from recsim_personas.data import load_split
    from recsim_personas.recommenders.recbole_compat import import_recbole

    if isinstance(config, str):
        config = RecBoleConfig(model=config)
    split = load_split(split)
    api = import_recbole()
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="recsim-recbole-") as tmp,
        torch_threads(config.num_threads),
        _isolated_rng(),
    ):
        built = _build(api, split, config, tmp, progress)
        model = _make_model(api, built, config)
        trainer = api.get_trainer(built.config["MODEL_TYPE"], config.model)(built.config, model)
        logger.info(
            "training %s on %d history ratings for %d epochs",
            config.model,
            len(built.train_data.dataset),
            config.epochs,
        )
        _log_epochs(trainer, config.model)
        trainer.fit(built.train_data, valid_data=None, saved=False, show_progress=progress)
    seconds = time.perf_counter() - start
    logger.info("trained %s in %.1f s", config.model, seconds)
    return RecBolePolicy(config, model, built.dataset, split, slate_size=slate_size, train_seconds=seconds)


def _log_epochs(trainer: Any, model_name: str) -> None:
    """Log each epoch's loss through this module's logger (RecBole logs to the root logger)."""
    inner = trainer._train_epoch

    def train_epoch(train_data: Any, epoch_idx: int, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        loss = inner(train_data, epoch_idx, *args, **kwargs)
        value = sum(loss) if isinstance(loss, tuple) else loss
        logger.info(
            "%s epoch %d/%d: loss %.4f (%.1f s)",
            model_name,
            epoch_idx + 1,
            trainer.epochs,
            float(value),
            time.perf_counter() - t0,
        )
        return loss

    trainer._train_epoch = train_epoch


def recbole_evaluate(policy: RecBolePolicy, split: str | os.PathLike[str] | Split) -> dict[str, float]:
    """RecBole's own evaluator on the split's test part for a general model: Recall@10, NDCG@10, MRR@10.

    The RecBole dataset's test part is the split's test part and its training part the history, so the
    protocol is that of :func:`~recsim_personas.recommenders.offline.evaluate_offline`: per sampled user,
    a full ranking of the items with the user's history items excluded.

    Raises:
        ConfigError: a sequential model (RecBole evaluates those next-item by next-item, another protocol).
    """
    from recsim_personas.data import load_split
    from recsim_personas.recommenders.recbole_compat import import_recbole

    if policy.kind != "general":
        raise ConfigError(
            f"recbole_evaluate needs a general model; {policy.config.model} is sequential and RecBole evaluates"
            " those item by item (another protocol). Use recsim_personas.recommenders.offline.evaluate_offline."
        )
    split = load_split(split)
    if split.split_id != policy.split_id:
        raise ArtifactError(
            f"{policy.name} was trained on split {policy.split_id[:12]}, not {split.split_id[:12]}. Fix: evaluate it"
            " on the split it was trained on."
        )
    api = import_recbole()
    with (
        tempfile.TemporaryDirectory(prefix="recsim-recbole-") as tmp,
        torch_threads(policy.config.num_threads),
        _isolated_rng(),
    ):
        built = _build(api, split, policy.config, tmp, progress=False)
        if _tokens(built.dataset, policy.iid_field) != policy.item_tokens:
            raise ArtifactError(f"{policy.name}: RecBole's item mapping rebuilt from the split differs.")
        trainer = api.get_trainer(built.config["MODEL_TYPE"], policy.config.model)(built.config, policy.model)
        result = trainer.evaluate(built.test_data, load_best_model=False, show_progress=False)
    policy.model.eval()
    return {key: float(value) for key, value in result.items()}
