"""Classical raters on the paper's ML-100K protocol, over several user samples.

Prepares the protocol split for each seed, fits every classical rater on the split's history (train +
background, no test rating) and scores it on the test ratings. Prints one JSON object and writes
``report.md`` / ``report.json`` into ``--out``. The spread over seeds shows how much of a difference between
raters is sampling noise.

    .venv/bin/python benchmarks/classical_fidelity.py --seeds 0 1 2 3 4 --out runs/bench/classical
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (default: $RECSIM_PERSONAS_DATA_DIR, then cache/download)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """user-sample seeds"""
    raters: list[str] = field(default_factory=lambda: ["global", "user", "item", "bias", "mf", "knn", "blend"])
    """classical raters to score"""
    out: str = "runs/bench/classical"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=defaults.data_dir)
    p.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds)
    p.add_argument("--raters", nargs="+", default=defaults.raters)
    p.add_argument("--out", default=defaults.out)
    return Args(**vars(p.parse_args()))


if __name__ == "__main__":
    args = parse()
    from recsim_personas.agents import evaluate_fidelity, make_rater
    from recsim_personas.data import ProtocolConfig, prepare_split

    out = Path(args.out)
    per_seed = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        split, _ = prepare_split(ProtocolConfig(seed=seed), out / f"split-seed{seed}", data_dir=args.data_dir)
        t_split = time.perf_counter() - t0
        history = split.history()
        raters, fit_seconds = [], {}
        for name in args.raters:
            t0 = time.perf_counter()
            raters.append(make_rater(name).fit(history))
            fit_seconds[name] = time.perf_counter() - t0
        report = evaluate_fidelity(raters, split.test)
        per_seed.append(
            {
                "seed": seed,
                "split_seconds": t_split,
                "train": len(split.train),
                "test": len(split.test),
                "raters": {r.rater: {**asdict(r), "fit_seconds": fit_seconds[r.rater]} for r in report.rows},
            }
        )
        print(f"seed {seed}: " + ", ".join(f"{r.rater} {r.rmse_expected:.4f}" for r in report.rows), file=sys.stderr)

    metrics = [
        "rmse_expected",
        "mae_expected",
        "rmse_mode",
        "mae_mode",
        "mae_median",
        "w1",
        "w1_user",
        "nll",
        "fit_seconds",
    ]
    summary = {}
    for name in args.raters:
        summary[name] = {}
        for m in metrics:
            vals = np.array([s["raters"][name][m] for s in per_seed])
            summary[name][m] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    result = {"benchmark": "classical_fidelity", "args": asdict(args), "summary": summary, "per_seed": per_seed}

    lines = [
        "# Classical raters on the ML-100K protocol",
        "",
        f"Seeds {args.seeds}; fit on train + background, scored on the test ratings. Mean ± std over seeds.",
        "",
        "| rater | RMSE (mean) | MAE (mean) | RMSE (mode) | MAE (mode) | MAE (median) | W1 | W1 per user | NLL"
        " | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        cells = [f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m in metrics[:-1]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['fit_seconds']['mean']:.2f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
