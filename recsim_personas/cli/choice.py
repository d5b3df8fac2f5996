"""``recsim-personas choice fit`` (the choice model and session behaviour, fitted on a split's logs) and
``recsim-personas fidelity`` (the simulator's fidelity suite)."""

from __future__ import annotations

import argparse
from typing import Any

from recsim_personas.cli._argtypes import positive_int
from recsim_personas.cli._options import add_config_options
from recsim_personas.cli._output import emit


def register_choice(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``choice fit`` and ``fidelity`` (``common`` brings --json, -v, --no-progress)."""
    from recsim_personas.choice.config import ChoiceConfig

    group = sub.add_parser("choice", help="the simulated users' choice model, fitted on the logs")
    choice_sub = group.add_subparsers(dest="choice_command", required=True, metavar="COMMAND")
    fit = choice_sub.add_parser(
        "fit",
        parents=[common],
        help="fit the choice model and the session behaviour on a split's history",
        description="Fit P(watch | user, movie) on the split's history (positives: each user's next ratings in"
        " time; negatives: sampled movies it never rated) and the session behaviour on its timestamps (session"
        " starts, continue/exit, churn; maximum likelihood), and save both as a choice/ directory with a"
        " manifest. Pass it to simulate/benchmark/fidelity with --choice DIR.",
    )
    fit.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    fit.add_argument("--out", required=True, help="the choice-model directory to create")
    fit.add_argument(
        "--overwrite", action="store_true", help="replace an existing choice model at --out (only a choice model)"
    )
    fit.add_argument("--gap-minutes", type=float, default=30.0, help="the longest pause within a session (default 30)")
    options = add_config_options(fit.add_argument_group("fitting (ChoiceConfig)"), ChoiceConfig)
    fit.set_defaults(func=cmd_choice_fit, choice_options=options)

    fid = sub.add_parser(
        "fidelity",
        parents=[common],
        help="the simulator's fidelity suite: preference alignment and behaviour vs the real users",
        description="Score the simulated users of a split (a rater + a choice model + sessions) where the logs"
        " can tell: preference alignment (each user's real test movies among 1, 3 and 9 random movies per real"
        " one; accuracy, F1 and ROC-AUC beside random, popularity, item-kNN and EASE), the rating histograms,"
        " and behaviour statistics real vs simulated (items per session, sessions per user, genre shares,"
        " popularity, off-taste picks) under each --policies, with the replay check of each policy.",
    )
    fid.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    fid.add_argument(
        "--rater",
        default="bias",
        help="the users' rater: bias (default), another classical one, agents:DIR or userllm:DIR",
    )
    fid.add_argument("--choice", default="fitted", help="fitted (default), handset, or a directory from `choice fit`")
    fid.add_argument(
        "--policies", default="random,pop", help="policies whose simulations are compared (default random,pop)"
    )
    fid.add_argument("--seeds", default="0", help="comma-separated simulation seeds (default 0)")
    fid.add_argument("--days", type=positive_int, default=30, help="simulated days per seed (default 30)")
    fid.add_argument(
        "--users",
        type=positive_int,
        default=None,
        help="preference alignment on a seeded sample of this many users (persona agents rate tens of movies a"
        " second; the 200 ML-100K users need about 180,000 ratings over the three ratios)",
    )
    fid.add_argument("--out", default=None, help="directory for fidelity.md/.json/.png")
    fid.set_defaults(func=cmd_fidelity)


def cmd_choice_fit(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from recsim_personas.artifacts import read_manifest
    from recsim_personas.choice.fit import fit_choice
    from recsim_personas.choice.model import CHOICE
    from recsim_personas.data import load_split
    from recsim_personas.envs.calibration import fit_split_sessions

    config = args.choice_options.build(args)
    split = load_split(args.split)
    model = fit_choice(split, config)
    sessions = fit_split_sessions(split, gap_minutes=args.gap_minutes)  # None: no timestamps, hand-set sessions
    if args.overwrite and Path(args.out).exists():
        # refit first, then replace: only a directory that is a choice model is removed
        read_manifest(args.out, CHOICE)
        shutil.rmtree(args.out)
    model.save(args.out, sessions=None if sessions is None else sessions.to_dict())
    v = model.report["validation"]
    payload: dict[str, Any] = {
        "out": args.out,
        "split_id": split.split_id,
        "choice": model.report,
        "sessions": None if sessions is None else sessions.to_dict(),
    }
    text = "\n".join(
        [
            f"choice model fitted on {model.report['positives']:,} next choices and {model.report['negatives']:,}"
            f" sampled non-choices of {model.report['history_users']} users in {model.report['seconds']:.1f} s;"
            f" saved to {args.out}",
            f"validation ({v['n']:,} choices): ROC-AUC {v['fitted']['roc_auc']:.3f} (hand-set formula"
            f" {v['handset']['roc_auc']:.3f}), mean log-likelihood {v['fitted']['log_likelihood']:.3f}"
            f" (hand-set {v['handset']['log_likelihood']:.3f})",
            (
                f"sessions: hand-set ({split.config.dataset} has no timestamps)"
                if sessions is None
                else "sessions fitted: " + ", ".join(sessions.fitted)
            ),
        ]
    )
    emit(args, payload, text)
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from recsim_personas.errors import ConfigError
    from recsim_personas.fidelity.suite import render_fidelity, run_fidelity, write_fidelity

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}.") from exc
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must be non-negative integers, got {args.seeds!r}.")
    report = run_fidelity(
        args.split,
        rater=args.rater,
        choice=args.choice,
        policies=args.policies,
        seeds=seeds,
        days=args.days,
        max_users=args.users,
        progress=not args.no_progress,
    )
    files = write_fidelity(report, args.out) if args.out else {}
    payload = {k: v for k, v in report.items() if k != "alignment"}
    payload["files"] = {k: str(v) for k, v in files.items()}
    text = render_fidelity(report)
    if files:
        text += "\nreport: " + ", ".join(str(p) for p in files.values())
    emit(args, payload, text)
    return 0
