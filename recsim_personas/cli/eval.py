"""The ``recsim-personas eval`` subcommand: raters' fidelity on a split's test ratings — classical raters (fitted
on the split's history) and trained agents (``agents:DIR``, ``userllm:DIR``: loaded as they are)."""

from __future__ import annotations

import argparse

from recsim_personas.cli._output import emit_report


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from recsim_personas.agents.classical import make_rater
    from recsim_personas.agents.fidelity import evaluate_fidelity
    from recsim_personas.data.protocol import Split
    from recsim_personas.envs.world import load_agents, parse_rater

    specs = [n.strip() for n in args.raters.split(",") if n.strip()]
    kinds = [parse_rater(s)[0] for s in specs]  # validates every entry before any work
    classical = {i: make_rater(s) for i, (s, k) in enumerate(zip(specs, kinds, strict=True)) if k == "classical"}
    split = Split.load(args.split)
    # trained agents are loaded as they are (and checked against the split) before any classical rater is fitted
    trained = {i: load_agents(s, split) for i, (s, k) in enumerate(zip(specs, kinds, strict=True)) if k != "classical"}
    history = split.history()
    for rater in tqdm(classical.values(), desc="fitting", unit="rater", disable=args.no_progress):
        rater.fit(history)
    raters = classical | trained
    report = evaluate_fidelity(
        [raters[i] for i in range(len(specs))], split.test, split_id=split.split_id, progress=not args.no_progress
    )
    emit_report(args, report)
    return 0


def register_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``eval`` (``common`` brings --json, -v, --no-progress)."""
    ev = sub.add_parser(
        "eval",
        parents=[common],
        help="score raters (classical ones fitted on a split's history, trained agents) on its test ratings",
        description="Fit each classical rater on the split's history (train + background ratings; no test"
        " rating), load each trained agent (agents:DIR, userllm:DIR; checked against the split), and report"
        " RMSE/MAE of the expected and the most likely rating, and rating-histogram distances.",
    )
    ev.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    ev.add_argument(
        "--raters",
        default="global,user,item,bias,mf",
        help="comma-separated: global,user,item,bias,mf,knn,blend, agents:DIR (persona agents or a USER-LLM"
        " agent), userllm:DIR (a USER-LLM agent)",
    )
    ev.add_argument("--out", default=None, help="directory for fidelity.md/.json/.png")
    ev.set_defaults(func=cmd_eval)
