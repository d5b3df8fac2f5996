"""Training throughput of the RL recommenders: env transitions per hour, beside the environment alone.

In one process, round-robin over ``--repeats`` rounds (the median is reported): (1) the vector env (``--num-envs``
slots, bias rater, fitted choice) driven by the random policy — the environment's own ceiling; (2) PPO with the
Plackett-Luce slate policy (``rl_reinforce.py``) for ``--ppo-updates`` updates; (3) SlateQ (``rl_slateq.py``) for
``--slateq-steps`` steps. A transition is one page served to one simulated user. Each training run's figure is
its transitions over its wall time after the world is built (policy forward, sampling, learning included). Prints
one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/rl_throughput.py --out runs/bench/rl-throughput
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

import recsim_personas  # noqa: F401  (registers the environment ids)
from recsim_personas.envs import ENV_ID, make_world
from recsim_personas.recommenders import RandomPolicy

HERE = Path(__file__).resolve().parent
TARGET_PER_HOUR = 1_000_000


@dataclass
class Args:
    split: str = "runs/bench/choice/split-seed0"
    """split directory"""
    num_envs: int = 64
    env_steps: int = 300
    """vector steps of the env-alone measurement"""
    ppo_updates: int = 4
    """PPO updates per measurement (each is rollout × num_envs pages)"""
    slateq_steps: int = 300
    """SlateQ vector steps per measurement"""
    repeats: int = 3
    out: str = "runs/bench/rl-throughput"


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def env_alone(args: Args, world, seed: int) -> float:
    envs = gym.make_vec(ENV_ID, num_envs=args.num_envs, world=world, reward="likes")
    policy = RandomPolicy(world.n_items, envs.unwrapped.slate_size, seed=seed)
    obs, _ = envs.reset(seed=seed)
    restarting = np.zeros(args.num_envs, dtype=bool)
    pages, t0 = 0, time.perf_counter()
    for _ in range(args.env_steps):
        obs, _, terminated, truncated, _ = envs.step(policy.act_batch(obs))
        pages += int((~restarting).sum())
        restarting = terminated | truncated
    seconds = time.perf_counter() - t0
    envs.close()
    return 3600.0 * pages / seconds


def main(args: Args) -> dict:
    ppo, slateq = script("rl_reinforce"), script("rl_slateq")
    world = make_world(
        args.split, "bias", choice="fitted"
    )  # built once for the env-alone runs (training builds its own)
    rows: dict[str, list[float]] = {"env alone (random policy)": [], "PPO, Plackett-Luce": [], "SlateQ": []}
    for r in range(args.repeats):
        rows["env alone (random policy)"].append(env_alone(args, world, seed=r))
        with tempfile.TemporaryDirectory() as tmp:
            res = ppo.main(
                ppo.Args(split=args.split, num_envs=args.num_envs, updates=args.ppo_updates, out=tmp, progress=False)
            )
            rows["PPO, Plackett-Luce"].append(res["transitions_per_hour"])
        with tempfile.TemporaryDirectory() as tmp:
            res = slateq.main(
                slateq.Args(split=args.split, num_envs=args.num_envs, steps=args.slateq_steps, out=tmp, progress=False)
            )
            rows["SlateQ"].append(res["transitions_per_hour"])
    median = {name: statistics.median(values) for name, values in rows.items()}
    env_rate = median["env alone (random policy)"]
    result = {
        "num_envs": args.num_envs,
        "repeats": args.repeats,
        "transitions_per_hour": median,
        "per_round": rows,
        "share_of_env_alone": {name: value / env_rate for name, value in median.items()},
        "target_per_hour": TARGET_PER_HOUR,
        "args": asdict(args),
    }
    lines = [
        "# RL training throughput (transitions per hour)",
        "",
        f"Vector env with {args.num_envs} slots, bias rater, fitted choice; medians of {args.repeats} round-robin"
        " rounds.",
        "",
        "| run | transitions/hour | share of the env alone | target 1,000,000/h |",
        "|---|---|---|---|",
    ]
    for name, value in median.items():
        ok = "met" if value >= TARGET_PER_HOUR else "not met"
        lines.append(f"| {name} | {value:,.0f} | {value / env_rate:.2f} | {ok} |")
    lines.append("")
    for name, value in median.items():
        if name.startswith("env"):
            continue
        lines.append(
            f"- {name} trains at {value:,.0f} transitions/hour, {value / env_rate:.2f}× the environment alone;"
            f" {value / TARGET_PER_HOUR:.1f}× the 1,000,000/hour target."
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(main(parse()), indent=2))
