from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from fake_openai import FakeOpenAI

from recsim_personas.data import ProtocolConfig, load_movielens, make_split
from recsim_personas.errors import ArtifactError, UnknownUserError
from recsim_personas.personas.clustering import (
    ClusterConfig,
    cluster_embeddings,
    cluster_personas,
    knee,
    load_clusters,
    save_clusters,
)
from recsim_personas.personas.distill import distill_personas
from recsim_personas.personas.embedders import CachedEmbedder, OpenAIEmbedder, l2_normalise
from recsim_personas.personas.memory import MemoryIndex
from recsim_personas.personas.stats_distiller import StatsDistiller


class HashEmbedder:
    """Deterministic bag-of-words vectors: similar texts share words, so they get similar vectors."""

    model_id = "test:hash-bow"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, texts):
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return l2_normalise(out + 1e-6)


@pytest.fixture
def pset(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    split = make_split(ml, ProtocolConfig(n_users=10, min_ratings=10, max_ratings=40)).save(tmp_path / "split")
    p, _ = distill_personas(split, tmp_path / "p", StatsDistiller())
    return split, p


def test_cache_embeds_nothing_twice(tmp_path):
    inner = HashEmbedder()
    emb = CachedEmbedder(inner, tmp_path / "cache.sqlite")
    a = emb.embed(["a b", "c d", "a b"])
    assert inner.calls == 2  # the duplicate text is embedded once
    again = CachedEmbedder(HashEmbedder(), tmp_path / "cache.sqlite")
    b = again.embed(["c d", "a b"])
    assert again.inner.calls == 0 and again.hits == 2
    np.testing.assert_array_equal(a[[1, 0]], b)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-5)


def test_openai_embedder_against_a_local_server(tmp_path):
    with FakeOpenAI(models=("emb",)) as server:
        emb = CachedEmbedder(OpenAIEmbedder("emb", base_url=server.url, batch_size=3), tmp_path / "c.sqlite")
        v = emb.embed([f"text {i}" for i in range(7)])
        assert v.shape == (7, 16) and server.embedding_requests == 3
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
        emb.embed([f"text {i}" for i in range(7)])
        assert server.embedding_requests == 3  # all cached


def test_knee_rule():
    assert knee([1, 2, 3, 4, 5, 6], [100, 30, 20, 15, 12, 10]) == 2
    assert knee([2, 3, 4, 5, 6, 7], [100, 95, 90, 40, 35, 30]) == 5
    assert knee([2, 3, 4], [10, 10, 10]) == 2  # flat: smallest K


def test_kmeans_finds_planted_clusters_and_the_elbow():
    rng = np.random.default_rng(0)
    centers = l2_normalise(rng.normal(size=(4, 16)))
    x = l2_normalise(np.repeat(centers, 25, axis=0) + 0.05 * rng.normal(size=(100, 16)))
    labels, curves = cluster_embeddings(x, ClusterConfig(k_max=8))
    assert curves["k"] == 4
    assert len(set(zip(labels, np.repeat(np.arange(4), 25), strict=True))) == 4  # a perfect partition
    assert max(s for s in curves["silhouettes"] if s is not None) == curves["silhouettes"][curves["ks"].index(4)]


def test_cluster_personas_report_and_staleness(pset, tmp_path):
    split, p = pset
    result = cluster_personas(p, HashEmbedder(), ClusterConfig(k_max=5))
    assert sum(result.sizes) == 10 and set(result.labels) == set(split.user_ids.tolist())
    paths = save_clusters(result, p.path / "clusters")
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    loaded = load_clusters(p.path / "clusters", p)
    assert loaded.labels == result.labels and loaded.k == result.k
    fixed = cluster_personas(p, HashEmbedder(), ClusterConfig(k=3))
    assert fixed.k == 3 and fixed.chosen_by.startswith("fixed")
    kept = tmp_path / "old-clusters.json"
    kept.write_bytes(paths["json"].read_bytes())
    fresh, _ = distill_personas(split, p.path, StatsDistiller(), user_ids=split.user_ids[:5].tolist(), overwrite=True)
    assert not (p.path / "clusters").exists()  # re-distilling drops the stale clustering
    with pytest.raises(ArtifactError, match="another version of the personas"):
        load_clusters(kept, fresh)


def test_retrieval_never_returns_the_target_item(pset, tmp_path):
    split, p = pset
    index = MemoryIndex.build(p, split.catalog(), HashEmbedder())
    mem = p.memories
    # ask, for every memory, for all of the user's memories about that same item
    users, items = mem["user_id"].to_numpy(), mem["item_id"].to_numpy()
    n_per_user = mem.groupby("user_id").size()
    hits = index.retrieve_batch(users, items, k=int(n_per_user.max()))
    for u, i, h in zip(users, items, hits, strict=True):
        assert all(x.item_id != i for x in h), f"leak: user {u} got its own memory of item {i}"
        assert len(h) == n_per_user[u] - 1  # everything else is reachable
        own = set(mem.loc[mem["user_id"] == u, "item_id"])
        assert {x.item_id for x in h} <= own  # only the user's own memories
        scores = [x.score for x in h]
        assert scores == sorted(scores, reverse=True)


def test_the_most_similar_memory_is_found_and_test_items_are_not_in_the_index(pset):
    split, p = pset
    index = MemoryIndex.build(p, split.catalog(), HashEmbedder())
    assert set(zip(index.memories.user_id, index.memories.item_id, strict=True)).isdisjoint(
        zip(split.test.user_id, split.test.item_id, strict=True)
    )
    # a query for an item identical in description to a memorised one retrieves that memory first
    uid = int(p.memories["user_id"].iloc[0])
    mine = p.memories[p.memories["user_id"] == uid]
    target = int(mine["item_id"].iloc[0])
    best = index.retrieve(uid, target, k=1)
    assert len(best) == 1 and best[0].item_id != target
    other = split.test[split.test.user_id == uid].item_id.iloc[0]
    assert index.retrieve(uid, other, k=2)
    with pytest.raises(UnknownUserError):
        index.retrieve(-5, target)


def test_memory_index_roundtrip_and_add(pset, tmp_path):
    split, p = pset
    emb = HashEmbedder()
    index = MemoryIndex.build(p, split.catalog(), emb)
    index.save(tmp_path / "mem", personas_manifest="abc")
    loaded = MemoryIndex.load(tmp_path / "mem", personas_manifest="abc")
    u, i = p.memories["user_id"].to_numpy()[:20], p.memories["item_id"].to_numpy()[:20]
    assert [[h.item_id for h in x] for x in loaded.retrieve_batch(u, i, 3)] == [
        [h.item_id for h in x] for x in index.retrieve_batch(u, i, 3)
    ]
    with pytest.raises(ArtifactError, match="other personas"):
        MemoryIndex.load(tmp_path / "mem", personas_manifest="xyz")
    uid = int(u[0])
    new_item = int(split.test[split.test.user_id == uid].item_id.iloc[0])
    key = index.key_vector(new_item, emb.embed(["I loved it"])[0])
    index.add(uid, new_item, 5, "I loved it", key)
    probe = int(split.test[split.test.user_id == uid].item_id.iloc[1])
    found = {h.item_id for h in index.retrieve(uid, probe, k=1000)}
    assert new_item in found
    assert new_item not in {h.item_id for h in index.retrieve(uid, new_item, k=1000)}
    assert isinstance(pd.DataFrame(index.memories), pd.DataFrame)


def test_local_minilm_embedder_is_offline_normalised_and_semantic(tmp_path):
    from recsim_personas.personas.embedders import make_embedder

    emb = make_embedder("local", cache=tmp_path / "c.sqlite")
    v = emb.embed(
        ["A thrilling space adventure with aliens.", "An alien invasion in outer space.", "A quiet romantic drama."]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    assert emb.model_id == "local:all-MiniLM-L6-v2"
