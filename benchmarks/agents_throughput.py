"""Rating throughput of the encoder persona agents: mixed-adapter batches vs one request at a time.

Loads a trained persona-LoRA encoder agent (every persona adapter in one ``PeftModel``; trains a small one
into ``--out`` if ``--agents`` does not exist), then serves the same ``--requests`` test requests — users of
every persona, interleaved — two ways, end to end through ``PersonaAgents.predict`` (memory retrieval,
prompt building, forward pass, anchoring):

- *batched*: ``--batch-size`` requests per call, each call one forward pass routed per row with
  ``adapter_names``;
- *naive*: one request per call (the loop an API-driven LLM agent runs).

FLOPs of the forward passes are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, incl.
attention and LoRA) in an untimed pass, and the achieved FLOP/s is compared with the peak of square float32
matmuls measured in the same run with the same thread count. Prints one JSON object and writes
``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/agents_throughput.py
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    world: str = "runs/bench/data"
    """directory with split/ and personas/ (clusters/, memory/)"""
    agents: str = "runs/bench/agents_encoder/agents/persona-mem1-bias"
    """a trained persona-LoRA encoder artifact (trained small into --out when missing)"""
    requests: int = 512
    """requests served by the batched path"""
    naive_requests: int = 128
    """requests served one at a time (the first ones of the same list)"""
    batch_size: int = 64
    """requests per batched call"""
    threads: int = 1
    """torch threads (the matmul peak is measured with the same number)"""
    repeats: int = 2
    """timed repetitions of each path (the best is reported)"""
    seed: int = 0
    """seed of the request sample"""
    out: str = "runs/bench/agents_throughput"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def matmul_peak(torch, repeats: int = 5) -> dict[str, float]:
    """Best float32 GFLOP/s of square matmuls (n = 512, 1024, 2048)."""
    best = {}
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best[str(n)] = 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9
    return best


def main() -> None:
    args = parse()
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(args.threads)
    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.agents.backbones import BackboneConfig
    from recsim_personas.agents.lora import LoraTrainConfig, train_agents
    from recsim_personas.agents.persona_agents import PersonaAgents, load_world

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split, pset, clusters, index = load_world(str(Path(args.world) / "split"), str(Path(args.world) / "personas"))
    path = Path(args.agents)
    if not (path / "manifest.json").is_file():
        path = out / "agents"
        train_agents(
            split,
            pset,
            clusters,
            index,
            BackboneConfig(kind="encoder"),
            LoraTrainConfig(max_train=100, max_valid=50),
            path,
            progress=False,
        )
    agents = PersonaAgents.load(path, split, pset, index, batch_size=args.batch_size)

    # requests: interleave users of every persona, so every batch mixes adapters
    test = split.test.sample(frac=1.0, random_state=args.seed)
    test = test.assign(adapter=test["user_id"].map(agents.cluster_map))
    groups = [g.index.to_list() for _, g in test.groupby("adapter")]
    order = [row for tup in zip(*groups, strict=False) for row in tup][: args.requests]
    users = test.loc[order, "user_id"].to_numpy()
    items = test.loc[order, "item_id"].to_numpy()
    n_adapters = len(set(agents.cluster_map.values()))
    mix = [
        len({agents.cluster_map[int(u)] for u in users[lo : lo + args.batch_size]})
        for lo in range(0, len(users), args.batch_size)
    ]

    agents.predict(users[:8], items[:8])  # warm-up (allocations, caches of the first users)
    peak = matmul_peak(torch)

    def batched() -> np.ndarray:
        return np.concatenate(
            [
                agents.predict(users[lo : lo + args.batch_size], items[lo : lo + args.batch_size])
                for lo in range(0, len(users), args.batch_size)
            ]
        )

    def naive() -> np.ndarray:
        return np.concatenate([agents.predict(users[j : j + 1], items[j : j + 1]) for j in range(args.naive_requests)])

    times = {"batched": [], "naive": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("batched", batched), ("naive", naive)):
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    same = float(np.abs(results["batched"][: args.naive_requests] - results["naive"]).max())

    # FLOPs of the forward passes (untimed), and the forward-only time of the batched path
    rows, names = agents.prompts(users, items)
    from recsim_personas.agents.lora import batched_logits

    with FlopCounterMode(display=False) as counter:
        batched_logits(agents.model, agents.backbone, rows, names, args.batch_size)
    flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter1:
        batched_logits(agents.model, agents.backbone, rows[: args.naive_requests], names[: args.naive_requests], 1)
    flops_naive = counter1.get_total_flops()
    forward_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        batched_logits(agents.model, agents.backbone, rows, names, args.batch_size)
        forward_times.append(time.perf_counter() - t0)
    peak_gflops = max(peak.values())
    batched_rate = len(users) / min(times["batched"])
    naive_rate = args.naive_requests / min(times["naive"])
    gflops_e2e = flops / min(times["batched"]) / 1e9
    gflops_fwd = flops / min(forward_times) / 1e9
    gflops_naive = flops_naive / min(times["naive"]) / 1e9
    summary = {
        "args": asdict(args),
        "agents": str(path),
        "adapters": n_adapters,
        "adapters_per_batch_mean": float(np.mean(mix)),
        "prompt_tokens_mean": float(np.mean([len(r) for r in rows])),
        "max_length": agents.builder.cfg.max_length,
        "ratings_per_s": {"batched": batched_rate, "naive": naive_rate},
        "speedup": batched_rate / naive_rate,
        "max_abs_diff_batched_vs_naive": same,
        "gflop_per_rating": flops / len(users) / 1e9,
        "achieved_gflops": {
            "batched_end_to_end": gflops_e2e,
            "batched_forward_only": gflops_fwd,
            "naive": gflops_naive,
        },
        "matmul_peak_gflops": peak,
        "share_of_peak": {
            "batched_end_to_end": gflops_e2e / peak_gflops,
            "batched_forward_only": gflops_fwd / peak_gflops,
            "naive": gflops_naive / peak_gflops,
        },
        "seconds": {"batched": times["batched"], "naive": times["naive"], "forward_only": forward_times},
        "threads": args.threads,
    }
    write_json(out / "report.json", summary)
    tokens = float(np.mean([len(r) for r in rows]))
    fwd_rate = len(users) / min(forward_times)
    share = {k: v / peak_gflops for k, v in (("e2e", gflops_e2e), ("fwd", gflops_fwd), ("naive", gflops_naive))}
    md = [
        "# Encoder persona-agent throughput",
        "",
        f"{len(users)} test requests of users of all {n_adapters} personas, interleaved (on average"
        f" {np.mean(mix):.1f} adapters per batch of {args.batch_size}); prompts of {tokens:.0f}"
        f" tokens on average (budget {agents.builder.cfg.max_length}); {args.threads} torch thread(s).",
        "",
        "| path | ratings/s | achieved GFLOP/s | share of matmul peak |",
        "|---|---|---|---|",
        f"| batched, mixed adapters (end to end) | {batched_rate:.1f} | {gflops_e2e:.1f} | {share['e2e']:.0%} |",
        f"| batched, forward passes only | {fwd_rate:.1f} | {gflops_fwd:.1f} | {share['fwd']:.0%} |",
        f"| one request at a time | {naive_rate:.1f} | {gflops_naive:.1f} | {share['naive']:.0%} |",
        "",
        f"Speed-up of batching: {batched_rate / naive_rate:.2f}×; largest difference between the two paths'"
        f" distributions: {same:.2e}. Matmul peak (float32, same threads): "
        + ", ".join(f"n={k}: {v:.1f}" for k, v in peak.items())
        + f" GFLOP/s; {flops / len(users) / 1e9:.2f} GFLOP per rating.",
    ]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
