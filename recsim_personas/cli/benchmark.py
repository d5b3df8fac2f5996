"""The ``recsim-personas benchmark`` subcommand: offline vs simulated metrics of several recommenders.

Registered by :mod:`recsim_personas.cli` with :func:`register_benchmark`. The options are generated from
:class:`~recsim_personas.recommenders.gap.GapConfig` and :class:`~recsim_personas.envs.session.SessionConfig`
(their defaults are stated there only); registering imports neither torch, pandas nor RecBole, so
``recsim-personas --help`` stays fast; the handler imports them when it runs.

Exit status: 0 when every policy finished; 1 when the report was written but some policies failed (the report
lists them with their errors; the others' figures are complete); 2 on bad input (nothing run).
"""

from __future__ import annotations

import argparse

from recsim_personas.cli._options import add_config_options
from recsim_personas.cli.simulate import add_session_options, session_config_from

EXIT_POLICY_FAILED = 1
"""Exit status when the report was written but at least one policy failed."""


def register_benchmark(
    subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``benchmark`` subcommand to ``subparsers`` (``common_parent`` brings --json, -v, --no-progress)."""
    from recsim_personas.recommenders.gap import GapConfig

    p = subparsers.add_parser(
        "benchmark",
        parents=[common_parent],
        help="offline vs simulated metrics of recommenders (the gap report)",
        description="For each policy (random, pop, recbole:<Model> — any RecBole general or sequential model,"
        " trained on the split's history —, rl:DIR — an RL policy trained on the split): Recall/NDCG/MRR@10 on the"
        " held-out test part, then --days simulated"
        " days of the split's users per seed (mean rating, like rate, watch rate, pages per session, exit rate,"
        " users still returning, liked watches per user, with confidence intervals over seeds). Prints both"
        " rankings, Kendall tau, per-model deltas and a fidelity check of the simulator; --out writes gap.md,"
        " gap.json, gap.png and the trained models (reused by later runs with the same settings). A policy that"
        " fails is listed in the report and the others go on; the exit status is then 1. --backend ray runs the"
        " simulations as Ray tasks (--workers at a time, on --ray-address or a local Ray session) with the same"
        " figures.",
    )
    p.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    group = p.add_argument_group("the benchmark (GapConfig; defaults from the dataclass, see recommenders/gap.py)")
    options = add_config_options(group, GapConfig, exclude=("k", "session"))
    p.add_argument("--out", default=None, help="directory for gap.md/.json/.png and models/ (trained RecBole models)")
    add_session_options(p)
    p.set_defaults(func=cmd_benchmark, gap_options=options)
    return p


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the gap benchmark and print the report (JSON with ``--json``); see the module docstring for the
    exit status."""
    import sys
    from pathlib import Path

    from recsim_personas.cli._output import emit_report
    from recsim_personas.errors import ConfigError
    from recsim_personas.recommenders.gap import GapConfig, run_gap_benchmark

    if args.gap_options.given(args).get("trace_users") is not None and not args.out:
        raise ConfigError("--trace-users writes the traces into OUT/traces; it needs --out.")
    slate_size = args.gap_options.given(args).get("slate_size")
    if slate_size is not None and slate_size < GapConfig.k:
        raise ConfigError(
            f"--slate-size must be at least {GapConfig.k} (the offline metrics are @{GapConfig.k}), got {slate_size}."
        )
    # validates every policy name, the seeds and the session options before any work; --rater is resolved by the
    # simulation factory (make_world): classical raters by name, agents:DIR / userllm:DIR load trained agents
    base = None
    if args.session_config or args.session_options.given(args):
        # single --session-* flags apply on top of the sessions that go with the choice model
        from recsim_personas.envs.world import choice_sessions

        base = choice_sessions(args.gap_options.given(args).get("choice", GapConfig.choice), args.split)
    config = args.gap_options.build(args, session=session_config_from(args, base))
    report = run_gap_benchmark(
        args.split,
        config,
        models_dir=Path(args.out) / "models" if args.out else None,
        progress=not args.no_progress,
    )
    emit_report(args, report)
    if report.failures:
        names = ", ".join(f"{f.name} ({f.error})" for f in report.failures)
        sys.stderr.write(
            f"error: {len(report.failures)} of {len(config.policies)} policies failed: {names}; the report lists"
            " their errors and the other policies' figures.\n"
        )
        return EXIT_POLICY_FAILED
    return 0
