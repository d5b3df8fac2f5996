"""A tiny world for persona-agent tests: a synthetic split, offline personas, 2 clusters, a memory index.

Memories are indexed with a deterministic bag-of-words embedder (fast); the base model is the real
MiniLM-L6 (offline) with small LoRA ranks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datakit import synthetic_ratings, write_ml100k

from recsim_personas._io import sha256_file
from recsim_personas.agents.backbone_config import BackboneConfig
from recsim_personas.agents.train_config import LoraTrainConfig
from recsim_personas.agents.training import train_agents
from recsim_personas.data import ProtocolConfig, load_movielens, make_split
from recsim_personas.personas.clustering import ClusterConfig, cluster_personas, save_clusters
from recsim_personas.personas.distill import distill_personas
from recsim_personas.personas.embedders import l2_normalise
from recsim_personas.personas.memory import MemoryIndex
from recsim_personas.personas.stats_distiller import StatsDistiller

BACKBONE = BackboneConfig(kind="encoder", max_length=128)
"""The real MiniLM with a short prompt budget."""
CONFIG = LoraTrainConfig(rank=2, alpha=4, max_train=16, max_valid=8, batch_size=8, lr=5e-3)
"""Tiny persona-LoRA training (rank 2, 16 examples)."""


class HashEmbedder:
    """Deterministic bag-of-words vectors (similar texts share words, so they get similar vectors)."""

    model_id = "test:hash-bow"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def embed(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return l2_normalise(out + 1e-6)


@dataclass
class World:
    split: Any
    pset: Any
    clusters: Any
    index: Any
    root: Path


def make_world(root: Path, *, n_users: int = 8, k: int = 2) -> World:
    """Split (``n_users`` users with 10..24 ratings), personas, ``k`` clusters and the memory index."""
    per_user = [10 + (u * 5) % 15 for u in range(16)]
    data = root / "data"
    write_ml100k(data, synthetic_ratings(16, 40, per_user, seed=3), n_items=40, n_users=16)
    ml = load_movielens("ml-100k", data, download=False)
    split = make_split(ml, ProtocolConfig(n_users=n_users, min_ratings=10, max_ratings=40)).save(root / "split")
    pset, _ = distill_personas(split, root / "personas", StatsDistiller(), progress=False)
    emb = HashEmbedder()
    clusters = cluster_personas(pset, emb, ClusterConfig(k=k))
    save_clusters(clusters, pset.path / "clusters", plot=False)
    index = MemoryIndex.build(pset, split.catalog(), emb)
    index.save(pset.path / "memory", personas_manifest=sha256_file(pset.path / "manifest.json"))
    return World(split, pset, clusters, index, root)


def train_tiny(world: World, name: str = "agents-persona") -> Path:
    """Train persona agents with :data:`BACKBONE` / :data:`CONFIG` into ``world.root / name``."""
    out = world.root / name
    train_agents(world.split, world.pset, world.clusters, world.index, BACKBONE, CONFIG, out, progress=False)
    return out


def perturbed_agents(world: World, trained: Path, dtype: str, *, seed: int, batch_size: int = 4) -> Any:
    """The tiny agents loaded in ``dtype``, their LoRA B matrices and rating heads shifted by seeded noise
    (sd 0.05) so that the adapters clearly differ and a routing mistake shows in the logits."""
    import torch

    from recsim_personas.agents.persona_agents import PersonaAgents

    agents = PersonaAgents.load(trained, world.split, world.pset, world.index, batch_size=batch_size, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in agents.model.named_parameters():
            if ".lora_B." in name or ".modules_to_save." in name:
                p.add_((torch.randn(p.shape, generator=gen) * 0.05).to(p.dtype))
    return agents


def requests(world: World, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Test requests of users of both personas, interleaved (u0 of persona 0, u1 of persona 1, ...)."""
    test = world.split.test
    by_cluster: dict[int, list[int]] = {}
    for row in range(len(test)):
        by_cluster.setdefault(world.clusters.labels[int(test.user_id.iloc[row])], []).append(row)
    rows = [r for pair in zip(*by_cluster.values(), strict=False) for r in pair][:n]
    return test.user_id.to_numpy()[rows], test.item_id.to_numpy()[rows]
