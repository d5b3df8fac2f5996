"""Policy-gradient slate recommender (PPO or REINFORCE) with a Plackett-Luce policy, against the simulated users.

The algorithm box:

    policy  π_θ(a | s) = Π_{j=1..k} exp(z_{a_j}) / Σ_{i unseen, i ∉ a_<j} exp(z_i),   z = SlateNet_θ(s)   (N, n_items)
    for each update:
        roll out T pages in each of N session slots of the vector env (one batched rater call per page):
            a ~ π_θ(· | s) by Gumbel-top-k over the user's unseen items;  log π_θ(a | s) exact
        advantages Â by GAE(γ, λ) with the value head V_φ(s); a session's end (exit or page limit) ends its return
        credit (--credit position, default): the slate is k sequential choices; position j's advantage is the
            page's Â minus the rewards of the items before it, Â_j = Â - Σ_{l<j} r_{a_l} (a baseline that depends
            on the earlier choices only, so the gradient stays unbiased while their noise leaves position j's)
        PPO:        L = -E_j[min(ρ_j Â_j, clip(ρ_j, 1 - ε, 1 + ε) Â_j)] + c_v (V_φ(s) - R)² - c_H H[softmax(z)],
                    ρ_j = π_θ(a_j | s, a_<j) / π_θ_old(a_j | s, a_<j)   (--credit slate: one ratio and Â per slate)
        REINFORCE:  one gradient step of -E_j[log π_θ(a_j | s, a_<j) Â_j] (+ the same value and entropy terms)

The reward is the env's ``--reward`` (default ``likes``: watched movies rated ≥ 4). Training runs on environment
seeds ``--seed`` (default 1000), disjoint from the evaluation seeds of the gap report (0, 1, ...). The trained
policy is saved as an RL-policy directory (greedy top-k of the logits at evaluation), so

    recsim-personas benchmark --split SPLIT --policies rl:OUT,random,pop,recbole:BPR --seeds 0,1,2,3,4 --out ...

puts it in the gap report. Logs per update (return per session, pages per session, exit rate, returning users,
transitions/s) go to ``OUT/train_log.jsonl``; checkpoints to ``OUT/checkpoints/update_NNNN`` (a run resumes from
the newest one: the weights and the update count; the optimiser's moments restart). Prints one JSON object and
writes ``OUT/report.md``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/rl_reinforce.py \
        --split runs/bench/choice/split-seed0 --out runs/rl/ppo
"""

from __future__ import annotations

import argparse
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
from recsim_personas.recommenders.plackett_luce import sample_slates, torch_position_log_probs
from recsim_personas.recommenders.rl import RLPolicy, SlateNet, SlateNetConfig, latest_checkpoint, obs_to_torch


@dataclass
class Args:
    split: str = "runs/bench/choice/split-seed0"
    """split directory (from `recsim-personas data prepare`)"""
    rater: str = "bias"
    """the simulated users' rater (a classical rater's name, userllm:DIR, agents:DIR)"""
    choice: str = "fitted"
    """the users' choice model: fitted, handset or a directory"""
    algo: str = "ppo"
    """ppo or reinforce"""
    credit: str = "position"
    """position (per-position ratios and advantages) or slate (one for the whole slate)"""
    reward: str = "likes"
    """the env's reward: likes, rating or watches"""
    num_envs: int = 64
    """session slots of the vector env"""
    rollout: int = 32
    """pages per slot per update"""
    updates: int = 150
    """policy updates (transitions = updates x rollout x num_envs)"""
    epochs: int = 4
    """PPO epochs per update (REINFORCE: 1)"""
    minibatches: int = 4
    """PPO minibatches per epoch"""
    lr: float = 3e-3
    gamma: float = 0.9
    gae_lambda: float = 0.9
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.003
    dim: int = 32
    """item-embedding width"""
    hidden: int = 128
    seed: int = 1000
    """training seed (environment, sampling, initialisation): keep it disjoint from the evaluation seeds"""
    horizon_days: int = 30
    """a fresh population (the users back at their train histories) once the simulation passes this many days,
    as in the evaluation's runs (so training sees the states evaluation will)"""
    checkpoint_every: int = 25
    out: str = "runs/rl/ppo"
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
    args = Args(**vars(p.parse_args()))
    if args.algo not in ("ppo", "reinforce"):
        p.error(f"--algo must be ppo or reinforce, got {args.algo!r}")
    if args.credit not in ("position", "slate"):
        p.error(f"--credit must be position or slate, got {args.credit!r}")
    return args


def main(args: Args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # a script, not the library: seeding the global torch stream is its business
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rng = np.random.default_rng(args.seed)

    # ---- the simulated users and the vector env -------------------------------------------------------------
    split = load_split(args.split)
    world = make_world(split, args.rater, choice=args.choice)
    envs = gym.make_vec(ENV_ID, num_envs=args.num_envs, world=world, reward=args.reward)
    factors = history_item_factors(split.history(), world.item_ids, dim=args.dim, seed=args.seed)

    # ---- the policy ---------------------------------------------------------------------------------------
    config = SlateNetConfig(n_items=world.n_items, n_users=world.n_users, dim=args.dim, hidden=args.hidden)
    net = SlateNet(config, item_factors=factors, popularity=world.item_popularity)
    resume, start = latest_checkpoint(out)
    earlier_seconds = 0.0  # training time of the runs this one resumes (policies record the total)
    if resume is not None:
        earlier = RLPolicy.load(resume, split_id=split.split_id)
        net.load_state_dict(earlier.net.state_dict())
        earlier_seconds = float(earlier.train_seconds or 0.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    k, n, t_len = envs.unwrapped.slate_size, args.num_envs, args.rollout
    like = envs.unwrapped.config.like_threshold

    obs, _ = envs.reset(seed=args.seed + start)
    restarting = np.zeros(n, dtype=bool)  # NEXT_STEP autoreset: these slots' next action is ignored
    ep_return, ep_pages = np.zeros(n), np.zeros(n)
    log_file = (out / "train_log.jsonl").open("a")
    transitions, t_start, env_seconds = 0, time.perf_counter(), 0.0
    bar = tqdm(range(start, args.updates), desc=args.algo, disable=not args.progress, initial=start, total=args.updates)
    populations = 0
    for update in bar:
        if envs.unwrapped.population.day >= args.horizon_days:  # the evaluation's horizon: start fresh users
            populations += 1
            obs, _ = envs.reset(seed=args.seed + start + 7919 * populations)
            restarting[:] = False
            ep_return[:], ep_pages[:] = 0.0, 0.0
        # ---- rollout --------------------------------------------------------------------------------------
        keys = ("history_items", "history_ratings", "traits", "user_index")
        buf_obs = {key: np.zeros((t_len, *obs[key].shape), dtype=obs[key].dtype) for key in keys}
        buf_seen = np.zeros((t_len, n, world.n_items), dtype=bool)
        buf_act = np.zeros((t_len, n, k), dtype=np.int64)
        buf_logp, buf_item = np.zeros((t_len, n, k)), np.zeros((t_len, n, k))
        buf_val, buf_rew = np.zeros((t_len, n)), np.zeros((t_len, n))
        buf_done, buf_valid = np.zeros((t_len, n), dtype=bool), np.zeros((t_len, n), dtype=bool)
        finished = {"returns": [], "pages": [], "exits": 0}
        for t in range(t_len):
            seen = obs["seen"].astype(bool)
            with torch.no_grad():
                logits, value = net(obs_to_torch(obs))
            z = logits.double().numpy()
            action = sample_slates(z, k, rng, allowed=~seen)
            with torch.no_grad():
                logp = torch_position_log_probs(logits, torch.from_numpy(action), torch.from_numpy(~seen))
            for key in keys:
                buf_obs[key][t] = obs[key]
            buf_seen[t], buf_act[t], buf_logp[t], buf_val[t] = seen, action, logp.numpy(), value.numpy()
            buf_valid[t] = ~restarting
            t0 = time.perf_counter()
            obs, reward, terminated, truncated, info = envs.step(action)
            env_seconds += time.perf_counter() - t0
            done = (terminated | truncated) & ~restarting
            buf_rew[t], buf_done[t] = reward, done
            buf_item[t] = item_rewards(info["watched"], info["ratings"], args.reward, like)
            transitions += int((~restarting).sum())
            ep_return += np.where(restarting, 0.0, reward)
            ep_pages += ~restarting
            for slot in np.flatnonzero(done):
                finished["returns"].append(ep_return[slot])
                finished["pages"].append(ep_pages[slot])
                finished["exits"] += int(terminated[slot])
                ep_return[slot] = ep_pages[slot] = 0.0
            restarting = terminated | truncated

        # ---- advantages (GAE; a session's end ends its return; restart steps are not decisions) --------------
        with torch.no_grad():
            _, last_value = net(obs_to_torch(obs))
        adv = np.zeros((t_len, n))
        gae = np.zeros(n)
        next_value = np.where(restarting, 0.0, last_value.numpy())
        for t in reversed(range(t_len)):
            alive = 1.0 - buf_done[t]
            delta = buf_rew[t] + args.gamma * next_value * alive - buf_val[t]
            gae = np.where(buf_valid[t], delta + args.gamma * args.gae_lambda * alive * gae, 0.0)
            adv[t] = gae
            next_value = buf_val[t]
        returns = adv + buf_val
        if args.credit == "position":  # Â_j = Â - Σ_{l<j} r_l
            adv_pos = adv[..., None] - (np.cumsum(buf_item, axis=2) - buf_item)
        else:
            adv_pos = np.repeat(adv[..., None], k, axis=2)

        # ---- policy update ----------------------------------------------------------------------------------
        flat = np.flatnonzero(buf_valid.reshape(-1))
        b_obs = {key: torch.from_numpy(v.reshape(-1, *v.shape[2:])[flat]) for key, v in buf_obs.items()}
        b_allowed = torch.from_numpy(~buf_seen.reshape(-1, world.n_items)[flat])
        b_act = torch.from_numpy(buf_act.reshape(-1, k)[flat])
        b_logp = torch.from_numpy(buf_logp.reshape(-1, k)[flat]).float()
        b_adv = torch.from_numpy(adv_pos.reshape(-1, k)[flat]).float()
        b_ret = torch.from_numpy(returns.reshape(-1)[flat]).float()
        b_adv = (b_adv - b_adv.mean(0)) / (b_adv.std() + 1e-8)  # centred per position (Â_j's mean falls with j)
        epochs, minibatches = (args.epochs, args.minibatches) if args.algo == "ppo" else (1, 1)
        stats = []
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(len(flat)))
            for mb in torch.tensor_split(order, minibatches):
                logits, value = net({key: v[mb] for key, v in b_obs.items()})
                logp = torch_position_log_probs(logits, b_act[mb], b_allowed[mb])
                old = b_logp[mb]
                if args.credit == "slate":  # one ratio per slate (its advantage is the same at every position)
                    logp, old = logp.sum(1, keepdim=True), old.sum(1, keepdim=True)
                adv_mb = b_adv[mb][:, : logp.shape[1]]
                if args.algo == "ppo":
                    ratio = torch.exp(logp - old)
                    clipped = torch.clamp(ratio, 1 - args.clip, 1 + args.clip)
                    pg_loss = -torch.min(ratio * adv_mb, clipped * adv_mb).mean()
                else:
                    pg_loss = -(logp * adv_mb).mean()
                first = torch.log_softmax(logits.masked_fill(~b_allowed[mb], -1e9), dim=1)
                entropy = -(first.exp() * first).sum(1).mean()
                v_loss = ((value - b_ret[mb]) ** 2).mean()
                loss = pg_loss + args.value_coef * v_loss - args.entropy_coef * entropy
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimizer.step()
                stats.append((pg_loss.item(), v_loss.item(), entropy.item()))

        # ---- log and checkpoint --------------------------------------------------------------------------
        wall = time.perf_counter() - t_start
        population = envs.unwrapped.population
        row = {
            "update": update + 1,
            "transitions": transitions,
            "sessions": len(finished["returns"]),
            "return_per_session": float(np.mean(finished["returns"])) if finished["returns"] else None,
            "pages_per_session": float(np.mean(finished["pages"])) if finished["pages"] else None,
            "exit_rate": finished["exits"] / len(finished["returns"]) if finished["returns"] else None,
            "returning_users": 1.0 - population.churned_users() / world.n_users,
            "day": population.day,
            "reward_per_page": float(buf_rew[buf_valid].mean()),
            "pg_loss": float(np.mean([s[0] for s in stats])),
            "value_loss": float(np.mean([s[1] for s in stats])),
            "entropy": float(np.mean([s[2] for s in stats])),
            "transitions_per_hour": 3600.0 * transitions / wall,
            "env_share": env_seconds / wall,
        }
        log_file.write(json.dumps(row) + "\n")
        log_file.flush()
        bar.set_postfix(ret=row["return_per_session"], rpp=round(row["reward_per_page"], 3))
        if (update + 1) % args.checkpoint_every == 0 or update + 1 == args.updates:
            so_far = earlier_seconds + time.perf_counter() - t_start
            policy = RLPolicy(net, name=f"rl-{args.algo}", slate_size=k, split_id=split.split_id, train_seconds=so_far)
            policy.save(out / "checkpoints" / f"update_{update + 1:04d}", extra={"update": update + 1, **asdict(args)})
    log_file.close()
    envs.close()

    wall = time.perf_counter() - t_start
    policy = RLPolicy(
        net, name=f"rl-{args.algo}", slate_size=k, split_id=split.split_id, train_seconds=earlier_seconds + wall
    )
    policy.save(out / "policy", extra={"algorithm": args.algo, **asdict(args)})
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    result = {
        "algorithm": args.algo,
        "policy": str(out / "policy"),
        "updates": last["update"],
        "transitions_this_run": transitions,
        "wall_seconds": wall,
        "transitions_per_hour": 3600.0 * transitions / wall,
        "env_share_of_wall": env_seconds / wall,
        "reward_per_page_first_update": first["reward_per_page"],
        "reward_per_page_last_update": last["reward_per_page"],
        "return_per_session_first_update": first["return_per_session"],
        "return_per_session_last_update": last["return_per_session"],
        "args": asdict(args),
    }
    lines = [
        f"# {args.algo.upper()} with a Plackett-Luce slate policy",
        "",
        f"Split `{args.split}`, rater `{args.rater}`, choice `{args.choice}`, reward `{args.reward}`,"
        f" {args.num_envs} session slots, training seed {args.seed}.",
        "",
        f"- {last['update']} updates; this run stepped {transitions:,} transitions in {wall:.0f} s"
        f" ({result['transitions_per_hour']:,.0f} transitions/hour; the env took"
        f" {100 * result['env_share_of_wall']:.0f}% of the wall time).",
        f"- Reward per page went from {first['reward_per_page']:.3f} (update {first['update']}) to"
        f" {last['reward_per_page']:.3f} (update {last['update']}).",
        f"- The saved policy: `{out / 'policy'}` (evaluate it with `recsim-personas benchmark --policies"
        f" rl:{out / 'policy'},...`).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(main(parse()), indent=2))
