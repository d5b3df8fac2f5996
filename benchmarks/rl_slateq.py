"""SlateQ (Ie et al., 2019) against the simulated users: item-wise long-term values decomposed through a learned
user choice model.

The algorithm box (this simulator's users decide on each shown item on its own, a Bernoulli watch per item, so
a page's value is a sum over its items rather than the paper's single-choice mixture):

    choice model   P(watch i | s) = σ(c_θ(s) · e_i + w_i)        learned from the observed watches (BCE)
    item values    Q̄_θ(s, i) = q_θ(s) · e_i + v_i                 a watched item's share of the page's value
    slate value    Q(s, A) = Σ_{i ∈ A} P(watch i | s) · Q̄(s, i)   best slate: the top-k of P · Q̄ (exact: additive)
    TD target      for each watched item i on a page with m watched items and page reward r = Σ r_i:
                   y_i = r_i + γ · (1 - done) · V'(s') / m,  V'(s') = max_A Σ_{j ∈ A} P'(j | s') Q̄'(s', j)
                   (primes: the target net), so that the targets of a page's watched items sum to r + γ V'(s');
                   a page with nothing watched trains the choice model only (the paper's null item, whose value
                   is the continuation, is not modelled).
    behaviour      the top-k of P · Q̄ with probability 1 - ε, else a random slate of unseen items (ε decays)
    updates        Adam on BCE + (Q̄(s, i) - y_i)² over minibatches of a replay buffer; Polyak-averaged target net

The vector env supplies pages from ``--num-envs`` concurrent sessions (one batched rater call per page). The
reward is ``--reward`` (default ``likes``); training seeds (``--seed``, default 2000) are disjoint from the
evaluation seeds of the gap report. The policy is saved as an RL-policy directory (the greedy top-k of
P · Q̄), ready for ``recsim-personas benchmark --policies rl:OUT/policy,...``. Logs per update go to
``OUT/train_log.jsonl``; checkpoints to ``OUT/checkpoints/update_NNNN`` (a run resumes from the newest: weights and
the update count; the replay buffer and the optimiser restart). Prints one JSON object and writes ``OUT/report.md``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/rl_slateq.py \
        --split runs/bench/choice/split-seed0 --out runs/rl/slateq
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

import recsim_personas  # noqa: F401  (registers the environment ids)
from recsim_personas.data import load_split
from recsim_personas.envs import ENV_ID, make_world
from recsim_personas.envs.item_space import history_item_factors
from recsim_personas.envs.session import item_rewards
from recsim_personas.recommenders.policies import RandomPolicy, top_k_unseen
from recsim_personas.recommenders.rl import RLPolicy, SlateNet, SlateNetConfig, latest_checkpoint, obs_to_torch

KEYS = ("history_items", "history_ratings", "traits", "user_index")


@dataclass
class Args:
    split: str = "runs/bench/choice/split-seed0"
    """split directory (from `recsim-personas data prepare`)"""
    rater: str = "bias"
    """the simulated users' rater"""
    choice: str = "fitted"
    """the users' choice model: fitted, handset or a directory"""
    reward: str = "likes"
    """the env's reward per page (the per-item rewards follow it: liked, rating or watched)"""
    num_envs: int = 64
    steps: int = 4000
    """vector-env steps (transitions ≈ steps × num_envs)"""
    updates_per_step: int = 1
    batch_size: int = 256
    buffer_size: int = 100_000
    learning_starts: int = 20
    """vector steps before the first update"""
    lr: float = 1e-3
    gamma: float = 0.9
    tau: float = 0.01
    """Polyak rate of the target net"""
    eps_start: float = 0.5
    eps_end: float = 0.02
    eps_decay_steps: int = 2000
    dim: int = 32
    hidden: int = 128
    horizon_days: int = 30
    """a fresh population (checked every 32 steps) once the simulation passes this many days (see rl_reinforce.py)"""
    seed: int = 2000
    checkpoint_every: int = 1000
    out: str = "runs/rl/slateq"
    progress: bool = True


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def slate_values(net: torch.nn.Module, obs: dict[str, torch.Tensor], seen: torch.Tensor, k: int) -> torch.Tensor:
    """V(s) = the best slate's Σ P(watch) · Q̄ over unseen items (N,)."""
    heads, _ = net(obs)
    score = torch.sigmoid(heads[:, 0]) * heads[:, 1]
    return score.masked_fill(seen, -1e9).topk(k, dim=1).values.sum(1)


def main(args: Args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rng = np.random.default_rng(args.seed)

    split = load_split(args.split)
    world = make_world(split, args.rater, choice=args.choice)
    envs = gym.make_vec(ENV_ID, num_envs=args.num_envs, world=world, reward=args.reward)
    like = envs.unwrapped.config.like_threshold
    factors = history_item_factors(split.history(), world.item_ids, dim=args.dim, seed=args.seed)

    config = SlateNetConfig(
        n_items=world.n_items, n_users=world.n_users, dim=args.dim, hidden=args.hidden, head="slateq"
    )
    net = SlateNet(config, item_factors=factors, popularity=world.item_popularity)
    resume, start = latest_checkpoint(out)
    earlier_seconds = 0.0  # training time of the runs this one resumes (policies record the total)
    if resume is not None:
        earlier = RLPolicy.load(resume, split_id=split.split_id)
        net.load_state_dict(earlier.net.state_dict())
        earlier_seconds = float(earlier.train_seconds or 0.0)
    target = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    explorer = RandomPolicy(world.n_items, envs.unwrapped.slate_size, seed=rng.integers(2**31))
    k, n = envs.unwrapped.slate_size, args.num_envs

    # ---- replay buffer (observation entries as arrays; seen masks as packed bits) --------------------------
    size, cap, pos = 0, args.buffer_size, 0
    h = envs.unwrapped.history_len
    buf = {
        "history_items": np.zeros((cap, h), np.int64),
        "history_ratings": np.zeros((cap, h), np.int64),
        "traits": np.zeros((cap, 3), np.float32),
        "user_index": np.zeros(cap, np.int64),
        "next_history_items": np.zeros((cap, h), np.int64),
        "next_history_ratings": np.zeros((cap, h), np.int64),
        "next_traits": np.zeros((cap, 3), np.float32),
        "next_seen": np.zeros((cap, (world.n_items + 7) // 8), np.uint8),
        "slate": np.zeros((cap, k), np.int64),
        "watched": np.zeros((cap, k), bool),
        "item_reward": np.zeros((cap, k), np.float32),
        "done": np.zeros(cap, bool),
    }

    obs, _ = envs.reset(seed=args.seed + start)
    restarting = np.zeros(n, dtype=bool)
    log_file = (out / "train_log.jsonl").open("a")
    transitions, t_start, env_seconds = 0, time.perf_counter(), 0.0
    window = {"reward": [], "watch": [], "loss_q": [], "loss_c": [], "sessions": 0, "exits": 0}
    populations = 0
    bar = tqdm(range(start, args.steps), desc="slateq", disable=not args.progress, initial=start, total=args.steps)
    for step in bar:
        # the evaluation's horizon: fresh users, checked every 32 steps (a population fills 64 slots in days)
        if step % 32 == 0 and envs.unwrapped.population.day >= args.horizon_days:
            populations += 1
            obs, _ = envs.reset(seed=args.seed + start + 7919 * populations)
            restarting[:] = False
        # ---- act: ε-greedy over the top-k of P · Q̄ ----------------------------------------------------------
        eps = max(args.eps_end, args.eps_start + (args.eps_end - args.eps_start) * step / args.eps_decay_steps)
        seen = obs["seen"].astype(bool)
        with torch.no_grad():
            heads, _ = net(obs_to_torch(obs))
            score = (torch.sigmoid(heads[:, 0]) * heads[:, 1]).double().numpy()
        action = top_k_unseen(score, seen, k)
        explore = rng.random(n) < eps
        if explore.any():
            action[explore] = explorer.act_batch({"seen": seen[explore]})
        prev = {key: obs[key] for key in KEYS}
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, info = envs.step(action)
        env_seconds += time.perf_counter() - t0
        played = ~restarting
        done = terminated | truncated
        # ---- store the pages that were played (NEXT_STEP autoreset: restarting slots' actions were ignored) ----
        rows = np.flatnonzero(played)
        idx = (pos + np.arange(rows.size)) % cap
        for key in KEYS:
            buf[key][idx] = prev[key][rows]
        for key in KEYS[:3]:  # the next page is the same user's (a slot's user only changes at a session's end)
            buf["next_" + key][idx] = obs[key][rows]
        buf["next_seen"][idx] = np.packbits(obs["seen"][rows].astype(bool), axis=1)
        buf["slate"][idx], buf["watched"][idx] = action[rows], info["watched"][rows]
        buf["item_reward"][idx] = item_rewards(info["watched"], info["ratings"], args.reward, like)[rows]
        buf["done"][idx] = done[rows]
        pos, size = (pos + rows.size) % cap, min(cap, size + rows.size)
        transitions += rows.size
        window["reward"] += reward[rows].tolist()
        window["watch"].append(float(info["watched"][rows].mean()))
        window["sessions"] += int(done[rows].sum())
        window["exits"] += int(terminated[rows].sum())
        restarting = done

        # ---- learn ------------------------------------------------------------------------------------------
        if step >= start + args.learning_starts:
            for _ in range(args.updates_per_step):
                b = rng.integers(0, size, args.batch_size)
                s = {key: torch.from_numpy(buf[key][b]) for key in KEYS}
                s2 = {key: torch.from_numpy(buf["next_" + key][b]) for key in KEYS[:3]}
                s2["user_index"] = s["user_index"]  # the same user's next page
                seen2 = torch.from_numpy(np.unpackbits(buf["next_seen"][b], axis=1, count=world.n_items).astype(bool))
                slate = torch.from_numpy(buf["slate"][b])
                watched = torch.from_numpy(buf["watched"][b]).float()
                r_item = torch.from_numpy(buf["item_reward"][b])
                alive = 1.0 - torch.from_numpy(buf["done"][b]).float()
                with torch.no_grad():
                    v_next = slate_values(target, s2, seen2, k)
                    m = watched.sum(1).clamp(min=1.0)
                    y = r_item + (args.gamma * alive * v_next / m).unsqueeze(1)
                heads, _ = net(s)
                c_logit = heads[:, 0].gather(1, slate)
                q_item = heads[:, 1].gather(1, slate)
                loss_c = torch.nn.functional.binary_cross_entropy_with_logits(c_logit, watched)
                loss_q = (((q_item - y) ** 2) * watched).sum() / watched.sum().clamp(min=1.0)
                loss = loss_c + loss_q
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimizer.step()
                with torch.no_grad():
                    for p_t, p in zip(target.parameters(), net.parameters(), strict=True):
                        p_t.mul_(1 - args.tau).add_(p, alpha=args.tau)
                window["loss_q"].append(loss_q.item())
                window["loss_c"].append(loss_c.item())

        # ---- log and checkpoint ------------------------------------------------------------------------------
        if (step + 1) % 50 == 0:
            wall = time.perf_counter() - t_start
            row = {
                "step": step + 1,
                "transitions": transitions,
                "epsilon": eps,
                "reward_per_page": float(np.mean(window["reward"])),
                "watch_rate": float(np.mean(window["watch"])),
                "sessions": window["sessions"],
                # pages played and reward per session that ended in the window (a ratio of the window's totals)
                "pages_per_session": len(window["reward"]) / max(1, window["sessions"]),
                "return_per_session": float(np.sum(window["reward"])) / max(1, window["sessions"]),
                "exit_rate": window["exits"] / max(1, window["sessions"]),
                "returning_users": 1.0 - envs.unwrapped.population.churned_users() / world.n_users,
                "loss_q": float(np.mean(window["loss_q"])) if window["loss_q"] else None,
                "loss_choice": float(np.mean(window["loss_c"])) if window["loss_c"] else None,
                "transitions_per_hour": 3600.0 * transitions / wall,
                "env_share": env_seconds / wall,
            }
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            bar.set_postfix(rpp=round(row["reward_per_page"], 3), eps=round(eps, 3))
            window = {"reward": [], "watch": [], "loss_q": [], "loss_c": [], "sessions": 0, "exits": 0}
        if (step + 1) % args.checkpoint_every == 0:
            so_far = earlier_seconds + time.perf_counter() - t_start
            RLPolicy(net, name="rl-slateq", slate_size=k, split_id=split.split_id, train_seconds=so_far).save(
                out / "checkpoints" / f"update_{step + 1:06d}", extra={"step": step + 1, **asdict(args)}
            )
    log_file.close()
    envs.close()

    wall = time.perf_counter() - t_start
    policy = RLPolicy(
        net, name="rl-slateq", slate_size=k, split_id=split.split_id, train_seconds=earlier_seconds + wall
    )
    policy.save(out / "policy", extra={"algorithm": "slateq", **asdict(args)})
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    result = {
        "algorithm": "slateq",
        "policy": str(out / "policy"),
        "steps": last["step"],
        "transitions_this_run": transitions,
        "wall_seconds": wall,
        "transitions_per_hour": 3600.0 * transitions / wall,
        "env_share_of_wall": env_seconds / wall,
        "reward_per_page_first_log": first["reward_per_page"],
        "reward_per_page_last_log": last["reward_per_page"],
        "args": asdict(args),
    }
    lines = [
        "# SlateQ",
        "",
        f"Split `{args.split}`, rater `{args.rater}`, choice `{args.choice}`, reward `{args.reward}`,"
        f" {args.num_envs} session slots, training seed {args.seed}.",
        "",
        f"- {last['step']} vector steps; this run stepped {transitions:,} transitions in {wall:.0f} s"
        f" ({result['transitions_per_hour']:,.0f} transitions/hour; the env took"
        f" {100 * result['env_share_of_wall']:.0f}% of the wall time).",
        f"- Reward per page (ε-greedy behaviour, 50-step windows) went from {first['reward_per_page']:.3f}"
        f" (ε = {first['epsilon']:.2f}) to {last['reward_per_page']:.3f} (ε = {last['epsilon']:.2f}).",
        f"- The saved policy: `{out / 'policy'}` (greedy top-k of P(watch) · Q̄).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(main(parse()), indent=2))
