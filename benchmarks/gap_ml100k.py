"""Offline vs simulated on the ML-100K protocol split: Random, Popular, RecBole BPR, LightGCN and SASRec.

Top to bottom: prepare (or load) the split, build the simulation world (bias rater fitted on the split's
history), then per policy: build it (RecBole models are trained on the history, or reused from
``OUT/models`` when they match), its offline Recall/NDCG/MRR@10 on the held-out test part (and RecBole's own
evaluator for general RecBole models, which must agree to 3 decimals), and ``evaluate_policy`` over the seeds
(``--days`` simulated days each). Finally the gap report (both rankings, Kendall τ, deltas, reading,
simulator fidelity). Prints one JSON object and writes ``gap.md`` / ``gap.json`` / ``gap.png`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/gap_ml100k.py --split runs/demo/split
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (default: $RECSIM_PERSONAS_DATA_DIR, then cache/download)"""
    split: str | None = None
    """an existing split directory (default: prepare the ML-100K protocol split, seed 0, into OUT/split)"""
    policies: list[str] = field(
        default_factory=lambda: ["random", "pop", "recbole:BPR", "recbole:LightGCN", "recbole:SASRec"]
    )
    """policies to compare"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """simulation seeds (the first also seeds RecBole's training)"""
    days: int = 30
    """simulated days per seed"""
    epochs: int | None = None
    """training epochs of every RecBole model (default: recsim_personas.recommenders.gap.RECBOLE_DEFAULTS)"""
    rater: str = "bias"
    """the simulated users' rater"""
    out: str = "runs/bench/gap"
    """report directory (trained models go to OUT/models and are reused when they match)"""


def parse() -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=d.data_dir)
    p.add_argument("--split", default=d.split)
    p.add_argument("--policies", nargs="+", default=d.policies)
    p.add_argument("--seeds", type=int, nargs="+", default=d.seeds)
    p.add_argument("--days", type=int, default=d.days)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--rater", default=d.rater)
    p.add_argument("--out", default=d.out)
    return Args(**vars(p.parse_args()))


if __name__ == "__main__":
    args = parse()
    t_start = time.perf_counter()

    from recsim_personas.data import ProtocolConfig, prepare_split
    from recsim_personas.data.protocol import Split
    from recsim_personas.envs import make_world
    from recsim_personas.recommenders.gap import (
        ENV_ID,
        GapReport,
        PolicyResult,
        build_policy,
        parse_policies,
        rater_fidelity,
        watched_test_fidelity,
    )
    from recsim_personas.recommenders.offline import evaluate_offline
    from recsim_personas.recommenders.recbole_policy import recbole_evaluate
    from recsim_personas.recommenders.simulated import evaluate_policy

    out = Path(args.out)
    names = parse_policies(args.policies)

    # 1. the split and the simulation world (rater fitted on train + background, never the test part)
    if args.split:
        split = Split.load(args.split)
    else:
        split, _ = prepare_split(ProtocolConfig(dataset="ml-100k", seed=0), out / "split", data_dir=args.data_dir)
    world = make_world(split, args.rater)

    # 2. per policy: build/train, offline metrics, RecBole's evaluator, simulated metrics over the seeds
    results, all_watched, agreement = [], [], {}
    for name in names:
        policy = build_policy(name, split, world, seed=args.seeds[0], epochs=args.epochs, models_dir=out / "models")
        t0 = time.perf_counter()
        offline = evaluate_offline(policy, world, split.test, k=10)
        recbole = None
        if name.startswith("recbole:") and policy.kind == "general":
            recbole = recbole_evaluate(policy, split)
            agreement[name] = max(abs(recbole[f"{m}@10"] - getattr(offline, m)) for m in ("recall", "ndcg", "mrr"))
        t1 = time.perf_counter()
        sim = evaluate_policy(ENV_ID, policy, args.seeds, days=args.days, world=world)
        all_watched += list(sim.watched)
        results.append(
            PolicyResult(
                name=name,
                offline={m: getattr(offline, m) for m in ("recall", "ndcg", "mrr")},
                simulated={m: v.to_dict() for m, v in sim.metrics.items()},
                recbole=recbole,
                train_seconds=getattr(policy, "train_seconds", None),
                offline_seconds=t1 - t0,
                simulated_seconds=sim.seconds,
                watched_test=watched_test_fidelity(sim.watched, split.test),
            )
        )

    # 3. the gap report, with the simulator's fidelity where ground truth exists
    report = GapReport(
        split_id=split.split_id,
        rater=world.rater_name,
        seeds=tuple(args.seeds),
        days=args.days,
        k=10,
        users=world.n_users,
        results=results,
        fidelity={
            "rater_on_test": rater_fidelity(world, split.test, seed=args.seeds[0]),
            "watched_test": watched_test_fidelity(all_watched, split.test),
        },
        wall_seconds=time.perf_counter() - t_start,
        versions={"numpy": np.__version__},
    )
    paths = report.save(out)
    payload = report.to_dict()
    payload.update(
        args=asdict(args),
        recbole_agreement_max_abs_diff=agreement,
        machine={"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        files={k: str(v) for k, v in paths.items()},
    )
    print(json.dumps(payload, default=str))
