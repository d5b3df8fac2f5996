"""Ratings/s of RemoteRater through a local OpenAI-compatible server, against the server computing the same requests.

Builds the tiny test world (``tests/agents/agentkit.py``: a synthetic split, personas, 2 clusters, a memory
index), a randomly initialised Llama (``--hidden`` wide, ``--layers`` deep, MiniLM's tokenizer) and causal persona
agents trained on it (rank 2, 16 examples), then serves them with ``tests/agents/remote_server.py`` (stdlib HTTP,
one forward pass at a time, the adapter chosen by the ``model`` field) and times, in alternation (``--repeats``
rounds, the best of each kept):

- *remote*: ``RemoteRater.predict`` on ``--requests`` test requests (both personas interleaved), end to end —
  prompts, ``--concurrency`` HTTP requests in flight, JSON, log-probabilities → distributions;
- *direct*: the server's own work on the same request bodies, called in-process one after the other (no HTTP).

The ratio remote / direct is the share of the server's throughput the remote rater gets (target >= 0.9).
Also checked: the remote distributions equal the local agents' (largest absolute difference). Prints one JSON
object and writes ``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/remote_rater.py
    .venv/bin/python benchmarks/remote_rater.py --hidden 256 --layers 4 --requests 64 --out runs/bench/remote_rater
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    out: str = "runs/bench/remote_rater"
    """report directory (the tiny world, model and agents are rebuilt in its work-* folder)"""
    hidden: int = 128
    """width of the tiny Llama"""
    layers: int = 4
    """layers of the tiny Llama"""
    requests: int = 48
    """rating requests per timed round"""
    mode: str = "echo"
    """RemoteRater mode: echo (exact for any model) or top_logprobs (asks for every token: a random LM)"""
    concurrency: int = 4
    """requests in flight"""
    repeats: int = 3
    """timed rounds of each path (best kept)"""
    threads: int = 0
    """torch CPU threads (0: torch's choice)"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def main() -> None:
    args = parse()
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root / "tests"), str(root / "tests" / "agents")]
    import torch
    from agentkit import make_world, perturbed_agents, requests
    from remote_server import CompletionServer, tiny_causal_dir, train_tiny_causal

    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.agents.remote import RemoteRater, RemoteRaterConfig, served_name

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = out / f"work-h{args.hidden}-l{args.layers}"
    shutil.rmtree(work, ignore_errors=True)  # rebuilt each run (~15 s): the world's digests change per build
    world = make_world(work / "world")
    model_dir = tiny_causal_dir(work / "llama", hidden=args.hidden, layers=args.layers)
    train_tiny_causal(world, model_dir, work / "agents")
    local = perturbed_agents(world, work / "agents", "float32", seed=7)
    served = perturbed_agents(world, work / "agents", "float32", seed=7)
    names = sorted(set(served.cluster_map.values()))
    server = CompletionServer(served.model, {served_name(n): n for n in names}, served.backbone.rating_tokens.ids)
    url = server.start()
    top = len(local.builder.tok) if args.mode == "top_logprobs" else 20
    config = RemoteRaterConfig(
        base_url=url, mode=args.mode, concurrency=args.concurrency, top_logprobs=top, token_ids_in_answer=True
    )
    rater = RemoteRater.from_agents(local, config)

    u0, i0 = requests(world, 1000)
    reps = -(-args.requests // len(u0))
    u, i = np.tile(u0, reps)[: args.requests], np.tile(i0, reps)[: args.requests]
    # the request bodies the rater sends, for the direct path
    rows, adapters = local.prompts(u, i)
    lead = list(local.backbone.rating_tokens.lead_ids)
    bodies = []
    for row, adapter in zip(rows, adapters, strict=True):
        ids = [*row, *lead]
        body = {"model": served_name(adapter), "max_tokens": 1, "return_tokens_as_token_ids": True}
        if args.mode == "echo":
            body.update(prompt=[[*ids, t] for t in rater.rating_ids], echo=True, logprobs=0)
        else:
            body.update(prompt=ids, logprobs=top)
        bodies.append(body)

    def remote() -> np.ndarray:
        return rater.predict(u, i)

    def direct() -> None:
        for body in bodies:
            json.dumps(server.complete(body))

    dist = remote()  # warm-up (and the equality check)
    direct()
    diff = float(np.abs(dist - local.predict(u, i)).max())
    best = {"remote": float("inf"), "direct": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("remote", remote), ("direct", direct)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    server.stop()
    rates = {k: args.requests / v for k, v in best.items()}
    summary = {
        "args": asdict(args),
        "ratings_per_s_remote": round(rates["remote"], 2),
        "ratings_per_s_direct": round(rates["direct"], 2),
        "ratio": round(rates["remote"] / rates["direct"], 3),
        "max_abs_diff_vs_local": diff,
        "http_requests": rater.requests_sent,
        "torch_threads": torch.get_num_threads(),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", summary)
    verdict = "meets" if summary["ratio"] >= 0.9 else "misses"
    md = [
        "# RemoteRater throughput",
        "",
        f"Tiny Llama (hidden {args.hidden}, {args.layers} layers), mode `{args.mode}`, {args.requests} requests,"
        f" concurrency {args.concurrency}, best of {args.repeats} rounds, {summary['torch_threads']} torch threads.",
        "",
        "| path | ratings/s |",
        "|---|---|",
        f"| remote (RemoteRater over HTTP) | {summary['ratings_per_s_remote']} |",
        f"| direct (the server's work in-process) | {summary['ratings_per_s_direct']} |",
        "",
        f"Ratio remote / direct: {summary['ratio']} ({verdict} the 0.9 target). Largest difference of the remote"
        f" distributions from the local agents': {diff:.2e}.",
    ]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
