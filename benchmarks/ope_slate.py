"""Off-policy estimators of slate recommenders against the simulator's truth, on the ML-100K protocol split.

Two logging arms on one world (rater ``bias``, the fitted choice model and sessions):

1. a Plackett-Luce behaviour over popularity and affinity scores, with targets from the behaviour itself
   (distance 0) through sharper PL policies to greedy top-k and the uniformly random slate;
2. a uniformly random behaviour, the one case where the pseudo-inverse estimator is computed (its closed form).

Per arm :func:`~recsim_personas.ope.evaluate_offpolicy` logs ``pages`` pages per seed with exact propensities,
runs IPS, SNIPS, IIPS, RIPS, DM, DR (and PI) for every target, and compares with the simulator's exact value of
the target at the logged contexts. Prints one JSON object (bias, RMSE, relative RMSE, relative error and
interval coverage per estimator and target; the goal: DR or the best estimator within 10% relative error on at
least 3 targets) and writes ``report.md`` / ``report.json`` (and each arm's report with its plot) into ``--out``.
Per-seed results are reused when the script is run again with the same settings.

    RECSIM_PERSONAS_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/ope_slate.py --out runs/bench/ope
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Args:
    split: str = "runs/bench/choice/split-seed0"
    """the ML-100K protocol split (from `recsim-personas data prepare` or benchmarks/choice_fidelity.py)"""
    rater: str = "bias"
    """the simulated users' rater"""
    choice: str = "fitted"
    """the simulated users' choice model (fitted on the split with its sessions)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    """root seeds: each logs its own pages"""
    pages: int = 5000
    """logged pages per seed and arm"""
    behaviour: str = "pl:0.5*pop+affinity"
    """the first arm's behaviour policy"""
    targets: list[str] = field(
        default_factory=lambda: [
            "pl:0.5*pop+affinity",
            "pl:0.5*pop+affinity@0.5",
            "pl:affinity@0.5",
            "greedy:affinity",
            "greedy:pop",
            "pl:uniform",
        ]
    )
    """the first arm's targets, from the behaviour itself to far from it"""
    uniform_targets: list[str] = field(
        default_factory=lambda: ["pl:uniform", "pl:0.5*pop+affinity", "pl:affinity@0.5", "greedy:affinity"]
    )
    """the uniform-logging arm's targets"""
    target_error: float = 0.10
    """the relative RMSE each estimator is judged against"""
    out: str = "runs/bench/ope"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default=defaults.split)
    p.add_argument("--rater", default=defaults.rater)
    p.add_argument("--choice", default=defaults.choice)
    p.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds)
    p.add_argument("--pages", type=int, default=defaults.pages)
    p.add_argument("--behaviour", default=defaults.behaviour)
    p.add_argument("--targets", nargs="+", default=defaults.targets)
    p.add_argument("--uniform-targets", nargs="+", default=defaults.uniform_targets)
    p.add_argument("--target-error", type=float, default=defaults.target_error)
    p.add_argument("--out", default=defaults.out)
    return Args(**vars(p.parse_args()))


def arm_figures(report) -> dict:
    """The figures of one arm: per target its truth, distance and each estimator's errors."""
    s = report.summary
    keep = ("estimate", "bias", "rmse", "relative_rmse", "relative_error", "coverage", "seeds", "meets_target")
    return {
        "behaviour": report.config.behaviour,
        "behaviour_value": s["behaviour_value"],
        "seconds": report.seconds,
        "targets": {
            name: {
                "truth": t["truth"],
                "truth_mc_se": t["truth_mc_se"],
                "on_policy": t["on_policy"],
                "kl_first": t["distance"]["kl_first"],
                "ess_item": t["distance"]["ess_item"],
                "best": t["best"],
                "estimators": {
                    e: {k: v for k, v in row.items() if k in keep} if row["seeds"] else {"reason": row["reason"]}
                    for e, row in t["estimators"].items()
                },
            }
            for name, t in s["targets"].items()
        },
        "met": s["met"],
        "findings": report.findings(),
    }


def main(args: Args) -> dict:
    from recsim_personas.envs.world import make_world
    from recsim_personas.ope import OPEConfig, evaluate_offpolicy

    out = Path(args.out)
    t0 = time.perf_counter()
    world = make_world(args.split, args.rater, choice=args.choice)
    world_seconds = time.perf_counter() - t0
    arms = {
        "pl": OPEConfig(
            behaviour=args.behaviour,
            targets=tuple(args.targets),
            seeds=tuple(args.seeds),
            pages=args.pages,
            target_error=args.target_error,
        ),
        "uniform": OPEConfig(
            behaviour="pl:uniform",
            targets=tuple(args.uniform_targets),
            seeds=tuple(args.seeds),
            pages=args.pages,
            target_error=args.target_error,
        ),
    }
    figures, reports = {}, {}
    for name, config in arms.items():
        report = evaluate_offpolicy(world, config=config, out=out / name)
        report.save(out / name)
        reports[name], figures[name] = report, arm_figures(report)

    # the goal on the first arm: DR, or per target the estimator with the lowest relative RMSE, within the bar
    main_arm = figures["pl"]["targets"]
    dr_ok = [t for t, row in main_arm.items() if row["estimators"]["dr"].get("meets_target")]
    best_ok = [t for t, row in main_arm.items() if row["best"] and row["estimators"][row["best"]].get("meets_target")]
    result = {
        "args": asdict(args),
        "world": reports["pl"].world,
        "world_seconds": world_seconds,
        "seconds": time.perf_counter() - t0,
        "goal": {
            "statement": f"DR (or the best estimator) within {args.target_error:.0%} relative RMSE on >= 3 targets",
            "dr_targets": dr_ok,
            "best_targets": best_ok,
            "met": len(dr_ok) >= 3 or len(best_ok) >= 3,
        },
        "arms": figures,
    }
    write_reports(out, result, reports)
    return result


def write_reports(out: Path, result: dict, reports: dict) -> None:
    from recsim_personas._io import atomic_write_text, write_json

    goal = result["goal"]
    lines = [
        "# Off-policy evaluation of slate recommenders against the simulator (ML-100K)",
        "",
        f"World: {result['world']['n_users']} users × {result['world']['n_items']} items, rater"
        f" {result['world']['rater']}, choice {result['world']['choice']}; seeds"
        f" {', '.join(map(str, result['args']['seeds']))}; {result['args']['pages']} pages per seed and arm;"
        f" {result['seconds']:.0f} s in all (world {result['world_seconds']:.0f} s).",
        "",
        f"**Goal** ({goal['statement']}): {'met' if goal['met'] else 'not met'} — DR on {len(goal['dr_targets'])},"
        f" the best estimator on {len(goal['best_targets'])} of {len(result['arms']['pl']['targets'])} targets of the"
        " PL-logging arm.",
        "",
    ]
    for name, report in reports.items():
        title = "PL behaviour" if name == "pl" else "uniform behaviour (the pseudo-inverse's case)"
        body = report.to_markdown().split("\n", 2)[2].replace("\n## ", "\n### ")  # its title dropped
        lines += [f"## Arm: {title}", "", f"![relative RMSE vs distance]({name}/report.png)", "", body]
    atomic_write_text(out / "report.md", "\n".join(lines))
    write_json(out / "report.json", result)


if __name__ == "__main__":
    print(json.dumps(main(parse()), indent=2, default=str))
