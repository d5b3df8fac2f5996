"""The ``recsim-personas benchmark`` subcommand: offline vs simulated metrics of several recommenders.

Registered by :mod:`recsim_personas.cli` with :func:`register_benchmark`. Only ``argparse`` is imported at
module level, so registering the subcommand keeps ``recsim-personas --help`` fast (no torch, pandas or
RecBole); the handler imports them when it runs.
"""

from __future__ import annotations

import argparse

from recsim_personas.cli._argtypes import positive_int, seeds_arg

DEFAULT_POLICIES = "random,pop,recbole:BPR,recbole:LightGCN,recbole:SASRec"


def register_benchmark(
    subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``benchmark`` subcommand to ``subparsers`` (``common_parent`` brings --json, -v, --no-progress)."""
    p = subparsers.add_parser(
        "benchmark",
        parents=[common_parent],
        help="offline vs simulated metrics of recommenders (the gap report)",
        description="For each policy (random, pop, recbole:<Model> — any RecBole general or sequential model,"
        " trained on the split's history): Recall/NDCG/MRR@10 on the held-out test part, then --days simulated"
        " days of the split's users per seed (mean rating, like rate, watch rate, pages per session, exit rate,"
        " users still returning, liked watches per user, with confidence intervals over seeds). Prints both"
        " rankings, Kendall tau, per-model deltas and a fidelity check of the simulator; --out writes gap.md,"
        " gap.json, gap.png and the trained models (reused by later runs with the same settings).",
    )
    p.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    p.add_argument(
        "--rater",
        default="bias",
        help="the simulated users' rater: bias (default), another classical rater, or agents:DIR (persona agents"
        " from `agents train --out DIR`)",
    )
    p.add_argument("--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default: {DEFAULT_POLICIES})")
    p.add_argument("--seeds", type=seeds_arg, default=(0, 1, 2), help="simulation seeds (default: 0,1,2)")
    p.add_argument("--days", type=positive_int, default=30, help="simulated days per seed (default: 30)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs of every RecBole model")
    p.add_argument("--slate-size", type=positive_int, default=10, help="items per page (default: 10)")
    p.add_argument("--out", default=None, help="directory for gap.md/.json/.png and models/ (trained RecBole models)")
    p.set_defaults(func=cmd_benchmark)
    return p


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the gap benchmark and print the report (JSON with ``--json``)."""
    from pathlib import Path

    from recsim_personas.cli._output import emit_report
    from recsim_personas.errors import ConfigError
    from recsim_personas.recommenders.gap import parse_policies, run_gap_benchmark

    # --rater is resolved by the simulation factory (make_world): classical raters by name, agents:DIR loads the
    # persona agents.
    policies = parse_policies(args.policies)  # validates every name before any work
    if args.slate_size < 10:
        raise ConfigError(f"--slate-size must be at least 10 (the offline metrics are @10), got {args.slate_size}.")
    report = run_gap_benchmark(
        args.split,
        policies,
        rater=args.rater,
        seeds=args.seeds,
        days=args.days,
        slate_size=args.slate_size,
        epochs=args.epochs,
        models_dir=Path(args.out) / "models" if args.out else None,
        progress=not args.no_progress,
    )
    emit_report(args, report)
    return 0
