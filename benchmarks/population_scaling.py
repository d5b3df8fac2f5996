"""Population scaling: world build time, resident memory, vector-env throughput and the cost of a simulated day
as the number of simulated users grows.

Builds the split's world (bias rater, fitted choice model) — its real users are the first size — then a
synthetic world (:func:`recsim_personas.envs.synthetic.synthetic_world`) for every other size, and the world of each
``--real-splits`` split (its own real users, e.g. all 6,040 of ML-1M from an ``ml-1m-implicit`` split). For each it
records the build time and the growth of the process's resident memory (psutil) from building the world and a
``MovieLensVectorEnv`` with ``--num-envs`` slots on it. Then, round-robin over ``--repeats`` rounds (median
reported), it times ``--steps`` vector steps of each size's env driven by a random policy (time inside
``step`` only), and the cost of one simulated day (``Population.run_days(1, RandomPolicy)`` of a fresh
population). From the per-user memory (the slope between the two largest sizes) and per-user day cost it
derives a plan for ``--plan-users`` users on workers of ``--worker-gib`` GiB. Prints one JSON object and writes
``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/population_scaling.py --real-splits runs/ml1m/split --out runs/bench/population_scaling
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Args:
    split: str = "runs/bench/choice/split-seed0"
    """the split directory (its users are the first size)"""
    sizes: list[int] = field(default_factory=lambda: [6040, 100_000])
    """synthetic population sizes measured beside the split's own users"""
    real_splits: list[str] = field(default_factory=list)
    """further splits whose own users are measured as rows too (e.g. the 6,040 users of an ml-1m-implicit split)"""
    num_envs: int = 64
    """vector-env width"""
    steps: int = 300
    """vector steps per measurement"""
    repeats: int = 3
    """round-robin rounds; the median is reported"""
    day_repeats: int = 2
    """simulated days (fresh populations) per size; the median is reported"""
    slate_size: int = 10
    """items per page"""
    seed: int = 0
    """synthetic-population, environment and policy seed"""
    target_ratio: float = 0.8
    """steps/s at the largest size over the split's, wanted at least"""
    target_gib: float = 8.0
    """resident memory at the largest size, wanted at most (GiB)"""
    plan_users: int = 10_000_000
    """users of the cluster plan"""
    worker_gib: float = 16.0
    """memory of one cluster worker (GiB); the plan fills 75% of it"""
    out: str = "runs/bench/population_scaling"
    """report directory"""


def parse() -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default=d.split)
    p.add_argument("--sizes", type=int, nargs="+", default=d.sizes)
    p.add_argument("--real-splits", nargs="*", default=d.real_splits)
    p.add_argument("--num-envs", type=int, default=d.num_envs)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--day-repeats", type=int, default=d.day_repeats)
    p.add_argument("--slate-size", type=int, default=d.slate_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--target-ratio", type=float, default=d.target_ratio)
    p.add_argument("--target-gib", type=float, default=d.target_gib)
    p.add_argument("--plan-users", type=int, default=d.plan_users)
    p.add_argument("--worker-gib", type=float, default=d.worker_gib)
    p.add_argument("--out", default=d.out)
    return Args(**vars(p.parse_args()))


args = parse()
wall0 = time.perf_counter()

import psutil  # noqa: E402

from recsim_personas.envs import MovieLensVectorEnv, Population, make_world  # noqa: E402
from recsim_personas.envs.synthetic import synthetic_world  # noqa: E402
from recsim_personas.recommenders import RandomPolicy  # noqa: E402

proc = psutil.Process()
MIB = 2**20


def rss() -> int:
    return int(proc.memory_info().rss)


# ------------------------------------------------------------------------------------------ build
rss0 = rss()
t0 = time.perf_counter()
base = make_world(args.split, "bias", choice="fitted")
base_build_s = time.perf_counter() - t0
rows: dict[str, dict] = {}
worlds, envs, obs, policies = {}, {}, {}, {}
BASE = "split"
entries = [(BASE, base.n_users), *((f"synthetic-{n}", n) for n in args.sizes), *((s, 0) for s in args.real_splits)]
for key, n in entries:
    before = rss()
    t0 = time.perf_counter()
    if key == BASE:
        world = base
    elif key.startswith("synthetic-"):
        world = synthetic_world(base, n, seed=args.seed)
    else:
        world = make_world(key, "bias", choice="fitted")
    build_s = base_build_s if key == BASE else time.perf_counter() - t0
    env = MovieLensVectorEnv(args.num_envs, world=world, slate_size=args.slate_size)
    policy = RandomPolicy(world.n_items, args.slate_size, seed=args.seed)
    obs[key], _ = env.reset(seed=args.seed)
    worlds[key], envs[key], policies[key] = world, env, policy
    grown = rss() - (rss0 if key == BASE else before)
    rows[key] = {
        "label": key,
        "n_users": world.n_users,
        "n_items": world.n_items,
        "synthetic": key.startswith("synthetic-"),
        "build_s": build_s,
        "choice_lazy": bool(getattr(world.choice, "fixed", 0) is None),
        "rss_growth_mib": grown / MIB,
        "sps": [],
        "day_s": [],
    }

# ------------------------------------------------------------------------------- throughput (round-robin)
for _ in range(args.repeats):
    for n, env in envs.items():
        spent = 0.0
        o = obs[n]
        for _ in range(args.steps):
            action = policies[n].act_batch(o)
            t0 = time.perf_counter()
            o, *_ = env.step(action)
            spent += time.perf_counter() - t0
        obs[n] = o
        rows[n]["sps"].append(args.steps / spent)
for _ in range(args.day_repeats):
    for n, world in worlds.items():
        pop = Population(world, seed=args.seed)
        t0 = time.perf_counter()
        summary = pop.run_days(1, RandomPolicy(world.n_items, args.slate_size, seed=args.seed), progress=False)
        rows[n]["day_s"].append(time.perf_counter() - t0)
        rows[n]["day_sessions"] = int(summary["totals"]["sessions"])
        del pop

peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base_sps = statistics.median(rows[BASE]["sps"])
for row in rows.values():
    row["env_steps_per_s"] = statistics.median(row["sps"])
    row["transitions_per_s"] = row["env_steps_per_s"] * args.num_envs
    row["ratio_to_split"] = row["env_steps_per_s"] / base_sps
    row["day_median_s"] = statistics.median(row["day_s"])
    row["day_us_per_user"] = 1e6 * row["day_median_s"] / row["n_users"]

# ------------------------------------------------------------------------------------------ plan
by_size = sorted((r for r in rows.values() if r["synthetic"]), key=lambda r: r["n_users"])
if len(by_size) < 2:
    raise SystemExit("population_scaling: the plan needs two synthetic sizes (--sizes A B).")
big, small = by_size[-1], by_size[-2]
largest, second = big["n_users"], small["n_users"]
per_user_bytes = (big["rss_growth_mib"] - small["rss_growth_mib"]) * MIB / (largest - second)
fixed_mib = rss0 / MIB + rows[BASE]["rss_growth_mib"]  # interpreter, libraries, items, choice model
usable = 0.75 * args.worker_gib * 1024 * MIB - fixed_mib * MIB
users_per_worker = int(usable // per_user_bytes) if per_user_bytes > 0 else args.plan_users
users_per_worker = max(1, min(users_per_worker, args.plan_users))
workers = math.ceil(args.plan_users / users_per_worker)
day_s_per_user = big["day_median_s"] / largest
day_s_worker = day_s_per_user * users_per_worker
month_hours = 30 * day_s_worker / 3600
plan = {
    "users": args.plan_users,
    "worker_gib": args.worker_gib,
    "per_user_bytes": per_user_bytes,
    "fixed_mib_per_worker": fixed_mib,
    "users_per_worker": users_per_worker,
    "workers": workers,
    "day_s_per_worker": day_s_worker,
    "hours_per_simulated_month": month_hours,
    "core_hours_per_simulated_month": month_hours * workers,
}
targets = {
    "ratio": big["ratio_to_split"],
    "ratio_met": big["ratio_to_split"] >= args.target_ratio,
    "peak_rss_gib": peak_rss_mib / 1024,
    "rss_met": peak_rss_mib / 1024 <= args.target_gib,
}
result = {
    "args": asdict(args),
    "rows": list(rows.values()),
    "plan": plan,
    "targets": targets,
    "peak_rss_mib": peak_rss_mib,
    "wall_s": time.perf_counter() - wall0,
    "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "numpy": np.__version__},
}

# ------------------------------------------------------------------------------------------ report
lines = [
    "# Population scaling",
    "",
    f"Split `{args.split}` ({base.n_users} real users, {base.n_items} items), bias rater, fitted choice model;"
    f" vector env with {args.num_envs} slots, slate {args.slate_size}, random policy; median of {args.repeats}"
    f" round-robin rounds of {args.steps} steps, day cost the median of {args.day_repeats} fresh populations.",
    "",
    "| population | users | items | build (s) | RSS growth (MiB) | choice fixed logits | env steps/s | transitions/s |"
    " ratio to split | 1 day (s) | sessions that day | µs per user-day |",
    "|:--|---:|---:|---:|---:|:--|---:|---:|---:|---:|---:|---:|",
]
for r in rows.values():
    what = (
        f"synthetic, from `{args.split}`"
        if r["synthetic"]
        else f"real users of `{args.split if r['label'] == BASE else r['label']}`"
    )
    lines.append(
        f"| {what} | {r['n_users']:,} | {r['n_items']:,} | {r['build_s']:.1f} | {r['rss_growth_mib']:.0f} |"
        f" {'lazy' if r['choice_lazy'] else 'dense'} | {r['env_steps_per_s']:.0f} | {r['transitions_per_s']:.0f} |"
        f" {r['ratio_to_split']:.2f} | {r['day_median_s']:.2f} | {r['day_sessions']:,} | {r['day_us_per_user']:.1f} |"
    )
lines += [
    "",
    f"Peak resident memory of the whole run (all {len(rows)} worlds and environments alive at once):"
    f" {peak_rss_mib / 1024:.2f} GiB; wall time {result['wall_s']:.0f} s.",
    "",
    f"At {largest:,} users the vector env runs at {big['ratio_to_split']:.2f}× the split's steps/s"
    f" ({'meets' if targets['ratio_met'] else 'misses'} the target of ≥ {args.target_ratio}), and the run's peak"
    f" resident memory is {targets['peak_rss_gib']:.2f} GiB"
    f" ({'meets' if targets['rss_met'] else 'misses'} the target of ≤ {args.target_gib} GiB).",
    *(
        f"The real users of `{r['label']}` ({r['n_users']:,} users, {r['n_items']:,} items) run at"
        f" {r['ratio_to_split']:.2f}× the split's steps/s in {r['rss_growth_mib']:.0f} MiB of growth; a simulated day"
        f" of them ({r['day_sessions']:,} sessions) costs {r['day_us_per_user']:.1f} µs per user."
        for r in rows.values()
        if not r["synthetic"] and r["label"] != BASE
    ),
    "",
    "## Plan for a larger population",
    "",
    f"Measured per-user memory (RSS growth between {second:,} and {largest:,} users, world + environment):"
    f" {per_user_bytes / 1024:.1f} KiB; fixed memory of a worker (interpreter, libraries, items, choice model and"
    f" the split's world): {fixed_mib:.0f} MiB.",
    f"With 75% of a {args.worker_gib:g} GiB worker, one worker holds {users_per_worker:,} users, so"
    f" {args.plan_users:,} users need {workers:,} workers (populations partitioned by user: users do not"
    " interact, and the items, rater and choice model are read-only copies on every worker).",
    f"One simulated day costs {day_s_per_user * 1e6:.1f} µs per user at {largest:,} users, so"
    f" {day_s_worker:.0f} s per worker-day and {month_hours:.1f} h of wall time per simulated 30-day month"
    f" ({plan['core_hours_per_simulated_month']:.0f} core-hours over all workers).",
]
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
(out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
(out / "report.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
print(json.dumps(result))
