"""Persona agents at inference: every persona adapter in one ``PeftModel``, mixed batches in one pass.

:class:`PersonaAgents` implements the :class:`~recsim_personas.agents.rater.Rater` contract, so the
environment and the fidelity evaluation take it unchanged. A request ``(user, item)`` travels:

1. the user's adapter from the artifact's cluster map (``persona_<c>`` or ``single``);
2. the user's ``memories`` most similar train memories from the :class:`MemoryIndex` (never the item's own);
3. the prompt from :class:`~recsim_personas.agents.prompt.PromptBuilder` (the user's persona part and each
   movie's description are tokenized once and cached);
4. one forward pass for a batch of prompts of *any* mix of personas, routed row by row with PEFT's
   ``adapter_names`` (eval mode) — batches are formed by prompt length (at most ``batch_size`` prompts and
   2,048 padded tokens: :func:`~recsim_personas.agents.inference.batched_logits`), not by persona; prompts of
   equal length are ordered by adapter, and a pass that holds a single adapter (every pass of a one-request
   call) runs PEFT's plain forward with that adapter active instead — the same logits, without the mixed
   route's per-adapter gather and scatter at every LoRA layer;
5. logits (n, 5) + (anchored) the prior's log-probabilities → softmax → float64 (n, 5).

:meth:`PersonaAgents.prompt_only` is the same road without adapters (the paper's prompted baseline, causal
LMs). :func:`measure_urr` measures the unusable-response rate the paper's way — free greedy generation,
parsed with :func:`~recsim_personas.agents.rating_tokens.parse_rating` — whereas the token-scoring agents
answer with a distribution over the five rating tokens and cannot give an unusable answer.

Precision. The weights run in ``dtype`` (:mod:`~recsim_personas.agents.precision`: ``"auto"`` by default,
``"float32"`` or ``"bfloat16"``), converted once, after loading and the fingerprint check; logits leave the
model as float32, anchoring and the softmax run in float64. ``"auto"`` is measured, not read from CPU flags
(:meth:`PersonaAgents.measure_dtype`): the agents' own forward passes over up to
:data:`PRECISION_PROBE_REQUESTS` test requests of the split, in float32 and in bfloat16; bfloat16 only when
faster and its expected ratings within :data:`~recsim_personas.agents.precision.AUTO_TOLERANCE` of float32's.
The verdict is cached per backbone and machine, so later loads reuse it without timing.

Loading refuses, with a message naming the fix (:mod:`~recsim_personas.agents.agent_artifact`): an unfinished
artifact, an artifact from another split or persona set, a base model other than the one the adapters were
trained on, a missing or altered adapter.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsim_personas.agents.adapters import base_fingerprint
from recsim_personas.agents.agent_artifact import (
    check_agents_inputs,
    read_agents_manifest,
    verify_agents,
)
from recsim_personas.agents.backbone_config import BackboneConfig, torch_dtype
from recsim_personas.agents.backbones import build_backbone
from recsim_personas.agents.inference import batched_logits
from recsim_personas.agents.precision import (
    AUTO_TOLERANCE,
    INFERENCE_DTYPES,
    PrecisionVerdict,
    measure_precision,
    resolve_inference_dtype,
)
from recsim_personas.agents.prior import AnchorPrior
from recsim_personas.agents.prompt import PromptBuilder, PromptConfig
from recsim_personas.agents.rater import N_LEVELS, as_requests
from recsim_personas.agents.rating_tokens import parse_rating
from recsim_personas.agents.train_config import ANCHORS, prompt_config
from recsim_personas.artifacts import has_manifest, manifest_digest
from recsim_personas.errors import ArtifactError, ConfigError, UnknownUserError, unknown_choice
from recsim_personas.personas.memory import MemoryHit

logger = logging.getLogger(__name__)

OBSERVED_REASON = "I watched this movie and rated it {rating} out of 5."
"""The reason of a memory added by :meth:`AgentSession.observe` (a watch in the simulation)."""

Observed = dict[int, list[tuple[int, int, np.ndarray]]]
"""A session's memories of watched movies: ``{user_id: [(item_id, rating, key float32 (d,)), ...]}``."""

PRECISION_PROBE_REQUESTS = 8
"""Test requests of the split that ``dtype="auto"`` runs in both precisions (:meth:`PersonaAgents.measure_dtype`):
one run in each to compare the expected ratings, then (within the tolerance) a warm-up and three timed runs in
each, the median kept."""
PRECISION_WARMUP, PRECISION_REPEATS = 1, 3

_LEVELS = np.arange(1, N_LEVELS + 1, dtype=np.float64)


class PersonaAgents:
    """SLM persona agents as a :class:`~recsim_personas.agents.rater.Rater`.

    Build with :meth:`load` (trained adapters) or :meth:`prompt_only` (no fine-tuning).

    Attributes:
        name: label in reports (e.g. ``"encoder persona-LoRA mem1 anchored"``).
        kind: ``"causal"`` or ``"encoder"``.
        variant: ``"persona"``, ``"single"`` or ``"prompt"``.
        memories: retrieved memories per prompt.
        anchored: whether the prior's log-probabilities are added to the logits.
        model: the ``PeftModel`` holding every adapter (or the bare backbone for ``prompt``), eval mode.
        builder: the prompt builder (caches persona parts and movie descriptions).
        dtype: precision of the weights, ``"float32"`` or ``"bfloat16"`` (see :data:`INFERENCE_DTYPES`).
        precision: the measured verdict behind ``dtype`` when it was chosen by ``"auto"``
            (:class:`~recsim_personas.agents.precision.PrecisionVerdict`: timings, output difference, reason);
            ``None`` for an explicit ``dtype``.
        batch_size: at most this many prompts per forward pass (see
            :func:`~recsim_personas.agents.inference.batched_logits`, which also caps a pass at 2,048 padded tokens).
        single_adapter_passes: a pass whose prompts all use one adapter runs PEFT's plain forward with that
            adapter active rather than the mixed-batch route (the same logits, faster; ``batched_logits``);
            ``False`` routes every pass with ``adapter_names`` (the earlier behaviour, for comparisons).
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        backbone: Any,
        builder: PromptBuilder,
        cluster_map: dict[int, str] | None,
        index: Any,
        memories: int,
        prior: AnchorPrior | None,
        variant: str,
        batch_size: int = 32,
        name: str | None = None,
        dtype: str | None = None,
        single_adapter_passes: bool = True,
    ) -> None:
        """``dtype``: convert the weights to it; ``None`` keeps them as they are. ``"auto"`` here has no requests
        to measure with and means float32 (:func:`resolve_inference_dtype`); :meth:`load` and
        :meth:`prompt_only` measure (:meth:`measure_dtype`)."""
        if memories < 0:
            raise ConfigError(f"memories must be >= 0, got {memories!r}.")
        if memories > 0 and index is None:
            raise ConfigError(
                f"memories={memories} needs the memory index. Fix: build it with `recsim-personas personas index`,"
                " or use memories=0."
            )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}.")
        self.model = model.eval()
        self.backbone = backbone
        self.builder = builder
        self.cluster_map = cluster_map
        self.index = index
        self.memories = int(memories)
        self.prior = prior
        self.variant = variant
        self.batch_size = int(batch_size)
        self.single_adapter_passes = bool(single_adapter_passes)
        self.kind = "causal" if hasattr(backbone, "rating_tokens") else "encoder"
        if dtype is not None:
            # once, after loading (and the fingerprint check): base weights, every adapter and head copy
            self.model.to(torch_dtype(resolve_inference_dtype(dtype, self.kind)))
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.precision: PrecisionVerdict | None = None
        self.anchored = prior is not None
        self.name = name or self.default_name()

    def default_name(self) -> str:
        """The report label of these agents as they are now, e.g. ``"encoder persona-LoRA mem1 anchored"``."""
        label = {"persona": "persona-LoRA", "single": "single-LoRA", "prompt": "prompt-only"}[self.variant]
        return f"{self.kind} {label} mem{self.memories} {anchor_label(self.prior)}"

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        split: Any,
        pset: Any,
        index: Any = None,
        *,
        memories: int | None = None,
        backbone: BackboneConfig | None = None,
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        dtype: str = "auto",
    ) -> PersonaAgents:
        """Load a trained artifact (see :mod:`recsim_personas.agents.agent_artifact`) with all its adapters.

        Args:
            path: the artifact directory written by :func:`~recsim_personas.agents.training.train_agents`.
            split: the split it was trained on (checked by ``split_id``).
            pset: the persona set it was trained on (checked by its manifest's sha256).
            index: the memory index (needed when ``memories > 0``).
            memories: memories per prompt; ``None`` = as trained. 0 gives the no-memory ablation.
            backbone: if given, must equal the base model the adapters were trained on.
            batch_size: at most this many prompts per forward pass.
            cache_dir: model cache root.
            name: report label.
            dtype: inference precision of the weights, ``"auto"`` (measured on this machine with these agents:
                bfloat16 only when faster and within 0.01 of float32's expected ratings, see
                :meth:`measure_dtype`; cached per backbone and machine), ``"float32"`` or ``"bfloat16"``.
                Applied after the artifact checks; logits stay float32, probabilities float64.

        Raises:
            ArtifactError: unfinished artifact, other split/personas/base model, missing or altered adapter.
            ConfigError: an unknown ``dtype``.
        """
        from peft import PeftModel

        if dtype not in INFERENCE_DTYPES:
            raise unknown_choice("inference dtype", str(dtype), INFERENCE_DTYPES)
        path = Path(path)
        manifest = read_agents_manifest(path)
        check_agents_inputs(manifest, path, split, pset)
        trained = BackboneConfig.from_dict(manifest["backbone"])
        if backbone is not None and backbone != trained:
            raise ArtifactError(
                f"agents {str(path)!r} were trained on base model {trained.to_dict()!r}, but {backbone.to_dict()!r}"
                " was requested. Fix: drop --model / use the base model of the manifest, or retrain the adapters"
                " on the new base model."
            )
        cmap = verify_agents(path, manifest)
        needed = sorted(set(cmap.values()))
        prior = AnchorPrior.load(path / "prior") if manifest["prior"] is not None else None

        base, tokenizer = build_backbone(trained, cache_dir=cache_dir)
        fp = base_fingerprint(base)
        if fp != manifest["base_fingerprint"]:
            raise ArtifactError(
                f"agents {str(path)!r}: the base model loaded for {trained.model or 'the default'!r} is not the one"
                f" the adapters were trained on (weights fingerprint {fp[:12]}… ≠ {manifest['base_fingerprint'][:12]}…"
                "). Fix: install the same model version, or retrain the adapters."
            )
        model = PeftModel.from_pretrained(base, str(path / "adapters" / needed[0]), adapter_name=needed[0])
        for n in needed[1:]:
            model.load_adapter(str(path / "adapters" / n), adapter_name=n)
        model.eval()
        pcfg = PromptConfig(**manifest["prompt"])
        builder = PromptBuilder(tokenizer, pset, split.catalog().describe, pcfg)
        k = int(manifest["train_config"]["memories"] if memories is None else memories)
        variant = str(manifest["train_config"]["variant"])
        agents = cls(
            model=model,
            backbone=base,
            builder=builder,
            cluster_map=cmap,
            index=index,
            memories=k,
            prior=prior,
            variant=variant,
            batch_size=batch_size,
            name=name,
            dtype=None if dtype == "auto" else dtype,
        )
        if dtype == "auto":
            users, items = precision_requests(split, cmap)
            agents.measure_dtype(users, items, key=precision_key(variant, trained, fp), cache_dir=cache_dir)
        return agents

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        split: Any,
        *,
        personas: str | os.PathLike[str] | None = None,
        memories: int | None = None,
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        dtype: str = "auto",
    ) -> PersonaAgents:
        """:meth:`load` with the persona set and memory index the agents were trained on.

        They are read from ``personas`` or, by default, from the directory recorded in the manifest
        (``personas_path``); the memory index from its ``memory/`` sub-directory when it exists. This is all
        an environment needs to turn ``agents:DIR`` into a rater. ``dtype`` as in :meth:`load`.

        Raises:
            ArtifactError: no personas directory recorded or found, or one that does not match the agents.
        """
        from recsim_personas.personas.memory import MemoryIndex
        from recsim_personas.personas.store import load_persona_set

        manifest = read_agents_manifest(path)
        check_agents_inputs(manifest, path, split)
        directory = personas if personas is not None else manifest.get("personas_path")
        if not directory or not Path(directory).is_dir():
            raise ArtifactError(
                f"agents {str(path)!r}: the persona set they were trained on ({directory!r}) is not there. Fix:"
                " pass personas=DIR (CLI: --personas DIR)."
            )
        pset = load_persona_set(directory, split_id=split.split_id)
        index = None
        if has_manifest(Path(directory) / "memory"):
            index = MemoryIndex.load(Path(directory) / "memory", personas_manifest=manifest_digest(directory))
        return cls.load(
            path, split, pset, index, memories=memories, batch_size=batch_size, cache_dir=cache_dir, dtype=dtype
        )

    @classmethod
    def prompt_only(
        cls,
        split: Any,
        pset: Any,
        index: Any = None,
        *,
        backbone: BackboneConfig | None = None,
        memories: int = 1,
        anchor: str = "none",
        template: str = "paper",
        batch_size: int = 16,
        cache_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        dtype: str = "auto",
    ) -> PersonaAgents:
        """The prompted baseline: the base causal LM, no adapter, the rating read from the rating tokens.

        ``anchor="bias"`` (or ``"mf"``, ``"knn"``, ``"blend"``) adds that classical prior, fitted (deterministically)
        on the split's history.
        ``dtype`` as in :meth:`load` (``"auto"``: measured; a causal LM's expected ratings move too much in
        bfloat16 for the tolerance, so in practice float32).
        """
        backbone = backbone or BackboneConfig(kind="causal")
        if backbone.kind != "causal":
            raise ConfigError("the prompt-only baseline needs a causal LM (an encoder's rating head is untrained).")
        if anchor not in ANCHORS:
            raise unknown_choice("anchor", str(anchor), ANCHORS)
        if dtype not in INFERENCE_DTYPES:
            raise unknown_choice("inference dtype", str(dtype), INFERENCE_DTYPES)
        pset.check_split(split.split_id)
        base, tokenizer = build_backbone(backbone, cache_dir=cache_dir)
        pcfg = prompt_config("causal", template, int(backbone.max_length))  # type: ignore[arg-type]
        builder = PromptBuilder(tokenizer, pset, split.catalog().describe, pcfg)
        prior = AnchorPrior.fit(split.history(), anchor) if anchor != "none" else None
        agents = cls(
            model=base,
            backbone=base,
            builder=builder,
            cluster_map=None,
            index=index,
            memories=memories,
            prior=prior,
            variant="prompt",
            batch_size=batch_size,
            name=name,
            dtype=None if dtype == "auto" else dtype,
        )
        if dtype == "auto":
            users, items = precision_requests(split, None)
            key = precision_key("prompt", backbone, base_fingerprint(base))
            agents.measure_dtype(users, items, key=key, cache_dir=cache_dir)
        return agents

    # -- precision ------------------------------------------------------------------------------
    def measure_dtype(
        self,
        users: np.ndarray,
        items: np.ndarray,
        *,
        key: str,
        cache_dir: str | os.PathLike[str] | None = None,
        refresh: bool = False,
    ) -> PrecisionVerdict | None:
        """Choose float32 or bfloat16 by running these agents on a batch of requests, and convert the weights.

        The probe of :func:`~recsim_personas.agents.precision.measure_precision`: the requests' prompts (built
        once), through :func:`~recsim_personas.agents.inference.batched_logits` as :meth:`logits` runs them,
        anchored as the agents are, to expected ratings float64 (n,). For bfloat16 the weights are converted in
        place after a copy of the current ones is kept; going back to the original precision restores that
        copy exactly (never widens bfloat16 weights). Afterwards the weights are in the chosen precision and
        :attr:`precision` holds the verdict (a cached one when this backbone was measured on this machine).

        Args:
            users: int (n,) user ids of the probe batch (each with a persona / adapter).
            items: int (n,) item ids.
            key: the workload's name in the cache (:func:`precision_key`).
            cache_dir: model cache root (the verdict goes to its ``precision/``; see
                :func:`~recsim_personas.agents.precision.precision_cache_dir`).
            refresh: measure even when a verdict is cached.

        Returns:
            The verdict, or ``None`` for an empty batch (nothing to measure: float32).
        """
        u, i = as_requests(users, items)
        model = self.model
        original = next(model.parameters()).dtype
        if u.size == 0:
            logger.info("%s: no requests to measure the precision with; float32", self.name)
            model.to(torch.float32)
            self.dtype, self.precision = "float32", None
            return None
        rows, names = self.prompts(u, i)
        prior = self.prior.log_probs(u, i) if self.prior is not None else 0.0
        saved: dict[str, torch.Tensor] = {}

        def convert(dtype: str, *, keep: bool = False) -> None:
            target = torch_dtype(dtype)
            if next(model.parameters()).dtype == target:
                return
            if keep and not saved:  # the original weights, to come back to them exactly
                saved.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            model.to(target)
            if target == original and saved:
                model.load_state_dict(saved)

        def probe(dtype: str) -> np.ndarray:
            convert(dtype, keep=True)
            raw = batched_logits(
                model, self.backbone, rows, names, self.batch_size, single_adapter_passes=self.single_adapter_passes
            )
            probs = torch.softmax(torch.as_tensor(raw.double().numpy() + prior), dim=-1).numpy()
            return probs @ _LEVELS

        try:
            verdict = measure_precision(
                probe,
                key=key,
                tolerance=AUTO_TOLERANCE,
                cache_dir=cache_dir,
                warmup=PRECISION_WARMUP,
                repeats=PRECISION_REPEATS,
                refresh=refresh,
            )
            convert(verdict.dtype)
        except BaseException:
            convert(str(original).removeprefix("torch."))
            raise
        finally:
            saved.clear()
        self.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.precision = verdict
        logger.info("%s: weights in %s (dtype='auto': %s)", self.name, self.dtype, verdict.reason)
        return verdict

    # -- the Rater contract ---------------------------------------------------------------------
    def adapter_of(self, user_id: int) -> str | None:
        """The adapter serving ``user_id`` (``None`` for the prompt-only baseline).

        Raises:
            UnknownUserError: the user has no persona in the artifact's cluster map.
        """
        if self.cluster_map is None:
            self.builder.personas.persona(user_id)  # raises UnknownUserError for a user without persona
            return None
        try:
            return self.cluster_map[int(user_id)]
        except KeyError:
            some = ", ".join(str(u) for u in sorted(self.cluster_map)[:5])
            raise UnknownUserError(
                f"user_id {int(user_id)} has no persona adapter ({len(self.cluster_map)} users have one, e.g."
                f" {some}). Fix: train agents on a split and persona set that include this user."
            ) from None

    # -- memories of the simulation -------------------------------------------------------------
    def session(self) -> AgentSession:
        """A fresh :class:`AgentSession` for one simulation (the :class:`~recsim_personas.agents.rater.StatefulRater`
        contract): the memories its users form while watching live there, not on the shared agents."""
        return AgentSession(self)

    def retrieve(self, users: np.ndarray, items: np.ndarray, observed: Observed | None = None) -> list[list[MemoryHit]]:
        """The ``memories`` most similar memories per request, best first: train memories and, with ``observed``
        (a session's memories of watched movies), those too — never the requested movie's own."""
        if self.memories == 0:
            return [[] for _ in range(len(users))]
        hits = self.index.retrieve_batch(users, items, self.memories)
        if not observed:
            return hits
        queries = self.index.item_vector(items)
        for q, (u, i) in enumerate(zip(users, items, strict=True)):
            seen = observed.get(int(u))
            if not seen:
                continue
            keys = np.stack([k for _, _, k in seen])
            scores = keys @ queries[q]
            extra = [
                MemoryHit(item, rating, OBSERVED_REASON.format(rating=rating), float(score))
                for (item, rating, _), score in zip(seen, scores, strict=True)
                if item != int(i)
            ]
            hits[q] = sorted([*hits[q], *extra], key=lambda h: -h.score)[: self.memories]
        return hits

    def prompts(
        self, users: np.ndarray, items: np.ndarray, observed: Observed | None = None
    ) -> tuple[list[list[int]], list[str] | None]:
        """Token-id prompts and per-row adapter names of a batch of requests (``observed``: see :meth:`retrieve`)."""
        names = [self.adapter_of(int(u)) for u in users]
        hits = self.retrieve(users, items, observed)
        rows = [self.builder.build(int(u), int(i), h).ids for u, i, h in zip(users, items, hits, strict=True)]
        return rows, (None if self.cluster_map is None else [str(n) for n in names])

    def logits(
        self,
        users: np.ndarray,
        items: np.ndarray,
        *,
        anchored: bool | None = None,
        observed: Observed | None = None,
    ) -> np.ndarray:
        """Rating logits, float64 (n, 5): the backbone's, plus the prior's log-probs when ``anchored``.

        ``anchored=None`` follows the artifact; ``False`` gives the raw backbone + adapter logits. ``observed``:
        a session's memories of watched movies (see :meth:`retrieve`).
        """
        u, i = as_requests(users, items)
        if u.size == 0:
            return np.zeros((0, N_LEVELS))
        rows, names = self.prompts(u, i, observed)
        raw = batched_logits(
            self.model, self.backbone, rows, names, self.batch_size, single_adapter_passes=self.single_adapter_passes
        )
        raw = raw.double().numpy()
        use = self.anchored if anchored is None else anchored
        if use:
            if self.prior is None:
                raise ConfigError(f"{self.name} has no anchoring prior.")
            raw = raw + self.prior.log_probs(u, i)
        return raw

    def predict(self, users: np.ndarray, items: np.ndarray, *, observed: Observed | None = None) -> np.ndarray:
        """Rating distributions, float64 (n, 5), rows summing to 1 (the Rater contract); ``observed``: a session's
        memories of watched movies (see :meth:`retrieve`; :class:`AgentSession` passes its own)."""
        logits = torch.as_tensor(self.logits(users, items, observed=observed))
        return torch.softmax(logits, dim=-1).numpy()

    def __repr__(self) -> str:
        n = len(set(self.cluster_map.values())) if self.cluster_map else 0
        return f"PersonaAgents({self.name!r}, adapters={n}, memories={self.memories}, dtype={self.dtype!r})"


class AgentSession:
    """One simulation's persona agents: the shared :class:`PersonaAgents` plus the memories its users formed.

    :meth:`PersonaAgents.session` hands one to each simulation (the
    :class:`~recsim_personas.agents.rater.RaterSession` contract). A watch reported to :meth:`observe` becomes a
    memory "I watched this movie and rated it r out of 5." keyed by the movie's description embedding, which
    competes with the user's train memories in this session's later retrievals; the agents themselves and the
    memory index on disk never change, so two simulations on one set of agents stay apart.

    Attributes:
        agents: the shared agents.
        observed: ``{user_id: [(item_id, rating, key float32 (d,)), ...]}`` in the order watched.
    """

    def __init__(self, agents: PersonaAgents) -> None:
        self.agents = agents
        self.observed: Observed = {}

    def observe(self, user_ids: np.ndarray, item_ids: np.ndarray, ratings: np.ndarray) -> None:
        """Remember movies the users watched and rated (ids int (n,), ratings int (n,) in 1..5).

        Nothing is kept when the agents retrieve no memories (``memories == 0`` or no index).
        """
        agents = self.agents
        if agents.memories == 0 or agents.index is None:
            return
        users, items = as_requests(user_ids, item_ids)
        keys = agents.index.item_vector(items)
        for u, i, r, key in zip(users, items, np.asarray(ratings, dtype=np.int64), keys, strict=True):
            self.observed.setdefault(int(u), []).append((int(i), int(r), key))

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Rating distributions, float64 (n, 5), retrieving this session's memories too."""
        return self.agents.predict(users, items, observed=self.observed)


def precision_requests(
    split: Any, cluster_map: dict[int, str] | None, n: int = PRECISION_PROBE_REQUESTS
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` test requests of ``split`` spread evenly over its test part (users with an adapter in
    ``cluster_map``, every user when ``None``): the batch ``dtype="auto"`` is measured on.

    Returns:
        ``(users int64 (m,), items int64 (m,))``, ``m <= n`` (0 for a split without test ratings).
    """
    test = split.test
    users = test.user_id.to_numpy(dtype=np.int64)
    items = test.item_id.to_numpy(dtype=np.int64)
    if cluster_map is not None:
        keep = np.isin(users, np.fromiter(cluster_map, dtype=np.int64, count=len(cluster_map)))
        users, items = users[keep], items[keep]
    if users.size > n:
        rows = np.unique(np.linspace(0, users.size - 1, n).round().astype(np.int64))
        users, items = users[rows], items[rows]
    return users, items


def precision_key(variant: str, backbone: BackboneConfig, fingerprint: str) -> str:
    """The workload name of persona agents in the precision cache: variant, kind, model, prompt budget and base
    weights (the adapters are not part of it: the backbone decides the speed, and its rounding the difference)."""
    model = backbone.model or "default"
    return f"persona-agents:{variant}:{backbone.kind}:{model}:max_length={backbone.max_length}:base={fingerprint[:16]}"


def anchor_label(prior: AnchorPrior | None) -> str:
    """``"anchored"`` (bias prior), ``"anchored-mf"`` or ``"unanchored"``: the anchoring part of a report label."""
    if prior is None:
        return "unanchored"
    return "anchored" if prior.name == "bias" else f"anchored-{prior.name}"


def measure_urr(
    agents: PersonaAgents, users: np.ndarray, items: np.ndarray, *, max_new_tokens: int = 4, batch_size: int = 8
) -> tuple[float, list[str]]:
    """Unusable-response rate of free greedy generation, the paper's way (causal agents only).

    The same prompts as :meth:`PersonaAgents.predict`, without the answer lead; an answer is unusable when
    :func:`~recsim_personas.agents.rating_tokens.parse_rating` finds no rating 1..5 at its start.

    Returns:
        ``(share of unusable answers, the answers)``.
    """
    if agents.kind != "causal":
        raise ConfigError("free generation needs a causal LM; an encoder agent cannot give an unusable answer.")
    u, i = as_requests(users, items)
    rows, names = agents.prompts(u, i)
    backbone = agents.backbone
    answers: list[str] = []
    for lo in range(0, len(rows), batch_size):
        batch = backbone.encode(rows[lo : lo + batch_size], answer_lead=False)
        if names is None:
            new = backbone.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens)
        else:
            # PeftModel.generate calls the backbone's generate (new tokens only), routing rows per adapter
            new = agents.model.generate(
                **batch, adapter_names=names[lo : lo + batch_size], max_new_tokens=max_new_tokens
            )
        answers += list(backbone.tokenizer.batch_decode(new, skip_special_tokens=True))
    bad = sum(parse_rating(a) is None for a in answers)
    return (bad / len(answers) if answers else 0.0), answers


__all__ = [
    "PRECISION_PROBE_REQUESTS",
    "AgentSession",
    "PersonaAgents",
    "anchor_label",
    "measure_urr",
    "precision_key",
    "precision_requests",
]
