"""Two designs of the simulated population, measured side by side: a vectorised core vs agents that own their state.

*vectorised* is the library's :class:`~recsim_personas.envs.model.Population`: every user's state is a row of
the population's arrays and one page of N concurrent sessions is decided by array operations over the N × k
slate (one ``rater.predict`` for all of them). *agents* is the alternative the design had to be measured
against: each user is an object that owns its state (history, seen mask, session satisfaction and pages,
churn streak) and decides itself; per page the agents post their requests (the unseen items of their slate),
the model answers all of them in one ``rater.predict`` call, and then each agent watches, rates and continues
or exits with the same behaviour functions (:mod:`recsim_personas.envs.session`) on its own k items.

Both run the same workload round-robin over ``--repeats`` rounds: ``num_envs`` concurrent sessions under a
random policy, a finished session replaced by the next user's (like the vector environment), for
``--steps`` pages, timing the observation (history + seen mask of the N users) and the reaction, not the
policy. Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/population_design.py --out runs/bench/design
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

RATINGS = np.arange(1, 6, dtype=np.float64)


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (default: $RECSIM_PERSONAS_DATA_DIR, then cache/download)"""
    split: str | None = None
    """an existing split directory (default: prepare the ML-100K protocol split, seed 0, into OUT/split)"""
    num_envs: list[int] = field(default_factory=lambda: [1, 16, 64])
    """concurrent sessions"""
    steps: int = 1500
    """pages per measurement (each plays one page in every session)"""
    repeats: int = 3
    """round-robin rounds; the median is reported"""
    slate_size: int = 10
    """items per page"""
    history_len: int = 20
    """history entries in the observation"""
    seed: int = 0
    """seed of the populations and the policy"""
    out: str = "runs/bench/design"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=defaults.data_dir)
    p.add_argument("--split", default=defaults.split)
    p.add_argument("--num-envs", type=int, nargs="+", default=defaults.num_envs)
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--repeats", type=int, default=defaults.repeats)
    p.add_argument("--slate-size", type=int, default=defaults.slate_size)
    p.add_argument("--history-len", type=int, default=defaults.history_len)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out", default=defaults.out)
    return Args(**vars(p.parse_args()))


# ------------------------------------------------------------------------------------------------------------
# the "agents" design: each user owns its state and decides; the model batches the rater requests of a page
# ------------------------------------------------------------------------------------------------------------
class OwningUser:
    """A simulated user that owns its state and decides its reactions itself."""

    def __init__(self, world, u: int) -> None:
        self.index = u
        self.user_id = int(world.user_ids[u])
        self.history_items = [int(i) for i in world.history_items[u]]
        self.history_ratings = [int(r) for r in world.history_ratings[u]]
        self.seen = np.zeros(world.n_items, dtype=bool)
        self.seen[world.history_items[u]] = True
        self.activity, self.conformity, self.diversity = (float(x) for x in world.trait_scores[u])
        self.top_genres = int(world.user_top_genres[u])
        self.pages, self.satisfaction, self.unsatisfied_streak = 0, 0.0, 0

    def post(self, slate: np.ndarray) -> np.ndarray:
        """The items of ``slate`` this user has not seen yet: what it asks the rater about."""
        return slate[~self.seen[slate]]

    def act(self, slate: np.ndarray, asked: np.ndarray, dist: np.ndarray, world, cfg, rng) -> bool:
        """Watch, rate, then continue (True) or leave (False), from the rater's answers ``dist`` for ``asked``.

        Plain Python floats over the user's own k items (cheaper than numpy calls on arrays this small); the
        formulas are those of :mod:`recsim_personas.envs.session`.
        """
        w = cfg.conformity_weight * self.conformity
        n_watched, total = 0, 0
        if asked.size:
            expected = (dist @ RATINGS).tolist()
            hist = world.item_hist_avg[asked].tolist()
            genres = world.item_genres[asked].tolist()
            u = rng.random(asked.size).tolist()
            cdfs = np.cumsum(dist, axis=1).tolist()
            draws = rng.random(asked.size).tolist()
            off_bonus = cfg.novelty_bonus * self.diversity - cfg.taste_penalty * (1.0 - self.diversity)
            for j, item in enumerate(asked.tolist()):
                appeal = (1.0 - w) * expected[j] + w * hist[j]
                if genres[j] & self.top_genres == 0:
                    appeal += off_bonus
                p = 1.0 / (1.0 + math.exp(-cfg.watch_slope * (appeal - cfg.watch_threshold)))
                if u[j] < p:
                    cdf = cdfs[j]
                    rating = min(sum(draws[j] * cdf[-1] >= c for c in cdf), 4) + 1
                    self.history_items.append(item)
                    self.history_ratings.append(rating)
                    self.seen[item] = True
                    n_watched += 1
                    total += rating
        self.pages += 1
        page = (total / n_watched - 3.0) / 2.0 if n_watched else cfg.empty_page_satisfaction
        m = cfg.satisfaction_memory
        self.satisfaction = m * self.satisfaction + (1.0 - m) * page
        logit = (
            cfg.continue_bias
            + cfg.satisfaction_weight * self.satisfaction
            + cfg.activity_weight * (self.activity - 0.5)
            - cfg.fatigue * (self.pages - 1)
        )
        go_on = rng.random() < 1.0 / (1.0 + math.exp(-logit))
        if not go_on or self.pages >= cfg.max_pages:
            self.unsatisfied_streak = self.unsatisfied_streak + 1 if self.satisfaction < cfg.unsatisfied_below else 0
            return False
        return True

    def observe(self, history_len: int) -> tuple[np.ndarray, np.ndarray]:
        items = np.full(history_len, -1, dtype=np.int64)
        ratings = np.zeros(history_len, dtype=np.int64)
        tail_i, tail_r = self.history_items[-history_len:], self.history_ratings[-history_len:]
        items[history_len - len(tail_i) :], ratings[history_len - len(tail_r) :] = tail_i, tail_r
        return items, ratings


class AgentsDesign:
    """N concurrent sessions of :class:`OwningUser` agents, one batched rater call per page."""

    def __init__(self, world, cfg, seed: int) -> None:
        self.world, self.cfg, self.rng = world, cfg, np.random.default_rng(seed)
        self.users = [OwningUser(world, u) for u in range(world.n_users)]

    def start(self, user: int) -> None:
        agent = self.users[user]
        agent.pages, agent.satisfaction = 0, 0.0

    def observe(self, users: np.ndarray, history_len: int) -> dict[str, np.ndarray]:
        agents = [self.users[u] for u in users]
        hist = [a.observe(history_len) for a in agents]
        return {
            "user_index": users.copy(),
            "history_items": np.stack([h[0] for h in hist]),
            "history_ratings": np.stack([h[1] for h in hist]),
            "seen": np.stack([a.seen for a in agents]).view(np.int8),
        }

    def react(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        agents = [self.users[u] for u in users]
        asked = [a.post(s) for a, s in zip(agents, slates, strict=True)]
        lengths = [len(x) for x in asked]
        items = np.concatenate(asked)
        owners = np.repeat(np.array([a.user_id for a in agents], dtype=np.int64), lengths)
        dist = self.world.rater.predict(owners, self.world.item_ids[items]) if items.size else np.zeros((0, 5))
        bounds = np.cumsum([0, *lengths])
        ended = np.zeros(len(users), dtype=bool)
        for j, (a, s, x) in enumerate(zip(agents, slates, asked, strict=True)):
            ended[j] = not a.act(s, x, dist[bounds[j] : bounds[j + 1]], self.world, self.cfg, self.rng)
        return ended


# ------------------------------------------------------------------------------------------------------------
# the "vectorised" design: the library's Population
# ------------------------------------------------------------------------------------------------------------
class VectorisedDesign:
    """The library's Population, driven the same way."""

    def __init__(self, world, cfg, seed: int) -> None:
        from recsim_personas.envs.model import Population

        self.population = Population(world, cfg, seed=seed)

    def start(self, user: int) -> None:
        self.population.start_session(user)

    def observe(self, users: np.ndarray, history_len: int) -> dict[str, np.ndarray]:
        return self.population.observe(users, history_len)

    def react(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        return self.population.react(users, slates).ended


def measure(design_cls, world, cfg, args: Args, num_envs: int) -> dict:
    from recsim_personas.recommenders import RandomPolicy

    design = design_cls(world, cfg, args.seed)
    policy = RandomPolicy(world.n_items, args.slate_size, seed=args.seed)
    active = np.arange(num_envs, dtype=np.int64)
    nxt = num_envs
    for u in active:
        design.start(int(u))
    seconds, sessions = 0.0, 0
    for _ in range(args.steps):
        t0 = time.perf_counter()
        obs = design.observe(active, args.history_len)
        t1 = time.perf_counter()
        slates = policy.act_batch(obs)
        t2 = time.perf_counter()
        ended = design.react(active, slates)
        for j in np.flatnonzero(ended):
            active[j] = nxt % world.n_users
            while (active == active[j]).sum() > 1:  # a user is in at most one session
                nxt += 1
                active[j] = nxt % world.n_users
            nxt += 1
            design.start(int(active[j]))
            sessions += 1
        seconds += (t1 - t0) + (time.perf_counter() - t2)
    return {"num_envs": num_envs, "steps_per_s": args.steps / seconds, "sessions_ended": sessions}


if __name__ == "__main__":
    args = parse()
    from recsim_personas.data import ProtocolConfig, Split, prepare_split
    from recsim_personas.envs import SessionConfig, make_world

    out = Path(args.out)
    if args.split:
        split = Split.load(args.split)
    else:
        split, _ = prepare_split(ProtocolConfig(seed=0), out / "split", data_dir=args.data_dir)
    world = make_world(split, "bias")
    cfg = SessionConfig()
    designs = {"vectorised": VectorisedDesign, "agents": AgentsDesign}
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeats):  # round-robin: every configuration sees the same machine noise
        for n in args.num_envs:
            for name, cls in designs.items():
                runs.setdefault((name, n), []).append(measure(cls, world, cfg, args, n))
    rows = []
    for n in args.num_envs:
        vec = statistics.median(r["steps_per_s"] for r in runs[("vectorised", n)])
        ag = statistics.median(r["steps_per_s"] for r in runs[("agents", n)])
        rows.append(
            {
                "num_envs": n,
                "vectorised_steps_per_s": vec,
                "agents_steps_per_s": ag,
                "agents_over_vectorised": ag / vec,
                "vectorised_all": [r["steps_per_s"] for r in runs[("vectorised", n)]],
                "agents_all": [r["steps_per_s"] for r in runs[("agents", n)]],
            }
        )
    result = {
        "benchmark": "population_design",
        "args": asdict(args),
        "split_id": world.split_id,
        "users": world.n_users,
        "items": world.n_items,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "numpy": np.__version__},
        "results": rows,
    }
    lines = [
        "# Population design: vectorised core vs agents owning their state",
        "",
        f"ML-100K protocol split ({world.n_users} users, {world.n_items} items), bias rater, random policy, slate"
        f" size {args.slate_size}; {args.steps} pages per measurement, median of {args.repeats} round-robin rounds"
        f" on {os.cpu_count()} CPUs. Time of the observation and the reaction (not the policy).",
        "",
        "| concurrent sessions | vectorised pages/s | agents pages/s | agents / vectorised |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_envs']} | {r['vectorised_steps_per_s']:,.0f} | {r['agents_steps_per_s']:,.0f} |"
            f" {r['agents_over_vectorised']:.2f} |"
        )
    worst = min(rows, key=lambda r: r["agents_over_vectorised"])
    lines += [
        "",
        f"At {worst['num_envs']} concurrent sessions the agents design runs at"
        f" {worst['agents_over_vectorised']:.2f}× the vectorised core's pages per second"
        f" ({worst['agents_over_vectorised'] - 1:+.0%}).",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
