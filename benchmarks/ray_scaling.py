"""Ray scaling of the gap benchmark's simulations: local backend vs Ray with 1 and with 2 workers, same figures.

The simulation part of the gap benchmark (``--policies`` × ``--seeds`` × ``--days`` on the split's users, the rater
and the fitted choice model) is run three times in one process: on the local backend, then in one Ray session
(``num_cpus=2``) with at most 1 and at most 2 tasks at a time. RecBole models are reused from ``--models-dir``
(``build_policy(..., models_dir=...)``; the script refuses to start when a model there does not match, so nothing
is retrained or overwritten). The Ray session is warmed up first (every worker imports torch/RecBole and runs each
policy for one day); the warm-up is reported, not timed into the figures. Reported: wall seconds of each setting (the
fastest of ``--repeats`` runs; the first of each pays one-time costs), the
speed-up of 2 workers over 1 (target ≥ 1.6×) and whether all three runs gave identical figures (every metric per
seed, the watch logs and the sessions). Prints one JSON object and writes ``report.md`` / ``report.json`` into
``--out``.

    .venv/bin/python benchmarks/ray_scaling.py --out runs/bench/ray-scaling
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recsim_personas.recommenders.gap_policies import RECBOLE_PREFIX, build_policy, parse_policies, policy_config
from recsim_personas.recommenders.simulated import evaluate_policies

ENV_ID = "recsim_personas/MovieLens-v1"
TARGET_SPEEDUP = 1.6


@dataclass
class Args:
    split: str = "runs/bench/choice/split-seed0"
    """split directory"""
    models_dir: str = "runs/gap-fitted/models"
    """trained RecBole models of the gap benchmark (reused, never retrained)"""
    rater: str = "bias"
    choice: str = "fitted"
    policies: str = "random,pop,recbole:BPR,recbole:LightGCN,recbole:SASRec"
    seeds: str = "0,1,2"
    days: int = 30
    slate_size: int = 10
    repeats: int = 2
    """timed Ray runs per worker count (the fastest is reported; all runs' figures are checked)"""
    out: str = "runs/bench/ray-scaling"


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def policies(args: Args, split, world) -> list:
    from recsim_personas.recommenders.recbole_policy import read_model_manifest

    out = []
    for name in parse_policies(args.policies):
        if name.startswith(RECBOLE_PREFIX):
            target = Path(args.models_dir) / name[len(RECBOLE_PREFIX) :]
            manifest = read_model_manifest(target)  # raises when there is no model
            if manifest["split_id"] != split.split_id or manifest["config"] != policy_config(name).to_dict():
                raise SystemExit(
                    f"{target} was not trained on this split with the benchmark's settings; not retraining."
                )
        out.append(build_policy(name, split, world, slate_size=args.slate_size, seed=0, models_dir=args.models_dir))
    return out


def figures(sims) -> list:
    """Everything a run produced except its timing, comparable with ==."""
    return [
        {
            "metrics": {m: v.to_dict() for m, v in s.metrics.items()},
            "totals": list(s.totals),
            "watched": [{k: np.asarray(v).tolist() for k, v in w.items()} for w in s.watched],
            "sessions": [{k: np.asarray(v).tolist() for k, v in x.items()} for x in s.sessions],
            "shown": [list(s.shown_test), list(s.shown_total)],
        }
        for s in sims
    ]


def warm() -> None:
    import recsim_personas.envs.model
    import recsim_personas.recommenders.recbole_policy  # noqa: F401

    time.sleep(2.0)


def main() -> None:
    import ray

    from recsim_personas.data import load_split
    from recsim_personas.envs.world import make_world

    args = parse()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    split = load_split(args.split)
    world = make_world(split, args.rater, choice=args.choice)
    pols = policies(args, split, world)
    common = {"days": args.days, "world": world, "test": split.test, "progress": False}

    local_raw = []
    for _ in range(args.repeats):  # the first run pays first-call costs too: the fastest is reported
        t0 = time.perf_counter()
        local = evaluate_policies(ENV_ID, pols, seeds, **common)
        local_raw.append(round(time.perf_counter() - t0, 3))
    seconds = {"local": min(local_raw)}
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # both worker processes import torch/RecBole and the package (the sleep keeps them busy at the same time,
        # so Ray starts two), then run every policy for one day
        ray.get([ray.remote(num_cpus=1)(warm).remote() for _ in range(2)])
        evaluate_policies(ENV_ID, pols, seeds[:1], backend="ray", num_workers=2, **{**common, "days": 1})
        warmup = time.perf_counter() - t0
        runs, raw = {}, {1: [], 2: []}
        for _ in range(args.repeats):  # the first timed Ray run still pays one-time costs: the fastest is reported
            for workers in (1, 2):
                t0 = time.perf_counter()
                runs[(workers, _)] = evaluate_policies(
                    ENV_ID, pols, seeds, backend="ray", num_workers=workers, **common
                )
                raw[workers].append(round(time.perf_counter() - t0, 3))
        seconds.update({f"ray_{w}": min(raw[w]) for w in (1, 2)})
    finally:
        ray.shutdown()
    reference = figures(local)
    identical = {f"ray_{w}": all(figures(runs[(w, r)]) == reference for r in range(args.repeats)) for w in (1, 2)}
    speedup = seconds["ray_1"] / seconds["ray_2"]
    result = {
        "policies": [s.policy for s in local],
        "seeds": list(seeds),
        "days": args.days,
        "users": world.n_users,
        "units": len(pols) * len(seeds),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "seconds_per_repeat": {"local": local_raw, **{f"ray_{w}": raw[w] for w in (1, 2)}},
        "ray_startup_and_warmup_seconds": round(warmup, 3),
        "speedup_2_over_1": round(speedup, 3),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "identical_to_local": identical,
        "likes_per_user": {s.policy: s.metrics["likes_per_user"].mean for s in local},
        "ray_version": ray.__version__,
        "args": asdict(args),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = "meets" if result["meets_target"] else "misses"
    same = "identical to" if all(identical.values()) else "DIFFERENT from"
    md = [
        "# Ray scaling of the gap benchmark's simulations",
        "",
        f"{len(pols)} policies × {len(seeds)} seeds × {args.days} days, {world.n_users} users"
        f" ({result['units']} independent runs).",
        "",
        "| backend | seconds |",
        "|---|---|",
        *(f"| {k} | {v:.2f} |" for k, v in seconds.items()),
        "",
        f"Speed-up of 2 Ray workers over 1: {speedup:.2f}× ({verdict} the {TARGET_SPEEDUP}× target). Ray start-up and"
        f" warm-up (not in the figures above): {warmup:.1f} s. The Ray runs' figures are {same} the local run's.",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
