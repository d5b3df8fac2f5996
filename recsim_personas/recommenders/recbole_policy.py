"""A trained RecBole model as a policy: scoring, our ids ↔ RecBole's, unseen top-k slates, save and load.

The RecBole adapter is four modules; this one serves and stores a model, and re-exports the others' public
names so ``from recsim_personas.recommenders.recbole_policy import RecBoleConfig, train_recbole`` keeps working:

- :mod:`.recbole_config` — the model registry, per-model settings, :class:`RecBoleConfig`;
- :mod:`.recbole_data` — the RecBole dataset, loaders and model built from a split;
- :mod:`.recbole_train` — :func:`train_recbole` (fixed epochs or early stopping) and :func:`recbole_evaluate`;
- :mod:`.recbole_policy` — :class:`RecBolePolicy`.

Ids: RecBole remaps tokens to its own ids; :class:`RecBolePolicy` maps our item indices (positions in the
split's ascending item ids, as in the environments) and user indices to RecBole ids and back. Items RecBole
never saw get the lowest score (ranked after every known item). Models without RecBole's
``full_sort_predict`` (NeuMF, NNCF, ConvNCF) are scored through ``predict`` over all items, in batches.

Saving writes a directory: ``model.pth`` (``{"state_dict", "other_parameter"}`` — tensors only, loaded with
``torch.load(weights_only=True)``) and ``manifest.json`` (written by :mod:`recsim_personas.artifacts`: format,
version, model, split id, the :class:`RecBoleConfig`, the RecBole parameters, a hash of the id mapping,
library versions, sha256 of ``model.pth``). Loading rebuilds the RecBole dataset from the split, refuses a
split other than the one trained on, and checks the id mapping. Models saved before early stopping existed
(format version 1) load as they were trained: their configuration always names its epochs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.artifacts import (
    ArtifactKind,
    check_input,
    has_manifest,
    read_manifest,
    verify_files,
    write_manifest,
)
from recsim_personas.errors import ArtifactError, ConfigError, RecsimPersonasError, UnknownUserError
from recsim_personas.recommenders.policies import SeenAwarePolicy, top_k_unseen
from recsim_personas.recommenders.recbole_config import RecBoleConfig, recbole_models, resolve_model
from recsim_personas.recommenders.recbole_data import build, failure, make_model, recbole_run, tokens, torch_threads
from recsim_personas.recommenders.recbole_train import recbole_evaluate, train_recbole

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split

__all__ = [
    "RECBOLE_POLICY",
    "RecBoleConfig",
    "RecBolePolicy",
    "read_model_manifest",
    "recbole_evaluate",
    "recbole_models",
    "resolve_model",
    "top_k_unseen",
    "train_recbole",
]

logger = logging.getLogger(__name__)

WEIGHTS = "model.pth"
RECBOLE_POLICY = ArtifactKind(
    format="recsim-personas/recbole-policy",
    version=2,
    what="saved RecBole policy",
    fix="train it with RecBolePolicy.save, or `recsim-personas benchmark --out DIR`, which keeps them in DIR/models/",
    legacy_versions=(1,),
)
"""The saved-model artifact. Version 2 added early stopping to :class:`RecBoleConfig` (version 1 configs
always name their epochs and read with the new fields at their defaults)."""
PREDICT_PAIRS = 65536
"""Most (user, item) pairs per ``predict`` call for models without ``full_sort_predict``."""


def _mapping_hash(users: list[str], items: list[str]) -> str:
    return hashlib.sha256(json.dumps({"users": users, "items": items}).encode()).hexdigest()


def _full_sorts(model: Any) -> bool:
    """Whether the model has its own ``full_sort_predict`` (RecBole's base class only raises)."""
    from recbole.model.abstract_recommender import AbstractRecommender

    return type(model).full_sort_predict is not AbstractRecommender.full_sort_predict


# ------------------------------------------------------------------------------------------- policy
class RecBolePolicy(SeenAwarePolicy):
    """A trained RecBole model serving top-k slates of unseen items.

    Build it with :func:`train_recbole` or :meth:`load`. It follows the
    :class:`~recsim_personas.recommenders.policies.Policy` protocol: :meth:`act` / :meth:`act_batch` read
    the observation's ``user_index`` (general models, and sequential ones that use the user) and
    ``history_items`` (sequential models) and its ``seen`` mask, and return the ``slate_size`` best-scored
    unseen items, best first.

    Attributes:
        name: ``"recbole:<Model>"``.
        config: the :class:`RecBoleConfig` it was trained with.
        kind: ``"general"`` or ``"sequential"``.
        slate_size: items per slate.
        n_items: number of items (our item indices ``0 .. n_items - 1``).
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

        self.item_ids = np.sort(split.items["item_id"].to_numpy(dtype=np.int64))
        super().__init__(len(self.item_ids), slate_size)
        self.config, self.kind = config, config.kind
        self.name = f"recbole:{config.model}"
        self.model = model.eval()
        self.dataset = dataset
        self.split_id = split.split_id
        self.user_ids = np.sort(split.user_ids.astype(np.int64))
        self.history_len = config.max_seq_len
        self.train_seconds = train_seconds
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.user_tokens = tokens(dataset, self.uid_field)
        self.item_tokens = tokens(dataset, self.iid_field)
        item_token2id = {tok: i for i, tok in enumerate(self.item_tokens)}
        user_token2id = {tok: i for i, tok in enumerate(self.user_tokens)}
        self._rb_item = np.array([item_token2id.get(str(i), -1) for i in self.item_ids], dtype=np.int64)
        """RecBole item id of each of our item indices (-1: unknown to RecBole), int64 (n_items,)."""
        self._rb_user = np.array([user_token2id.get(str(u), -1) for u in self.user_ids], dtype=np.int64)
        """RecBole user id of each of our user indices (-1: unknown), int64 (n_users,)."""
        self._known = self._rb_item >= 0
        self._rb_item_t = torch.as_tensor(np.where(self._known, self._rb_item, 0))
        self._full_sort = _full_sorts(model)

    # --------------------------------------------------------------------------------- protocol
    def seed(self, seed: Any) -> None:
        """RecBole policies are deterministic; accepted for the Policy interface."""

    def act_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Slates for a batch of observations: int64 (N, slate_size) of unseen item indices, best first."""
        seen = self._seen(obs)
        return top_k_unseen(self.score_batch(obs), seen, self.slate_size)

    def score_batch(self, obs: Mapping[str, Any], chunk: int = 1024) -> np.ndarray:
        """The model's score of every item for each observation: float64 (N, n_items).

        Items RecBole does not know get ``-1e30`` (below every known item, above the ``-inf`` of seen items
        that :func:`top_k_unseen` uses).

        Raises:
            UnknownUserError: a user unknown to the model.
            RecsimPersonasError: a sequential model and a user without history.
            PolicyError: the model failed to score (names the model and the cause).
        """
        import torch

        n = len(np.asarray(obs["seen"]))
        out = np.empty((n, self.n_items), dtype=np.float64)
        if not self._full_sort:  # (user, item) pairs per predict call
            chunk = max(1, min(chunk, PREDICT_PAIRS // self.n_items))
        with torch_threads(self.config.num_threads), torch.no_grad():
            for start in range(0, n, chunk):
                rows = slice(start, min(n, start + chunk))
                inter = self._interaction({k: np.asarray(v)[rows] for k, v in obs.items()})
                try:
                    picked = self._scores(inter, rows.stop - rows.start)
                except RecsimPersonasError:
                    raise
                except Exception as exc:
                    raise failure(self.config.model, "scoring items", exc) from exc
                out[rows] = np.where(self._known, picked, -1e30)
        return out

    def _scores(self, inter: Any, n: int) -> np.ndarray:
        """Scores of our items for ``n`` interactions (RecBole id 0 where unknown): float64 (n, n_items)."""
        from recbole.data.interaction import Interaction

        if self._full_sort:
            scores = self.model.full_sort_predict(inter).reshape(n, -1)
            return scores[:, self._rb_item_t].double().numpy()
        pairs = inter.repeat_interleave(self.n_items)
        pairs.update(Interaction({self.iid_field: self._rb_item_t.repeat(n)}))
        return self.model.predict(pairs).reshape(n, self.n_items).double().numpy()

    def _users(self, obs: Mapping[str, np.ndarray], required: bool) -> np.ndarray | None:
        """RecBole user ids of the observation's ``user_index``: int64 (N,), or None if absent and not required."""
        if "user_index" not in obs:
            if not required:
                return None
            raise ConfigError(
                f"{self.name} policy: the observation has no 'user_index' (keys: {sorted(obs)}). Fix: pass the"
                " environment's observation (MovieLensEnv, or Population.observe)."
            )
        users = np.asarray(obs["user_index"], dtype=np.int64).reshape(-1)
        bad = (users < 0) | (users >= len(self.user_ids))
        if bad.any():
            raise ConfigError(
                f"{self.name} policy: user_index {int(users[bad][0])} is outside [0, {len(self.user_ids)}); the"
                " model serves the sampled users of the split it was trained on. Fix: serve it observations of"
                " that split's environment."
            )
        rb = self._rb_user[users]
        if (rb < 0).any():
            uid = int(self.user_ids[users[rb < 0][0]])
            raise UnknownUserError(
                f"{self.name} policy: user {uid} is unknown to the RecBole model. Fix: train the model on the split"
                " this user belongs to."
            )
        return rb

    def _interaction(self, obs: Mapping[str, np.ndarray]) -> Any:
        import torch
        from recbole.data.interaction import Interaction

        if self.kind == "general":
            return Interaction({self.uid_field: torch.as_tensor(self._users(obs, required=True))})
        if "history_items" not in obs:
            raise ConfigError(
                f"{self.name} policy: a sequential model needs obs['history_items'] (keys: {sorted(obs)}). Fix: pass"
                f" the environment's observation with a history of {self.history_len} items (policy.history_len)."
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
        fields = {
            self.model.ITEM_SEQ: torch.as_tensor(seq),
            self.model.ITEM_SEQ_LEN: torch.as_tensor(lengths),
            # the target item RecBole's evaluation batches carry; GRU4RecCPR and SASRecCPR compute a loss against
            # it inside full_sort_predict (their scores do not depend on it): RecBole's padding id stands in
            self.iid_field: torch.zeros(len(seq), dtype=torch.int64),
        }
        users = self._users(obs, required=False)  # Caser, FPMC, HGN, HRM, NPE, SHAN, TransRec... read the user
        if users is not None:
            fields[self.uid_field] = torch.as_tensor(users)
        return Interaction(fields)

    # -------------------------------------------------------------------------------- save/load
    def save(self, out: str | os.PathLike[str]) -> Path:
        """Write the model directory (``model.pth`` + ``manifest.json``) atomically; returns its path."""
        import torch

        from recsim_personas._io import atomic_dir

        out = Path(out)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not has_manifest(out))):
            raise ArtifactError(
                f"{str(out)!r} exists and is not a saved RecBole policy; refusing to replace it. Fix: choose a new or"
                " empty directory."
            )
        with atomic_dir(out) as tmp:
            state = {"state_dict": self.model.state_dict(), "other_parameter": self.model.other_parameter()}
            torch.save(state, tmp / WEIGHTS)
            body = {
                "model": self.config.model,
                "kind": self.kind,
                "split_id": self.split_id,
                "config": self.config.to_dict(),
                "recbole_config": self.config.recbole_params("<split atomic files>", "<temporary>", False),
                "mapping_sha256": _mapping_hash(self.user_tokens, self.item_tokens),
                "train_seconds": self.train_seconds,
            }
            write_manifest(tmp, RECBOLE_POLICY, body, files=[WEIGHTS], libraries=("recbole", "torch", "scipy"))
        logger.info("saved %s to %s", self.name, out)
        return out

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], split: str | os.PathLike[str] | Split, *, slate_size: int = 10
    ) -> RecBolePolicy:
        """Load a model directory written by :meth:`save` for ``split`` (the split it was trained on).

        Raises:
            ArtifactError: not a model directory, a damaged manifest, files that do not match it, a model
                trained on another split, or an id mapping that differs from the one trained with.
        """
        import torch

        from recsim_personas.data import load_split
        from recsim_personas.recommenders.recbole_compat import import_recbole

        path = Path(path)
        manifest = read_model_manifest(path)
        split = load_split(split)
        check_input(
            path,
            RECBOLE_POLICY,
            "split",
            manifest["split_id"],
            split.split_id,
            f"pass the split it was trained on, or train {manifest['model']} again on the split at"
            f" {str(split.path)!r} (recsim-personas benchmark --policies recbole:{manifest['model']} ...)",
        )
        config = RecBoleConfig.from_dict(manifest["config"])
        api = import_recbole()
        with recbole_run(config) as tmp:
            built = build(api, split, config, tmp, progress=False)
            model = make_model(api, built, config)
        try:
            state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
            model.load_state_dict(state["state_dict"])
            model.load_other_parameter(state.get("other_parameter"))
        except (RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as exc:
            raise ArtifactError(
                f"model {str(path)!r}: {WEIGHTS} does not fit the {manifest['model']} model rebuilt from its manifest"
                f" ({type(exc).__name__}: {exc}). Fix: train the model again."
            ) from exc
        policy = cls(config, model, built.dataset, split, slate_size=slate_size)
        if _mapping_hash(policy.user_tokens, policy.item_tokens) != manifest["mapping_sha256"]:
            raise ArtifactError(
                f"model {str(path)!r}: RecBole's id mapping rebuilt from the split differs from the one the model was"
                " trained with (another RecBole version?). Fix: train the model again."
            )
        return policy


def read_model_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a saved RecBole policy, checked against its files; ``config`` is normalised to this
    version's :class:`RecBoleConfig` (every field, as :meth:`RecBoleConfig.to_dict` gives it).

    Raises:
        ArtifactError: missing, damaged or foreign manifest, a configuration this version cannot read, or a
            ``model.pth`` that is missing or does not match.
    """
    manifest = read_manifest(
        path, RECBOLE_POLICY, required=("model", "kind", "split_id", "config", "mapping_sha256", "files")
    )
    verify_files(path, manifest, RECBOLE_POLICY, fix="train the model again")
    try:
        if not isinstance(manifest["config"], Mapping):
            raise ConfigError(f"expected a mapping, got {manifest['config']!r}.")
        manifest["config"] = RecBoleConfig.from_dict(manifest["config"]).to_dict()
    except ConfigError as exc:
        raise ArtifactError(
            f"{str(Path(path) / 'manifest.json')!r}: its RecBole configuration is not readable here ({exc}) Fix:"
            " train the model again with this version."
        ) from exc
    return manifest
