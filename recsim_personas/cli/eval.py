"""The ``recsim-personas eval`` subcommand: classical raters' fidelity on a split's test ratings."""

from __future__ import annotations

import argparse

from recsim_personas.cli._output import emit_report


def cmd_eval(args: argparse.Namespace) -> int:
    from recsim_personas.agents.classical import make_rater
    from recsim_personas.agents.fidelity import evaluate_fidelity
    from recsim_personas.data.protocol import Split

    names = [n.strip() for n in args.raters.split(",") if n.strip()]
    raters = [make_rater(n) for n in names]  # validates every name before any work
    split = Split.load(args.split)
    report = evaluate_fidelity(
        raters, split.test, fit_on=split.history(), split_id=split.split_id, progress=not args.no_progress
    )
    emit_report(args, report)
    return 0


def register_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``eval`` (``common`` brings --json, -v, --no-progress)."""
    ev = sub.add_parser(
        "eval",
        parents=[common],
        help="fit raters on a split's history and score them on its test ratings",
        description="Fit each rater on the split's history (train + background ratings; no test rating) and"
        " report RMSE/MAE of the expected and the most likely rating, and rating-histogram distances.",
    )
    ev.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    ev.add_argument(
        "--raters", default="global,user,item,bias,mf", help="comma-separated: global,user,item,bias,mf,knn,blend"
    )
    ev.add_argument("--out", default=None, help="directory for fidelity.md/.json/.png")
    ev.set_defaults(func=cmd_eval)
