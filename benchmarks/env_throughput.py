"""Throughput of the simulation environments: single env vs the vector env at several widths.

Builds the world of the ML-100K protocol split once (bias rater fitted on the split's history), then
measures, side by side and round-robin over ``--repeats`` rounds (the median is reported), a random policy
driving ``MovieLensEnv`` and ``MovieLensVectorEnv`` with ``num_envs`` = 1, 16, 64. For each: environment
steps per second (time inside ``reset``/``step`` only), transitions per second (``num_envs`` × vector
steps), the same including the policy's time, and the rater's share of the environment time (a timing
wrapper around ``rater.predict``). Prints one JSON object and writes ``report.md`` / ``report.json``
into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/env_throughput.py --out runs/bench/env
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (default: $RECSIM_PERSONAS_DATA_DIR, then cache/download)"""
    split: str | None = None
    """an existing split directory (default: prepare the ML-100K protocol split, seed 0, into OUT/split)"""
    num_envs: list[int] = field(default_factory=lambda: [1, 16, 64])
    """widths of the vector environment"""
    single_steps: int = 4000
    """single-env steps per measurement"""
    vector_steps: int = 1500
    """vector-env steps per measurement (each is num_envs transitions)"""
    repeats: int = 3
    """round-robin rounds; the median is reported"""
    slate_size: int = 10
    """items per page"""
    seed: int = 0
    """environment and policy seed"""
    choices: list[str] = field(default_factory=lambda: ["fitted", "handset"])
    """the users' choice models (with the sessions that go with each), measured side by side; with "fitted" and
    another, also "fitted-choice": the fitted choice model with the hand-set sessions"""
    out: str = "runs/bench/env"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=defaults.data_dir)
    p.add_argument("--split", default=defaults.split)
    p.add_argument("--num-envs", type=int, nargs="+", default=defaults.num_envs)
    p.add_argument("--single-steps", type=int, default=defaults.single_steps)
    p.add_argument("--vector-steps", type=int, default=defaults.vector_steps)
    p.add_argument("--repeats", type=int, default=defaults.repeats)
    p.add_argument("--slate-size", type=int, default=defaults.slate_size)
    p.add_argument("--choices", nargs="+", default=defaults.choices)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out", default=defaults.out)
    return Args(**vars(p.parse_args()))


def days_per_k(row: dict) -> float:
    """Simulated days per 1,000 transitions of a measurement (its first round)."""
    return 1000.0 * row["simulated_days"] / (row["num_envs"] * row["steps"])


class TimedRater:
    """Wraps a rater and accumulates the time spent in ``predict``."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.seconds, self.calls, self.requests = 0.0, 0, 0

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.inner.predict(users, items)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.requests += len(users)
        return out


def measure_single(world, args: Args) -> dict:
    rater = TimedRater(world.rater)
    env = MovieLensEnv(world=dataclasses.replace(world, rater=rater), slate_size=args.slate_size)
    policy = RandomPolicy(world.n_items, args.slate_size, seed=args.seed)
    env_s = policy_s = 0.0
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=args.seed)
    env_s += time.perf_counter() - t0
    episodes = 0
    for _ in range(args.single_steps):
        t0 = time.perf_counter()
        action = policy.act(obs)
        t1 = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
            episodes += 1
        t2 = time.perf_counter()
        policy_s += t1 - t0
        env_s += t2 - t1
    return {
        "env": "MovieLensEnv",
        "num_envs": 1,
        "steps": args.single_steps,
        "env_steps_per_s": args.single_steps / env_s,
        "transitions_per_s": args.single_steps / env_s,
        "end_to_end_transitions_per_s": args.single_steps / (env_s + policy_s),
        "rater_share": rater.seconds / env_s,
        "rater_calls": rater.calls,
        "mean_rater_batch": rater.requests / max(rater.calls, 1),
        "episodes": episodes,
        "simulated_days": env.population.day,
    }


def measure_vector(world, args: Args, num_envs: int) -> dict:
    rater = TimedRater(world.rater)
    envs = MovieLensVectorEnv(num_envs, world=dataclasses.replace(world, rater=rater), slate_size=args.slate_size)
    policy = RandomPolicy(world.n_items, args.slate_size, seed=args.seed)
    env_s = policy_s = 0.0
    t0 = time.perf_counter()
    obs, _ = envs.reset(seed=args.seed)
    env_s += time.perf_counter() - t0
    episodes = 0
    for _ in range(args.vector_steps):
        t0 = time.perf_counter()
        actions = policy.act_batch(obs)
        t1 = time.perf_counter()
        obs, _, terminated, truncated, _ = envs.step(actions)
        t2 = time.perf_counter()
        episodes += int((terminated | truncated).sum())
        policy_s += t1 - t0
        env_s += t2 - t1
    return {
        "env": "MovieLensVectorEnv",
        "num_envs": num_envs,
        "steps": args.vector_steps,
        "env_steps_per_s": args.vector_steps / env_s,
        "transitions_per_s": num_envs * args.vector_steps / env_s,
        "end_to_end_transitions_per_s": num_envs * args.vector_steps / (env_s + policy_s),
        "rater_share": rater.seconds / env_s,
        "rater_calls": rater.calls,
        "mean_rater_batch": rater.requests / max(rater.calls, 1),
        "episodes": episodes,
        "simulated_days": envs.population.day,
    }


if __name__ == "__main__":
    args = parse()
    from recsim_personas.data import ProtocolConfig, Split, prepare_split
    from recsim_personas.envs import MovieLensEnv, MovieLensVectorEnv, make_world
    from recsim_personas.recommenders import RandomPolicy

    out = Path(args.out)
    t0 = time.perf_counter()
    if args.split:
        split = Split.load(args.split)
    else:
        split, _ = prepare_split(ProtocolConfig(seed=0), out / "split", data_dir=args.data_dir)
    worlds = {choice: make_world(split, "bias", choice=choice) for choice in args.choices}
    if "fitted" in worlds and len(worlds) > 1:
        # the fitted choice model with the hand-set sessions: its cost alone, on the same session dynamics
        worlds = {
            "fitted": worlds["fitted"],
            "fitted-choice": dataclasses.replace(worlds["fitted"], session_config=None),
            **{k: v for k, v in worlds.items() if k != "fitted"},
        }
    world = worlds[args.choices[0]]
    build_seconds = time.perf_counter() - t0

    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):  # round-robin, so every configuration sees the same machine noise
        for choice, w in worlds.items():
            runs.setdefault(f"{choice}/single", []).append({**measure_single(w, args), "choice": choice})
            for n in args.num_envs:
                runs.setdefault(f"{choice}/vector-{n}", []).append({**measure_vector(w, args, n), "choice": choice})

    rate_keys = ("env_steps_per_s", "transitions_per_s", "end_to_end_transitions_per_s", "rater_share")
    results = []
    for name, rounds in runs.items():
        row = dict(rounds[0])
        for key in rate_keys:
            row[key] = statistics.median(r[key] for r in rounds)
            row[f"{key}_all"] = [r[key] for r in rounds]
        results.append({"name": name, **row})

    result = {
        "benchmark": "env_throughput",
        "args": asdict(args),
        "split_id": world.split_id,
        "users": world.n_users,
        "items": world.n_items,
        "rater": world.rater_name,
        "policy": "random",
        "build_seconds": build_seconds,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "numpy": np.__version__},
        "results": results,
    }

    lines = [
        "# Environment throughput",
        "",
        f"ML-100K protocol split ({world.n_users} users, {world.n_items} items), bias rater, random policy,"
        f" slate size {args.slate_size}; median of {args.repeats} round-robin rounds on {os.cpu_count()} CPUs."
        f" Loading the split, fitting the rater and the choice models took {build_seconds:.2f} s (once).",
        "",
        "| choice | environment | num_envs | env steps/s | transitions/s | transitions/s incl. policy | rater share |"
        " mean rater batch | simulated days per 1,000 transitions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['choice']} | {r['env']} | {r['num_envs']} | {r['env_steps_per_s']:,.0f} |"
            f" {r['transitions_per_s']:,.0f} | {r['end_to_end_transitions_per_s']:,.0f} | {r['rater_share']:.0%} |"
            f" {r['mean_rater_batch']:.1f} | {days_per_k(r):.1f} |"
        )
    if len(worlds) > 1:
        base = list(worlds)[-1]
        by_name = {r["name"]: r for r in results}
        lines.append("")
        for r in results:
            if r["choice"] == base:
                continue
            other = by_name[r["name"].replace(f"{r['choice']}/", f"{base}/")]
            ratio = r["env_steps_per_s"] / other["env_steps_per_s"]
            days = days_per_k(r) / max(days_per_k(other), 1e-12)
            lines.append(
                f"- {r['env']} with {r['num_envs']} env(s): {r['choice']} runs at {ratio:.2f}× the steps/s of {base},"
                f" simulating {days:.1f}× as many days per transition."
            )
    lines += [
        "",
        "*env steps/s*: calls of `step` per second (time inside `reset`/`step` only); *transitions/s*:"
        " num_envs × that; *incl. policy*: with the random policy's time added; *rater share*: time in"
        " `rater.predict` over environment time (one batched call per step); *simulated days*: days the"
        " population advanced (each day records the Mesa DataCollector and draws the day's session starts).",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
