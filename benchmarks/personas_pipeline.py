"""Offline persona pipeline on the ML-100K protocol split: distill (stats) → cluster (MiniLM) → memory index.

Times each stage with a fresh embedding cache (so nothing is served from an earlier run), then times a
second clustering run that is served from the cache, and batched against one-at-a-time memory retrieval.
Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/personas_pipeline.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files"""
    seed: int = 0
    """user-sample seed"""
    out: str = "runs/bench/personas"
    """report directory (the split and personas are written under it)"""
    retrieval_requests: int = 2000
    """test requests timed for memory retrieval"""


def parse() -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(d).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value) if value is not None else str, default=value)
    return Args(**vars(p.parse_args()))


if __name__ == "__main__":
    args = parse()
    from recsim_personas.artifacts import manifest_digest
    from recsim_personas.data import ProtocolConfig, prepare_split
    from recsim_personas.personas.clustering import cluster_personas, save_clusters
    from recsim_personas.personas.distill import distill_personas
    from recsim_personas.personas.embedders import make_embedder
    from recsim_personas.personas.memory import MemoryIndex
    from recsim_personas.personas.stats_distiller import StatsDistiller

    out = Path(args.out)
    split, _ = prepare_split(ProtocolConfig(seed=args.seed), out / "split", data_dir=args.data_dir)
    shutil.rmtree(out / "personas", ignore_errors=True)
    cache = out / "embeddings.sqlite"
    cache.unlink(missing_ok=True)
    t = {}

    start = time.perf_counter()
    pset, _ = distill_personas(split, out / "personas", StatsDistiller())
    t["distill_s"] = time.perf_counter() - start

    start = time.perf_counter()
    embedder = make_embedder("local", cache=cache)
    clusters = cluster_personas(pset, embedder)
    save_clusters(clusters, pset.path / "clusters")
    t["cluster_s"] = time.perf_counter() - start

    start = time.perf_counter()
    again = cluster_personas(pset, make_embedder("local", cache=cache))
    t["cluster_cached_s"] = time.perf_counter() - start

    start = time.perf_counter()
    index = MemoryIndex.build(pset, split.catalog(), embedder)
    index.save(pset.path / "memory", personas_manifest=manifest_digest(pset.path))
    t["index_s"] = time.perf_counter() - start

    req = split.test.head(args.retrieval_requests)
    users, items = req["user_id"].to_numpy(), req["item_id"].to_numpy()
    start = time.perf_counter()
    index.retrieve_batch(users, items, k=1)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for u, i in zip(users, items, strict=True):
        index.retrieve(int(u), int(i), k=1)
    single = time.perf_counter() - start

    result = {
        "benchmark": "personas_pipeline",
        "args": asdict(args),
        "personas": len(pset.personas),
        "memories": len(pset.memories),
        "max_ms_words": pset.manifest["counts"]["max_ms_words"],
        "k": clusters.k,
        "chosen_by": clusters.chosen_by,
        "cluster_sizes": clusters.sizes,
        "silhouettes": dict(zip(clusters.ks, clusters.silhouettes, strict=True)),
        "same_clusters_from_cache": again.labels == clusters.labels,
        **t,
        "distill_plus_cluster_s": t["distill_s"] + t["cluster_s"],
        "retrieval_batched_per_s": len(users) / batched,
        "retrieval_single_per_s": len(users) / single,
        "retrieval_speedup": single / batched,
    }
    lines = [
        "# Offline persona pipeline (ML-100K protocol split)",
        "",
        f"- {result['personas']} personas, {result['memories']} memories (max Ms {result['max_ms_words']} words)",
        f"- K = {clusters.k} ({clusters.chosen_by}); sizes {clusters.sizes}",
        f"- distill {t['distill_s']:.1f} s, cluster {t['cluster_s']:.1f} s"
        f" (again from cache {t['cluster_cached_s']:.1f} s), memory index {t['index_s']:.1f} s",
        f"- retrieval: {result['retrieval_batched_per_s']:.0f} requests/s batched vs"
        f" {result['retrieval_single_per_s']:.0f}/s one at a time ({result['retrieval_speedup']:.1f}×)",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
