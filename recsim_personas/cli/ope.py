"""The ``recsim-personas ope`` subcommand: off-policy estimates of slate recommenders against the simulator.

Registered by :mod:`recsim_personas.cli` with :func:`register_ope`. The options are generated from
:class:`~recsim_personas.ope.evaluate.OPEConfig` and :class:`~recsim_personas.envs.session.SessionConfig` (their
defaults are stated there only); registering imports numpy and tqdm, not scikit-learn, pandas or torch; the
handler imports the simulation when it runs.
"""

from __future__ import annotations

import argparse

from recsim_personas.cli._options import add_config_options
from recsim_personas.cli.simulate import RATER_HELP, add_session_options, session_config_from


def register_ope(
    subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``ope`` subcommand to ``subparsers`` (``common_parent`` brings --json, -v, --no-progress)."""
    from recsim_personas.ope.evaluate import OPEConfig

    p = subparsers.add_parser(
        "ope",
        parents=[common_parent],
        help="off-policy evaluation of slate recommenders, checked against the simulator",
        description="Log --pages pages per seed of a stochastic behaviour policy (Plackett-Luce over base scores)"
        " with exact propensities; estimate each target policy's value from the logs with IPS, SNIPS, IIPS, RIPS,"
        " DM, DR (and the pseudo-inverse estimator for a uniform behaviour); compare with the simulator's exact"
        " value of the target at the logged contexts. Prints bias, RMSE, relative error and interval coverage"
        " per estimator and target over the seeds, and how the error grows with the target's distance from the"
        " behaviour. Policies are specs KIND:SCORES[@TEMPERATURE], e.g. pl:0.5*pop+affinity@0.5, greedy:affinity,"
        " pl:uniform (bases: pop, affinity, bpr with --recbole-dir, rl with --rl-dir, uniform). --out writes"
        " report.md/.json/.png and per-seed results, reused when the command is run again with the same settings.",
    )
    p.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    p.add_argument("--rater", default="bias", help=RATER_HELP)
    p.add_argument(
        "--choice",
        default="fitted",
        help="how users choose: fitted (default; fitted on the split's history), handset, or a `choice fit` directory",
    )
    group = p.add_argument_group("the evaluation (OPEConfig; defaults from the dataclass, see ope/evaluate.py)")
    options = add_config_options(group, OPEConfig)
    p.add_argument("--out", default=None, help="directory for report.md/.json/.png and per-seed results (resumable)")
    p.add_argument("--save-logs", action="store_true", help="also write each seed's logs to OUT/logs/seed-<s>/")
    add_session_options(p)
    p.set_defaults(func=cmd_ope, ope_options=options)
    return p


def cmd_ope(args: argparse.Namespace) -> int:
    """Run the off-policy evaluation and print the report (JSON with ``--json``)."""
    from recsim_personas.cli._output import emit_report
    from recsim_personas.errors import ConfigError
    from recsim_personas.ope.evaluate import evaluate_offpolicy

    config = args.ope_options.build(args)  # validates the specs, seeds and sizes before any work
    if args.save_logs and not args.out:
        raise ConfigError("--save-logs needs --out DIR (the directory the logs go to).")
    session = None
    if args.session_config or args.session_options.given(args):
        # single --session-* flags apply on top of the sessions that go with the choice model
        from recsim_personas.envs.world import choice_sessions

        session = session_config_from(args, choice_sessions(args.choice, args.split))
    report = evaluate_offpolicy(
        args.split,
        config=config,
        rater=args.rater,
        choice=args.choice,
        session_config=session,
        out=args.out,
        save_logs=args.save_logs,
        progress=not args.no_progress,
    )
    emit_report(args, report)
    return 0
