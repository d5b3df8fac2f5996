"""Memory retrieval at scale: one FAISS index keyed by user (MemoryIndex) against one flat index per user.

Three structures answer the same batched requests ("the k memories of user u most similar to item i's
description, never item i itself"), built from the same vectors, side by side in one run:

- ``per-user flat`` — the structure MemoryIndex had before issue 12: one ``faiss.IndexFlatIP`` per user, a
  batch grouped by user and one search per user (re-implemented here as the baseline);
- ``flat + range`` — one ``IndexFlatIP`` over every memory (rows grouped by user), one search per user with
  ``SearchParameters(sel=IDSelectorRange(user's rows))`` (the alternative that was measured and not taken);
- ``IVF keyed by user`` — :class:`recsim_personas.personas.memory.MemoryIndex`: one ``IndexIVFFlat`` whose list j
  holds user j's memories, one ``search_preassigned`` call per batch.

For each scale: build time, resident memory added by the structure (RSS after building minus before, freed
memory handed back to the OS in between; for the baseline plus the input array the old MemoryIndex kept
alive), batched throughput (requests/s, median of ``--rounds``), and whether
every answer is identical to the baseline's (hits, order, scores within 1e-6). Scales: the ML-100K protocol
split's real layout (200 users, their 17,018 train memories, their 11,474 test requests; unit vectors drawn at
random, since the speed does not depend on what the vectors mean) and synthetic ``USERSxMEMORIES`` layouts; a
scale whose estimated peak exceeds ``--max-rss-gib`` is skipped and said so. Prints one JSON object and writes
``report.md`` / ``report.json`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/memory_index_scaling.py
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (for the real scale)"""
    scales: list[str] = field(default_factory=lambda: ["real", "10000x150", "100000x15", "10000x200"])
    """"real" (the ML-100K split's layout) and synthetic USERSxMEMORIES_PER_USER layouts"""
    dim: int = 384
    """vector dimension (MiniLM's)"""
    items: int = 2000
    """catalog size of the synthetic scales"""
    batch: int = 4096
    """requests per batched call"""
    k: int = 1
    """memories per request (the demo's agents retrieve 1)"""
    rounds: int = 3
    """timed rounds of the batched queries; the median is reported"""
    max_rss_gib: float = 6.0
    """skip a scale whose estimated peak resident memory is above this"""
    seed: int = 0
    """seed of the synthetic layouts, vectors and requests"""
    out: str = "runs/bench/memory_index"
    """report directory (the real scale's split is written under it)"""


def parse() -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=d.data_dir)
    p.add_argument("--scales", nargs="+", default=d.scales)
    for name in ("dim", "items", "batch", "k", "rounds", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument("--max-rss-gib", type=float, default=d.max_rss_gib)
    p.add_argument("--out", default=d.out)
    return Args(**vars(p.parse_args()))


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release() -> None:
    """Collect garbage and hand freed heap memory back to the OS, so the next RSS delta is the next structure's."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class PerUserFlat:
    """The baseline: one IndexFlatIP per user, one search per user of a batch (MemoryIndex before issue 12).

    MemoryIndex kept the array of key vectors it was given besides the per-user copies, so its memory is
    reported with that array counted (``keeps_input``).
    """

    name = "per-user flat"
    keeps_input = True

    def __init__(self, memories: pd.DataFrame, vectors: np.ndarray, item_ids: np.ndarray, item_vectors: np.ndarray):
        import faiss

        self._columns(memories, item_ids, item_vectors)
        self.index, self.rows = {}, {}
        for uid, rows in memories.groupby("user_id").indices.items():
            self.index[int(uid)] = flat = faiss.IndexFlatIP(vectors.shape[1])
            flat.add(vectors[rows])
            self.rows[int(uid)] = rows

    def _columns(self, memories: pd.DataFrame, item_ids: np.ndarray, item_vectors: np.ndarray) -> None:
        self.item_vectors, self.item_pos = item_vectors, pd.Index(item_ids)
        self.m_item = memories["item_id"].to_numpy(np.int64)
        self.m_rating = memories["rating"].to_numpy(np.int64)
        self.m_reason = memories["reason"].tolist()

    def retrieve_batch(self, users: np.ndarray, items: np.ndarray, k: int) -> list[list]:
        from recsim_personas.personas.memory import MemoryHit

        out: list[list] = [[] for _ in users]
        queries = self.item_vectors[self.item_pos.get_indexer(items)]
        for uid in np.unique(users):
            sel, rows = np.flatnonzero(users == uid), self.rows[int(uid)]
            own = (self.m_item[rows][None, :] == items[sel][:, None]).sum(axis=1)
            scores, local = self.index[int(uid)].search(queries[sel], min(len(rows), k + int(own.max())))
            for qi, q in enumerate(sel):
                for s, j in zip(scores[qi], local[qi], strict=True):
                    r = rows[j]
                    if j >= 0 and self.m_item[r] != items[q] and len(out[q]) < k:
                        out[q].append(MemoryHit(int(self.m_item[r]), int(self.m_rating[r]), self.m_reason[r], float(s)))
        return out


class FlatRange(PerUserFlat):
    """One IndexFlatIP over every memory; each user's search restricted to its rows with an IDSelectorRange."""

    name = "flat + range"
    keeps_input = False

    def __init__(self, memories: pd.DataFrame, vectors: np.ndarray, item_ids: np.ndarray, item_vectors: np.ndarray):
        import faiss

        self._columns(memories, item_ids, item_vectors)
        users = memories["user_id"].to_numpy(np.int64)
        assert (np.diff(users) >= 0).all(), "rows must be grouped by user"
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        ends = np.r_[starts[1:], len(users)]
        self.rows = {int(users[a]): np.arange(a, b) for a, b in zip(starts, ends, strict=True)}
        self.flat = faiss.IndexFlatIP(vectors.shape[1])
        self.flat.add(vectors)
        self.index = {u: _RangeSearch(self.flat, int(r[0]), int(r[-1]) + 1) for u, r in self.rows.items()}


class _RangeSearch:
    def __init__(self, flat, lo: int, hi: int) -> None:
        self.flat, self.lo, self.hi = flat, lo, hi

    def search(self, x: np.ndarray, k: int):
        import faiss

        params = faiss.SearchParameters(sel=faiss.IDSelectorRange(self.lo, self.hi))
        scores, rows = self.flat.search(x, k, params=params)
        return scores, np.where(rows >= 0, rows - self.lo, -1)


def real_layout(args: Args, rng: np.random.Generator):
    from recsim_personas.data import ProtocolConfig, prepare_split
    from recsim_personas.personas.distill import distill_personas
    from recsim_personas.personas.stats_distiller import StatsDistiller

    split, _ = prepare_split(ProtocolConfig(seed=0), Path(args.out) / "split", data_dir=args.data_dir)
    pset, _ = distill_personas(split, Path(args.out) / "personas", StatsDistiller())
    memories = pset.memories[["user_id", "item_id", "rating", "timestamp", "reason"]].reset_index(drop=True)
    item_ids = np.sort(split.items["item_id"].to_numpy(np.int64))
    requests = (split.test["user_id"].to_numpy(np.int64), split.test["item_id"].to_numpy(np.int64))
    return memories, item_ids, requests


def synthetic_layout(users: int, per_user: int, args: Args, rng: np.random.Generator):
    n = users * per_user
    offsets = rng.integers(0, args.items, users)
    item = (np.repeat(offsets, per_user) + np.tile(np.arange(per_user), users)) % args.items  # distinct per user
    memories = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(users, dtype=np.int64), per_user),
            "item_id": item.astype(np.int64),
            "rating": rng.integers(1, 6, n),
            "timestamp": np.zeros(n, dtype=np.int64),
            "reason": pd.Series(["a reason"] * n, dtype=object),
        }
    )
    requests = (rng.integers(0, users, 8 * args.batch), rng.integers(0, args.items, 8 * args.batch))
    return memories, np.arange(args.items, dtype=np.int64), requests


def estimated_peak_gib(n_memories: int, n_users: int, args: Args) -> float:
    vectors = n_memories * args.dim * 4
    frame = n_memories * 8 * 12  # the memory frame, per-memory arrays and their temporaries
    baseline = 0.4 * 2**30  # the interpreter with numpy, pandas and FAISS loaded
    return (2 * vectors + frame + n_users * 2_000 + baseline) / 2**30  # the source array and one structure at a time


def measure(make, memories, vectors, item_ids, item_vectors, requests, args):
    release()
    before, t0 = rss(), time.perf_counter()
    structure = make(memories, vectors, item_ids, item_vectors)
    build = time.perf_counter() - t0
    release()
    added = rss() - before + (vectors.nbytes if getattr(make, "keeps_input", False) else 0)
    users, items = requests
    chunks = [(users[i : i + args.batch], items[i : i + args.batch]) for i in range(0, len(users), args.batch)]
    seconds, answers = [], None
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        answers = [hit for u, i in chunks for hit in structure.retrieve_batch(u, i, args.k)]
        seconds.append(time.perf_counter() - t0)
    row = {
        "structure": make.name if hasattr(make, "name") else "IVF keyed by user",
        "build_s": build,
        "memory_mib": added / 2**20,
        "requests_per_s": len(users) / statistics.median(seconds),
    }
    del structure
    release()
    return row, answers


def same_answers(a: list[list], b: list[list]) -> tuple[bool, float]:
    ids_equal = [[(h.item_id, h.rating, h.reason) for h in x] for x in a] == [
        [(h.item_id, h.rating, h.reason) for h in x] for x in b
    ]
    diffs = [abs(h.score - g.score) for x, y in zip(a, b, strict=True) for h, g in zip(x, y, strict=False)]
    worst = max(diffs, default=0.0)
    return ids_equal and worst <= 1e-6, worst


if __name__ == "__main__":
    args = parse()
    import faiss

    from recsim_personas.personas.memory import MemoryIndex

    def new_index(memories, vectors, item_ids, item_vectors):
        return MemoryIndex(memories, vectors, item_ids, item_vectors, "random-unit-vectors")

    new_index.name = "IVF keyed by user"
    results, skipped = [], []
    for scale in args.scales:
        rng = np.random.default_rng(args.seed)
        if scale == "real":
            memories, item_ids, requests = real_layout(args, rng)
            label = "ML-100K split (real layout)"
        else:
            n_users, per_user = (int(x) for x in scale.lower().split("x"))
            label = f"{n_users:,} users × {per_user} memories"
            peak = estimated_peak_gib(n_users * per_user, n_users, args)
            if peak > args.max_rss_gib:
                skipped.append({"scale": scale, "estimated_peak_gib": round(peak, 1)})
                continue
            memories, item_ids, requests = synthetic_layout(n_users, per_user, args, rng)
        vectors = unit(rng, len(memories), args.dim)
        item_vectors = unit(rng, len(item_ids), args.dim)
        rows, answers = [], {}
        for make in (PerUserFlat, FlatRange, new_index):
            row, answers[make.name] = measure(make, memories, vectors, item_ids, item_vectors, requests, args)
            rows.append(row)
        base = rows[0]
        for row in rows:
            identical, worst = same_answers(answers[row["structure"]], answers[base["structure"]])
            row.update(
                identical_to_baseline=identical,
                max_score_diff=worst,
                build_speedup=base["build_s"] / row["build_s"],
                memory_ratio=row["memory_mib"] / base["memory_mib"] if base["memory_mib"] > 0 else None,
                throughput_ratio=row["requests_per_s"] / base["requests_per_s"],
            )
        results.append(
            {
                "scale": scale,
                "label": label,
                "users": int(memories["user_id"].nunique()),
                "memories": len(memories),
                "vectors_mib": vectors.nbytes / 2**20,
                "requests": len(requests[0]),
                "rows": rows,
            }
        )
        del memories, vectors, item_vectors, answers
        release()

    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    result = {
        "benchmark": "memory_index_scaling",
        "args": asdict(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "faiss": faiss.__version__},
        "faiss_threads": faiss.omp_get_max_threads(),
        "peak_rss_gib": peak_gib,
        "scales": results,
        "skipped": skipped,
    }
    lines = [
        "# Memory retrieval at scale: one index keyed by user vs one flat index per user",
        "",
        f"d = {args.dim}, k = {args.k}, batches of {args.batch} requests, median of {args.rounds} rounds;"
        f" {os.cpu_count()} CPUs, FAISS {faiss.__version__} with {faiss.omp_get_max_threads()} threads; peak RSS"
        f" {peak_gib:.2f} GiB.",
        "",
        "| scale | memories | structure | build s | memory MiB | requests/s | build time, memory, throughput"
        " relative to per-user flat | identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            mem = "–" if row["memory_ratio"] is None else f"{row['memory_ratio']:.2f}×"
            lines.append(
                f"| {r['label']} | {r['memories']:,} | {row['structure']} | {row['build_s']:.2f} |"
                f" {row['memory_mib']:.0f} | {row['requests_per_s']:,.0f} | {1 / row['build_speedup']:.2f}×,"
                f" {mem}, {row['throughput_ratio']:.1f}× | {'yes' if row['identical_to_baseline'] else 'NO'} |"
            )
    lines.append("")
    for r in results:
        ivf = r["rows"][-1]
        if ivf["identical_to_baseline"]:
            verdict = "gave the same answers"
        else:
            verdict = f"did NOT give the same answers (largest score gap {ivf['max_score_diff']:.2g})"
        speed = ivf["build_speedup"]
        built = f"built {speed:.1f}× faster" if speed >= 1 else f"took {1 / speed:.1f}× as long to build"
        memory = "" if ivf["memory_ratio"] is None else f", held {ivf['memory_ratio']:.2f}× the memory"
        lines.append(
            f"- {r['label']}: the index keyed by user {built}{memory} and answered {ivf['throughput_ratio']:.1f}× as"
            f" many batched requests per second as one flat index per user, and {verdict} on all"
            f" {r['requests']:,} requests."
        )
    for s in skipped:
        lines.append(
            f"- skipped {s['scale']}: estimated peak {s['estimated_peak_gib']} GiB > --max-rss-gib {args.max_rss_gib}."
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
