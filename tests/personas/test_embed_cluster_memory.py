from __future__ import annotations

import hashlib
import json

import numpy as np
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
    with pytest.raises(ArtifactError, match="made from another persona set"):
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
    with pytest.raises(ArtifactError, match="made from another persona set"):
        MemoryIndex.load(tmp_path / "mem", personas_manifest="xyz")
    uid = int(u[0])
    new_item = int(split.test[split.test.user_id == uid].item_id.iloc[0])
    key = index.key_vector(new_item, emb.embed(["I loved it"])[0])
    index.add(uid, new_item, 5, "I loved it", key)
    probe = int(split.test[split.test.user_id == uid].item_id.iloc[1])
    found = {h.item_id for h in index.retrieve(uid, probe, k=1000)}
    assert new_item in found
    assert new_item not in {h.item_id for h in index.retrieve(uid, new_item, k=1000)}
    assert len(index.memories) == len(p.memories) + 1
    assert index.memories.iloc[-1][["user_id", "item_id", "rating", "reason"]].tolist() == [
        uid,
        new_item,
        5,
        "I loved it",
    ]
    # a user the index did not hold gets a list of their own; the others keep their answers
    before = index.retrieve_batch(u, i, 3)
    index.add(-7, new_item, 4, "a new viewer", key)
    assert index.has_user(-7) and [h.item_id for h in index.retrieve(-7, probe, k=5)] == [new_item]
    assert index.retrieve_batch(u, i, 3) == before
    # a second memory of one item (keyed like the first, so both rank first for it): still k others come back
    index.add(uid, new_item, 2, "I watched it again", key)
    again_hits = index.retrieve(uid, new_item, k=3)
    assert len(again_hits) == 3 and all(h.item_id != new_item for h in again_hits)
    index.save(tmp_path / "mem2")
    again = MemoryIndex.load(tmp_path / "mem2")
    np.testing.assert_array_equal(again.vectors(), index.vectors())
    assert again.retrieve_batch(u, i, 3) == index.retrieve_batch(u, i, 3)


def _per_user_flat_retrieval(index, users, items, k):
    """The retrieval of one FAISS IndexFlatIP per user, as MemoryIndex answered before issue 12 (the reference)."""
    import faiss

    mem, vectors = index.memories, index.vectors()
    queries = index.item_vector(items)
    m_item = mem["item_id"].to_numpy()
    out = [[] for _ in users]
    for uid, rows in mem.groupby("user_id").indices.items():
        sel = np.flatnonzero(users == uid)
        if not len(sel):
            continue
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors[rows])
        own = (m_item[rows][None, :] == items[sel][:, None]).sum(axis=1)
        scores, local = flat.search(np.ascontiguousarray(queries[sel]), min(len(rows), k + int(own.max())))
        for qi, q in enumerate(sel):
            hits = [(rows[j], s) for s, j in zip(scores[qi], local[qi], strict=True) if j >= 0]
            hits = [(r, s) for r, s in hits if m_item[r] != items[q]][:k]
            out[q] = [(int(m_item[r]), int(mem["rating"].iat[r]), mem["reason"].iat[r], float(s)) for r, s in hits]
    return out


@pytest.mark.movielens
def test_one_index_keyed_by_user_answers_like_a_flat_index_per_user_on_ml100k(ml100k_split, ml100k_personas):
    pset = ml100k_personas
    index = MemoryIndex.build(pset, ml100k_split.catalog(), HashEmbedder(dim=384))
    test, mem = ml100k_split.test, pset.memories
    cases = [  # every test request, and every train memory asked about its own item (the target must be skipped)
        (test["user_id"].to_numpy(), test["item_id"].to_numpy(), 5),
        (mem["user_id"].to_numpy(), mem["item_id"].to_numpy(), 3),
        (test["user_id"].to_numpy()[:500], test["item_id"].to_numpy()[:500], 300),  # more than a user holds
    ]
    for users, items, k in cases:
        got = index.retrieve_batch(users, items, k)
        want = _per_user_flat_retrieval(index, users, items, k)
        assert [[(h.item_id, h.rating, h.reason) for h in hits] for hits in got] == [
            [w[:3] for w in hits] for hits in want
        ]
        scores = np.array([h.score for hits in got for h in hits])
        np.testing.assert_allclose(scores, [w[3] for hits in want for w in hits], rtol=0, atol=1e-6)
        assert all(h.item_id != i for hits, i in zip(got, items, strict=True) for h in hits)
    single = [index.retrieve(int(u), int(i), k=5) for u, i in zip(cases[0][0][:200], cases[0][1][:200], strict=True)]
    assert [[h.item_id for h in x] for x in single] == [
        [h.item_id for h in x] for x in index.retrieve_batch(cases[0][0][:200], cases[0][1][:200], 5)
    ]


def test_memory_index_artifacts_of_earlier_versions_and_damage(pset, tmp_path):
    split, p = pset
    index = MemoryIndex.build(p, split.catalog(), HashEmbedder())
    index.save(tmp_path / "mem", personas_manifest="abc")
    mf = tmp_path / "mem" / "manifest.json"
    manifest = json.loads(mf.read_text())
    assert manifest["format_version"] == 1 and manifest["versions"]["faiss-cpu"]
    legacy = {k: v for k, v in manifest.items() if k not in ("format_version", "versions")}  # as written before
    mf.write_text(json.dumps(legacy))
    loaded = MemoryIndex.load(tmp_path / "mem", personas_manifest="abc")
    u, i = p.memories["user_id"].to_numpy()[:30], p.memories["item_id"].to_numpy()[:30]
    assert loaded.retrieve_batch(u, i, 2) == index.retrieve_batch(u, i, 2)
    mf.write_text('{"format": "recsim-personas/memory-index", "files": ')
    with pytest.raises(ArtifactError, match="manifest is damaged"):
        MemoryIndex.load(tmp_path / "mem")
    mf.write_text(json.dumps({**legacy, "files": {**legacy["files"], "vectors.npy": "0" * 64}}))
    with pytest.raises(ArtifactError, match=r"vectors\.npy does not match its manifest"):
        MemoryIndex.load(tmp_path / "mem")
    with pytest.raises(ArtifactError, match="not a memory index"):
        MemoryIndex.load(tmp_path / "nowhere")


def test_clusters_of_earlier_versions_and_damage(pset):
    _, p = pset
    result = cluster_personas(p, HashEmbedder(), ClusterConfig(k=3))
    out = p.path / "clusters"
    save_clusters(result, out, plot=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "recsim-personas/clusters" and set(manifest["files"]) == {
        "clusters.json",
        "clusters.md",
    }
    (out / "manifest.json").unlink()  # a clusters directory written before clusters had a manifest
    assert load_clusters(out, p).labels == result.labels
    save_clusters(result, out, plot=False)
    (out / "clusters.json").write_text((out / "clusters.json").read_text().replace('"k": 3', '"k": 4'))
    with pytest.raises(ArtifactError, match=r"clusters\.json does not match its manifest"):
        load_clusters(out, p)
    (out / "manifest.json").write_text("[]")
    with pytest.raises(ArtifactError, match="manifest is damaged"):
        load_clusters(out, p)
    (out / "manifest.json").unlink()
    (out / "clusters.json").write_text("{")
    with pytest.raises(ArtifactError, match=r"clusters\.json: expected the JSON of a persona clustering"):
        load_clusters(out, p)


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
