"""Offline vs simulated on the ML-100K protocol split: Random, Popular, RecBole BPR, LightGCN and SASRec.

Top to bottom: prepare (or load) the split, build the simulation world (bias rater fitted on the split's
history), then per policy: build it (RecBole models are trained on the history, or reused from
``OUT/models`` when they match), its offline Recall/NDCG/MRR@10 on the held-out test part (and RecBole's own
evaluator for general RecBole models, which must agree to 3 decimals), and ``evaluate_policy`` over the seeds
(``--days`` simulated days each). Finally the gap report (both rankings, Kendall τ, deltas, reading,
simulator fidelity, failed policies). Prints one JSON object and writes ``gap.md`` / ``gap.json`` /
``gap.png`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/gap_ml100k.py --split runs/demo/split
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recsim_personas.recommenders.gap import GapConfig  # light: the benchmark's defaults are stated there


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (default: $RECSIM_PERSONAS_DATA_DIR, then cache/download)"""
    split: str | None = None
    """an existing split directory (default: prepare the ML-100K protocol split, seed 0, into OUT/split)"""
    policies: list[str] = field(default_factory=lambda: list(GapConfig.policies))
    """policies to compare"""
    seeds: list[int] = field(default_factory=lambda: list(GapConfig.seeds))
    """simulation seeds (the first also seeds RecBole's training)"""
    days: int = GapConfig.days
    """simulated days per seed"""
    epochs: int | None = GapConfig.epochs
    """training epochs of every RecBole model (default: recsim_personas.recommenders.gap_policies.RECBOLE_DEFAULTS)"""
    rater: str = GapConfig.rater
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

    from recsim_personas.data import ProtocolConfig, prepare_split
    from recsim_personas.data.protocol import Split
    from recsim_personas.recommenders.gap import run_gap_benchmark

    out = Path(args.out)

    # 1. the split (the simulated users' rater is fitted on its train + background ratings, never the test part)
    if args.split:
        split = Split.load(args.split)
    else:
        split, _ = prepare_split(ProtocolConfig(dataset="ml-100k", seed=0), out / "split", data_dir=args.data_dir)

    # 2. per policy: build/train, offline metrics (+ RecBole's evaluator for general RecBole models), simulated
    #    metrics over the seeds; then the report with the simulator's fidelity where ground truth exists
    config = GapConfig(policies=args.policies, rater=args.rater, seeds=args.seeds, days=args.days, epochs=args.epochs)
    report = run_gap_benchmark(split, config, models_dir=out / "models")
    # a policy that failed is listed in report.failures (and in gap.md / gap.json); the others' figures are complete

    # 3. how far our offline metrics are from RecBole's own evaluator (must agree to 3 decimals)
    agreement = {
        r.name: max(abs(r.recbole[f"{m}@10"] - r.offline[m]) for m in ("recall", "ndcg", "mrr"))
        for r in report.results
        if r.recbole is not None
    }
    paths = report.save(out)
    payload = report.to_dict()
    payload.update(
        args=asdict(args),
        recbole_agreement_max_abs_diff=agreement,
        machine={"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        files={k: str(v) for k, v in paths.items()},
    )
    print(json.dumps(payload, default=str))
