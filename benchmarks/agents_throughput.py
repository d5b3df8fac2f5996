"""Rating throughput of the encoder persona agents in float32 and bfloat16: mixed-adapter batches vs one at a time.

Loads a trained persona-LoRA encoder agent twice — weights in float32 and in bfloat16 (every persona
adapter in one ``PeftModel``; trains a small one into ``--out`` if ``--agents`` does not exist) — and
serves the same ``--requests`` test requests — users of every persona, interleaved — two ways per
precision, end to end through ``PersonaAgents.predict`` (memory retrieval, prompt building, forward
passes, anchoring):

- *batched*: ``--batch-size`` requests per call, each call cut by
  :func:`~recsim_personas.agents.inference.batched_logits` into forward passes of at most 2,048 padded tokens,
  every pass routed per row with ``adapter_names`` (any mix of personas in one pass);
- *naive*: one request per call (the loop an API-driven LLM agent runs).

Both run the agents' default routing (``single_adapter_passes``: a pass whose prompts all use one adapter —
every pass of the naive loop, some of the batched calls' — runs PEFT's plain forward with that adapter
active) and, for the before/after comparison in the same run, the earlier routing (every pass through PEFT's
mixed-batch ``adapter_names`` route: the ``*_mixed_route`` rows).

The two precisions and two paths are timed in alternation (``--repeats`` rounds, the best of each kept), so
that load from other processes on the machine hits them alike: compare ratios within one run. Also timed:
the forward passes alone, with the token cap and without it (whole ``--batch-size`` passes).

FLOPs of the forward passes are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, incl.
attention and LoRA) in an untimed pass, and the achieved FLOP/s of each precision is compared with the
peak of square matmuls of the same precision, measured at the start and at the end of the same run with
the same thread count (the better of the two), and with the best rate of the encoder's own linear layers
(2,048 tokens × 384 → 384, 384 → 1,536 and 1,536 → 384), the ceiling a MiniLM pass could reach.
Fidelity: RMSE / MAE of the expected rating against the real test ratings for both precisions, and their
largest differences. Prints one JSON object and writes
``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/agents_throughput.py
    .venv/bin/python benchmarks/agents_throughput.py --threads 2 --out runs/bench/agents_throughput_2t
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DTYPES = ("float32", "bfloat16")


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
    """torch threads (the matmul peaks are measured with the same number)"""
    repeats: int = 2
    """timed rounds of every path (the best is reported)"""
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


def matmul_peak(torch, dtype, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s of square ``dtype`` matmuls (n = 512, 1024, 2048), per size."""
    best = {}
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
        best[str(n)] = max(rates)
    return best


def linear_peak(torch, dtype, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s of ``dtype`` linear layers of MiniLM's shapes on a pass of 2,048 tokens, per shape."""
    best = {}
    for k, n in ((384, 384), (384, 1536), (1536, 384)):
        x, w, b = (torch.randn(*s).to(dtype) for s in ((2048, k), (n, k), (n,)))
        torch.nn.functional.linear(x, w, b)
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w, b)
            rates.append(2 * 2048 * k * n / (time.perf_counter() - t0) / 1e9)
        best[f"{k}->{n}"] = max(rates)
    return best


def main() -> None:
    args = parse()
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(args.threads)
    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.agents.agent_artifact import load_world
    from recsim_personas.agents.backbone_config import BackboneConfig
    from recsim_personas.agents.inference import batched_logits
    from recsim_personas.agents.persona_agents import PersonaAgents
    from recsim_personas.agents.precision import native_bf16_matmul
    from recsim_personas.agents.train_config import LoraTrainConfig
    from recsim_personas.agents.training import train_agents

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
    agents = {d: PersonaAgents.load(path, split, pset, index, batch_size=args.batch_size, dtype=d) for d in DTYPES}
    first = agents["float32"]
    auto = PersonaAgents.load(path, split, pset, index, batch_size=args.batch_size, dtype="auto")  # measured once

    # requests: interleave users of every persona, so every batch mixes adapters
    test = split.test.sample(frac=1.0, random_state=args.seed)
    test = test.assign(adapter=test["user_id"].map(first.cluster_map))
    groups = [g.index.to_list() for _, g in test.groupby("adapter")]
    order = [row for tup in zip(*groups, strict=False) for row in tup][: args.requests]
    users = test.loc[order, "user_id"].to_numpy()
    items = test.loc[order, "item_id"].to_numpy()
    truth = test.loc[order, "rating"].to_numpy().astype(np.float64)
    n_adapters = len(set(first.cluster_map.values()))
    mix = [
        len({first.cluster_map[int(u)] for u in users[lo : lo + args.batch_size]})
        for lo in range(0, len(users), args.batch_size)
    ]
    rows, names = first.prompts(users, items)
    tokens = float(np.mean([len(r) for r in rows]))

    peaks = {d: [matmul_peak(torch, getattr(torch, d))] for d in DTYPES}
    lin_peaks = {d: [linear_peak(torch, getattr(torch, d))] for d in DTYPES}
    for a in agents.values():
        a.predict(users[:8], items[:8])  # warm-up (allocations, caches of the first users)

    def routed(fn, single: bool):
        def run(a: PersonaAgents):
            a.single_adapter_passes = single
            try:
                return fn(a)
            finally:
                a.single_adapter_passes = True

        return run

    def batched(a: PersonaAgents) -> np.ndarray:
        return np.concatenate(
            [
                a.predict(users[lo : lo + args.batch_size], items[lo : lo + args.batch_size])
                for lo in range(0, len(users), args.batch_size)
            ]
        )

    def naive(a: PersonaAgents) -> np.ndarray:
        return np.concatenate([a.predict(users[j : j + 1], items[j : j + 1]) for j in range(args.naive_requests)])

    def forward(a: PersonaAgents, cap: bool) -> None:
        kwargs = {} if cap else {"max_tokens": None}
        batched_logits(a.model, a.backbone, rows, names, args.batch_size, single_adapter_passes=True, **kwargs)

    paths = {
        "batched": batched,
        "batched_mixed_route": routed(batched, False),
        "naive": naive,
        "naive_mixed_route": routed(naive, False),
        "forward_only": lambda a: forward(a, True),
        "forward_only_uncapped": lambda a: forward(a, False),
    }
    count = {p: len(users) for p in paths} | {"naive": args.naive_requests, "naive_mixed_route": args.naive_requests}
    times: dict[str, dict[str, list[float]]] = {d: {p: [] for p in paths} for d in DTYPES}
    results: dict[str, dict[str, np.ndarray]] = {d: {} for d in DTYPES}
    for _ in range(args.repeats):
        for p, fn in paths.items():
            for d in DTYPES:  # the two precisions back to back: the same load from other processes
                t0 = time.perf_counter()
                res = fn(agents[d])
                times[d][p].append(time.perf_counter() - t0)
                if res is not None:
                    results[d][p] = res
    for d in DTYPES:
        peaks[d].append(matmul_peak(torch, getattr(torch, d)))
        lin_peaks[d].append(linear_peak(torch, getattr(torch, d)))
    peak = {d: {n: max(run[n] for run in peaks[d]) for n in peaks[d][0]} for d in DTYPES}
    lin_peak = {d: {n: max(run[n] for run in lin_peaks[d]) for n in lin_peaks[d][0]} for d in DTYPES}

    # FLOPs of the forward passes (untimed; the same count in both precisions)
    # (either routing: the plain forward of a single-adapter pass runs the LoRA matmuls on all its rows, the
    # mixed route on each adapter's rows; the same multiply-adds)
    with FlopCounterMode(display=False) as counter:
        batched_logits(first.model, first.backbone, rows, names, args.batch_size)
    flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter1:
        batched_logits(first.model, first.backbone, rows[: args.naive_requests], names[: args.naive_requests], 1)
    flops_naive = counter1.get_total_flops()
    flops_of = {p: flops_naive if p.startswith("naive") else flops for p in paths}

    levels = np.arange(1, 6)
    per_dtype = {}
    for d in DTYPES:
        best = {p: min(times[d][p]) for p in paths}
        rate = {p: count[p] / best[p] for p in paths}
        gflops = {p: flops_of[p] / best[p] / 1e9 for p in paths}
        top = max(peak[d].values())
        lin_top = max(lin_peak[d].values())
        expected = results[d]["batched"] @ levels
        per_dtype[d] = {
            "ratings_per_s": rate,
            "speedup_batched_vs_naive": rate["batched"] / rate["naive"],
            "speedup_batched_vs_naive_mixed_route": rate["batched_mixed_route"] / rate["naive_mixed_route"],
            "speedup_single_adapter_passes": {
                "batched": rate["batched"] / rate["batched_mixed_route"],
                "naive": rate["naive"] / rate["naive_mixed_route"],
            },
            "speedup_token_cap": rate["forward_only"] / rate["forward_only_uncapped"],
            "achieved_gflops": gflops,
            "matmul_peak_gflops": peak[d],
            "share_of_peak": {p: g / top for p, g in gflops.items()},
            "minilm_linear_peak_gflops": lin_peak[d],
            "share_of_linear_peak": {p: g / lin_top for p, g in gflops.items()},
            "max_abs_diff_batched_vs_naive": float(
                np.abs(results[d]["batched"][: args.naive_requests] - results[d]["naive"]).max()
            ),
            "max_abs_diff_routing": float(
                max(
                    np.abs(results[d]["batched"] - results[d]["batched_mixed_route"]).max(),
                    np.abs(results[d]["naive"] - results[d]["naive_mixed_route"]).max(),
                )
            ),
            "rmse_expected": float(np.sqrt(np.mean((expected - truth) ** 2))),
            "mae_expected": float(np.mean(np.abs(expected - truth))),
            "seconds": times[d],
        }
    p32, p16 = results["float32"]["batched"], results["bfloat16"]["batched"]
    e32, e16 = p32 @ levels, p16 @ levels
    summary = {
        "args": asdict(args),
        "agents": str(path),
        "adapters": n_adapters,
        "adapters_per_batch_mean": float(np.mean(mix)),
        "prompt_tokens_mean": tokens,
        "max_length": first.builder.cfg.max_length,
        "threads": args.threads,
        "native_bf16_matmul": native_bf16_matmul(),
        "auto_dtype": auto.dtype,
        "auto_verdict": auto.precision.to_dict() if auto.precision is not None else None,
        "gflop_per_rating": flops / len(users) / 1e9,
        "dtypes": per_dtype,
        "bfloat16_vs_float32": {
            "speedup_batched": per_dtype["bfloat16"]["ratings_per_s"]["batched"]
            / per_dtype["float32"]["ratings_per_s"]["batched"],
            "speedup_naive": per_dtype["bfloat16"]["ratings_per_s"]["naive"]
            / per_dtype["float32"]["ratings_per_s"]["naive"],
            "expected_rating_abs_diff_max": float(np.abs(e16 - e32).max()),
            "expected_rating_abs_diff_mean": float(np.abs(e16 - e32).mean()),
            "probability_abs_diff_max": float(np.abs(p16 - p32).max()),
        },
    }
    write_json(out / "report.json", summary)

    token_cap = inspect.signature(batched_logits).parameters["max_tokens"].default
    label = {
        "batched": "batched, mixed adapters (end to end)",
        "batched_mixed_route": "batched, every pass via `adapter_names` (earlier routing, end to end)",
        "naive_mixed_route": "one request at a time, via `adapter_names` (earlier routing, end to end)",
        "forward_only": f"batched, forward passes only (≤ {token_cap:,} tokens per pass)",
        "forward_only_uncapped": f"batched, forward passes only ({args.batch_size} prompts per pass, no token cap)",
        "naive": "one request at a time (end to end)",
    }
    cmp = summary["bfloat16_vs_float32"]
    md = [
        "# Encoder persona-agent throughput",
        "",
        f"{len(users)} test requests of users of all {n_adapters} personas, interleaved (on average"
        f" {np.mean(mix):.1f} adapters per call of {args.batch_size}); prompts of {tokens:.0f} tokens on average"
        f" (budget {first.builder.cfg.max_length}); {args.threads} torch thread(s); the best of {args.repeats}"
        " alternating rounds. Other processes may share the CPU: compare within this table.",
        "",
        "| weights | path | ratings/s | achieved GFLOP/s | share of the same-precision matmul peak |"
        " share of MiniLM's linear-layer peak |",
        "|---|---|---|---|---|---|",
    ]
    for d in DTYPES:
        r = per_dtype[d]
        for p in (
            "batched",
            "batched_mixed_route",
            "forward_only",
            "forward_only_uncapped",
            "naive",
            "naive_mixed_route",
        ):
            md.append(
                f"| {d} | {label[p]} | {r['ratings_per_s'][p]:.1f} | {r['achieved_gflops'][p]:.1f} |"
                f" {r['share_of_peak'][p]:.0%} | {r['share_of_linear_peak'][p]:.0%} |"
            )
    md.append("")
    for d in DTYPES:
        r = per_dtype[d]
        md.append(
            f"- {d}: batching {r['speedup_batched_vs_naive']:.2f}× the one-at-a-time loop (earlier routing:"
            f" {r['speedup_batched_vs_naive_mixed_route']:.2f}×); single-adapter passes on PEFT's plain forward"
            f" {r['speedup_single_adapter_passes']['batched']:.2f}× batched,"
            f" {r['speedup_single_adapter_passes']['naive']:.2f}× one at a time (distributions differ by ≤"
            f" {r['max_abs_diff_routing']:.1e}); the token cap"
            f" {r['speedup_token_cap']:.2f}× whole {args.batch_size}-prompt passes; batched vs one-at-a-time"
            f" distributions differ by ≤ {r['max_abs_diff_batched_vs_naive']:.1e}; matmul peak "
            + ", ".join(f"n={k}: {v:.0f}" for k, v in r["matmul_peak_gflops"].items())
            + " GFLOP/s, MiniLM's linear layers "
            + ", ".join(f"{k}: {v:.0f}" for k, v in r["minilm_linear_peak_gflops"].items())
            + f" GFLOP/s; RMSE {r['rmse_expected']:.5f}, MAE {r['mae_expected']:.5f} (expected rating vs the"
            " real rating)."
        )
    md += [
        f"- bfloat16 vs float32: {cmp['speedup_batched']:.2f}× batched, {cmp['speedup_naive']:.2f}× one at a time;"
        f" expected ratings differ by {cmp['expected_rating_abs_diff_mean']:.1e} on average, at most"
        f" {cmp['expected_rating_abs_diff_max']:.1e}; probabilities by at most {cmp['probability_abs_diff_max']:.1e}.",
        f"- {flops / len(users) / 1e9:.2f} GFLOP per rating. Native bfloat16 matmuls:"
        f' {"yes" if summary["native_bf16_matmul"] else "no"}; `dtype="auto"` measured both on the agents\' own'
        f" forward and runs them in {summary['auto_dtype']} here.",
    ]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
