"""USER-LLM agents on the ML-100K protocol split: speed, FLOPs per rating and fidelity, beside the classical
raters and the text persona agents, and a table of variants (strategy × integration × anchoring; cross-attention
depth).

1. **Throughput**, side by side, round-robin over ``--repeats`` rounds (median): ratings/s of ``predict`` at the
   batch sizes of the env (10 = one page, 640 = a 64-wide vector env step) for the USER-LLM agent, the bias rater
   and (given ``--text-agents``) the text persona agents; and the 64-wide vector env driven by a random policy
   with each rater as the users (env steps/s, ratings/s through its batched calls).
2. **FLOPs per rating**, counted by ``torch.utils.flop_counter.FlopCounterMode`` on a batch, for the USER-LLM agent
   (its per-request path, caches warm) and the text agents (their forward over the real prompts).
3. **Fidelity** on every test rating: RMSE / MAE at the mean, NLL, rating-histogram W1 of the agent beside the bias
   and blend priors.
4. **Variants** (``--grid``, ``--depths``): agents trained with a fixed budget (``--grid-epochs`` epochs of at most
   ``--grid-chunks`` chunks) and scored on the test part, with their ratings/s. Finished variants with the same
   settings are reused from ``OUT/grid``.

Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/userllm_agents.py \\
        --split runs/bench/choice/split-seed0 --encoder runs/bench/userllm/encoder --agent runs/userllm/agent-blend \\
        --text-agents runs/cmp/agents-new --out runs/bench/userllm-agents
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    split: str = "runs/bench/choice/split-seed0"
    """the protocol split"""
    encoder: str = "runs/bench/userllm/encoder"
    """the pretrained user encoder of the split (from `userllm pretrain` or benchmarks/userllm_encoder.py)"""
    agent: str = "runs/userllm/agent-blend"
    """the trained USER-LLM agent measured in sections 1-3 (from `userllm train`)"""
    text_agents: str | None = None
    """trained text persona agents of the same split (from `agents train`), measured beside it"""
    text_test: int = 300
    """test ratings the text agents are scored on (seeded sample; they rate tens per second)"""
    grid: str = ""
    """variants "strategy/integration/anchor[/causal backbone]", comma-separated (e.g.
    enc/cross_attention/blend,proj/soft_prompt/none,enc/cross_attention/bias/smollm2)"""
    depths: str = ""
    """cross-attention depths to compare (layer counts, comma-separated, e.g. 6,4,2); enc, bias-anchored"""
    grid_epochs: int = 2
    """epochs of each variant"""
    grid_chunks: int = 400
    """chunks per epoch of each variant (each chunk is up to 16 ratings)"""
    grid_test: int = 2000
    grid_valid_share: float = 0.1
    """share of the history users each variant validates on (each epoch scores all their chunks: the strategies
    that run the backbone per batch pay for it)"""
    """test ratings the variants are scored on (seeded sample; the soft prompt runs the backbone per rating)"""
    widths: str = "12x32,4x32,4x16,2x16"
    """cross-attention widths (heads x head width) timed on the agent's caches with untrained blocks (speed only)"""
    variants_only: bool = False
    """train and score the variants only (sections 1-3 are skipped, e.g. while other work shares the machine)"""
    repeats: int = 3
    """round-robin rounds of the throughput measurements"""
    threads: int = 2
    """torch CPU threads"""
    seed: int = 0
    """seed of the samples"""
    out: str = "runs/bench/userllm-agents"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        if isinstance(value, bool):
            p.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=value)
            continue
        p.add_argument("--" + name.replace("_", "-"), type=type(value) if value is not None else str, default=value)
    return Args(**vars(p.parse_args()))


def ratings_per_second(rater, users: np.ndarray, items: np.ndarray, batch: int, min_seconds: float = 2.0) -> float:
    """Requests per second of ``rater.predict`` on batches of ``batch`` drawn in turn from ``users``/``items``."""
    rater.predict(users[:batch], items[:batch])  # warm caches
    done, start, k = 0, time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds or done == 0:
        sl = slice((k * batch) % max(len(users) - batch, 1), (k * batch) % max(len(users) - batch, 1) + batch)
        rater.predict(users[sl], items[sl])
        done += len(users[sl])
        k += 1
    return done / (time.perf_counter() - start)


def flops_per_rating(rater, users: np.ndarray, items: np.ndarray) -> float:
    """FLOPs ``torch.utils.flop_counter`` counts in ``rater.predict`` of a batch, per request (caches warm)."""
    from torch.utils.flop_counter import FlopCounterMode

    rater.predict(users, items)
    with FlopCounterMode(display=False) as counter:
        rater.predict(users, items)
    return counter.get_total_flops() / len(users)


def env_rates(world, steps: int, num_envs: int = 64) -> dict:
    """A random policy on the vector env: env steps/s and the rater's requests/s through its batched calls."""
    from recsim_personas.envs import MovieLensVectorEnv
    from recsim_personas.recommenders import RandomPolicy

    envs = MovieLensVectorEnv(num_envs, world=world, slate_size=10)
    policy = RandomPolicy(world.n_items, 10, seed=0)
    obs, _ = envs.reset(seed=0)
    calls = {"n": 0}
    inner = envs.population.rater

    class Counting:
        def predict(self, users, items):
            calls["n"] += len(users)
            return inner.predict(users, items)

        def observe(self, users, items, ratings):
            return inner.observe(users, items, ratings)

    envs.population.rater = Counting()
    start = time.perf_counter()
    for _ in range(steps):
        obs, *_ = envs.step(policy.act_batch(obs))
    seconds = time.perf_counter() - start
    return {"env_steps_per_s": steps / seconds, "ratings_per_s": calls["n"] / seconds}


def width_variants(agent, widths: list[tuple[int, int]], users, items) -> list[dict]:
    """Ratings/s at 640 of the agent with its cross-attention block at other widths (blocks untrained: the speed of
    the cached path does not depend on the weights). The final text states are computed once for all widths."""
    import copy

    import torch

    from recsim_personas.agents.userllm.model import UserLLM

    model = agent.model
    if not model.top_only:
        return []
    ids, mask = torch.as_tensor(agent.text_ids), torch.as_tensor(agent.text_mask)
    hidden = model.all_text_states(ids, mask, depth=model.n_layers)
    rows = []
    for heads, dim in widths:
        config = model.config.__class__.from_dict(
            model.config.to_dict() | {"cross_heads": heads, "cross_head_dim": dim}
        )
        variant = copy.copy(agent)
        variant.model = UserLLM(config, model.user_encoder, model.backbone).eval()
        variant.model.load_state_dict(
            {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}, strict=False
        )
        with torch.no_grad():
            variant._movies = variant.model.movie_cache(hidden, mask) | {"mask": mask}
        variant._state = None
        variant.logged_state()
        rows.append(
            {
                "heads": heads,
                "head_dim": dim,
                "inner_width": heads * dim,
                "trained": (heads, dim) == (model.config.cross_heads, model.config.cross_head_dim),
                "ratings_per_s_640": ratings_per_second(variant, users, items, 640, 2.0),
                "mflop_per_rating": flops_per_rating(variant, users[:640], items[:640]) / 1e6,
            }
        )
    return rows


def fidelity(rater, test) -> dict:
    from recsim_personas.agents.fidelity import evaluate_rater

    row = evaluate_rater(rater, test)
    return {k: getattr(row, k) for k in ("n", "rmse_expected", "mae_expected", "nll", "w1", "w1_user")}


def train_variant(split, encoder, out: Path, config, train) -> object:
    from recsim_personas.agents.userllm.agent import UserLLMAgent
    from recsim_personas.agents.userllm.train import train_userllm

    if (out / "manifest.json").is_file():
        agent = UserLLMAgent.load(out, split_id=split.split_id)
        if agent.model.config == config and agent.train_config == train:
            return agent
    return train_userllm(split, encoder, out, config=config, train=train, overwrite=True, progress=False)


def main(args: Args) -> dict:
    import torch

    from recsim_personas.agents.classical import make_rater
    from recsim_personas.agents.userllm.agent import UserLLMAgent
    from recsim_personas.agents.userllm.config import UserLLMConfig, UserLLMTrainConfig
    from recsim_personas.agents.userllm.pretrain import PretrainedEncoder
    from recsim_personas.data import load_split
    from recsim_personas.envs.world import make_world

    torch.set_num_threads(args.threads)
    split = load_split(args.split)
    t0 = time.perf_counter()
    agent = UserLLMAgent.load(args.agent, split_id=split.split_id)
    load_seconds = time.perf_counter() - t0
    history = split.history()
    bias = make_rater("bias").fit(history)
    blend = make_rater("blend").fit(history)
    raters = {"userllm": agent, "bias": bias}
    text = None
    if args.text_agents:
        from recsim_personas.agents.persona_agents import PersonaAgents

        text = PersonaAgents.open(args.text_agents, split)
        raters["text agents"] = text
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(split.test))
    users = split.test["user_id"].to_numpy()[order]
    items = split.test["item_id"].to_numpy()[order]

    t0 = time.perf_counter()
    agent.movie_states()
    agent.logged_state()
    load_seconds += time.perf_counter() - t0  # caches the load did not build already

    throughput: dict = {}
    env: dict = {}
    flops: dict = {}
    tokens: dict = {}
    width_rows: list = []
    fid: dict = {}
    if not args.variants_only:
        batches = (10, 640)
        rounds: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for name, rater in raters.items():
                for batch in batches:
                    if name == "text agents" and batch > 64:
                        continue
                    seconds = 2.0 if name != "text agents" else 5.0
                    rounds.setdefault(f"{name}/{batch}", []).append(
                        ratings_per_second(rater, users, items, batch, seconds)
                    )
        throughput = {k: statistics.median(v) for k, v in rounds.items()}

        env = {}
        for name, rater in (("userllm", agent), ("bias", bias)):
            world = make_world(split, rater, choice="fitted")
            env[name] = env_rates(world, steps=150)

        flops = {"userllm": flops_per_rating(agent, users[:640], items[:640])}
        c = agent.model.config
        tokens = {
            "userllm": {
                "user_tokens": c.n_latents,
                "text_tokens": float(agent.text_mask.sum(axis=1).mean()),
            }
        }
        if text is not None:
            flops["text agents"] = flops_per_rating(text, users[:16], items[:16])
            prompts, _ = text.prompts(users[:200], items[:200])
            tokens["text agents"] = {"prompt_tokens": float(np.mean([len(p) for p in prompts]))}
        widths = [tuple(int(x) for x in w.split("x")) for w in args.widths.split(",") if w.strip()]
        width_rows = width_variants(agent, widths, users, items)

        fid = {
            "userllm": fidelity(agent, split.test),
            "bias": fidelity(bias, split.test),
            "blend": fidelity(blend, split.test),
        }
        if text is not None:
            sample = split.test.iloc[np.sort(order[: args.text_test])]
            fid["text agents (sample)"] = fidelity(text, sample)
            fid["userllm (same sample)"] = fidelity(agent, sample)

    variants = []
    specs = [s.strip() for s in args.grid.split(",") if s.strip()]
    depth_specs = [int(d) for d in args.depths.split(",") if d.strip()]
    if specs or depth_specs:
        encoder = PretrainedEncoder.load(args.encoder, split_id=split.split_id)
        runs = []
        for spec in specs:
            strategy, integration, anchor, *backbone = spec.split("/")
            config = UserLLMConfig(integration=integration)
            if backbone:  # a causal backbone by name, e.g. smollm2
                config = UserLLMConfig(integration=integration, backbone=backbone[0], backbone_kind="causal")
            runs.append((spec, config, strategy, anchor))
        for depth in depth_specs:
            runs.append((f"enc/cross_attention@{depth}/bias", UserLLMConfig(cross_layers=(depth,)), "enc", "bias"))
        sample = split.test.iloc[np.sort(order[: args.grid_test])]
        fid["userllm (variant sample)"] = fidelity(agent, sample)
        for name, config, strategy, anchor in runs:
            train = UserLLMTrainConfig(
                strategy=strategy,
                anchor=anchor,
                epochs=args.grid_epochs,
                max_chunks_per_epoch=args.grid_chunks,
                validation_share=args.grid_valid_share,
            )
            t0 = time.perf_counter()
            variant = train_variant(split, encoder, Path(args.out) / "grid" / name.replace("/", "_"), config, train)
            seconds = time.perf_counter() - t0
            row = {
                "name": name,
                "strategy": strategy,
                "integration": config.integration,
                "backbone": config.backbone,
                "cross_layers": list(variant.model.cross_layers),
                "anchor": anchor,
                "train_seconds": variant.report.get("seconds", seconds),
                "trainable_parameters": variant.report.get("trainable_parameters"),
                **fidelity(variant, sample),
            }
            variant.movie_states()
            variant.logged_state()
            row["ratings_per_s_640"] = ratings_per_second(variant, users, items, 640, 2.0)
            variants.append(row)

    return {
        "args": asdict(args),
        "split_id": split.split_id,
        "agent": {
            "path": args.agent,
            "config": agent.model.config.to_dict(),
            "train_config": agent.train_config.to_dict(),
            "report": {k: v for k, v in agent.report.items() if k != "curve"},
            "load_seconds": load_seconds,
            "dtype": agent.dtype,
            "cross_layers": list(agent.model.cross_layers),
            "precision": None if agent.precision is None else agent.precision.to_dict(),
        },
        "throughput": throughput,
        "env": env,
        "flops_per_rating": flops,
        "tokens_per_rating": tokens,
        "widths": width_rows,
        "fidelity": fid,
        "variants": variants,
    }


def render_variants(result: dict) -> list[str]:
    """The variants section (empty without variants)."""
    rows, f, args = result["variants"], result["fidelity"], result["args"]
    if not rows:
        return []
    ref = f["userllm (variant sample)"]
    lines = [
        "",
        "## Variants (same budget each)",
        "",
        f"Each trained for {args['grid_epochs']} epoch(s) of at most {args['grid_chunks']} chunks (validating on"
        f" {args.get('grid_valid_share', 0.1):.0%} of the history users) and scored on the"
        f" same {args['grid_test']:,} sampled test ratings (the agent `{result['agent']['path']}` scores RMSE"
        f" {ref['rmse_expected']:.4f}, NLL {ref['nll']:.4f} on them).",
        "",
        "| variant | backbone | strategy | integration | layers | anchor | trained params | train s | RMSE | MAE |"
        " NLL | ratings/s (640) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r.get('backbone', 'minilm')} | {r['strategy']} | {r['integration']} |"
            f" {r['cross_layers']} | {r['anchor']} | {r['trainable_parameters']:,} | {r['train_seconds']:.0f} |"
            f" {r['rmse_expected']:.4f} | {r['mae_expected']:.4f} | {r['nll']:.4f} | {r['ratings_per_s_640']:,.0f} |"
        )
    lines.append("")
    anchored = [r for r in rows if r["anchor"] != "none"]
    if anchored:
        spread = max(r["nll"] for r in anchored) - min(r["nll"] for r in anchored)
        lines.append(f"- The anchored variants' NLL spans {spread:.4f} at this budget.")
    pairs = {}
    for r in rows:
        pairs.setdefault((r["strategy"], r["integration"], r.get("backbone"), str(r["cross_layers"])), {})[
            r["anchor"] != "none"
        ] = r
    gains = [p[True]["nll"] - p[False]["nll"] for p in pairs.values() if True in p and False in p]
    if gains:
        lines.append(
            f"- Anchoring changed the NLL by {min(gains):+.4f} to {max(gains):+.4f} over the {len(gains)}"
            " strategy × integration pairs trained both ways."
        )
    by_kind = {}
    for r in rows:
        by_kind.setdefault(r["integration"], []).append(r["ratings_per_s_640"])
    if len(by_kind) == 2:
        x, sp = statistics.median(by_kind["cross_attention"]), statistics.median(by_kind["soft_prompt"])
        lines.append(
            f"- Median ratings/s at 640: cross-attention {x:,.0f}, soft prompt {sp:,.0f} ({x / sp:,.0f}× as fast)."
        )
    best = min(rows, key=lambda r: r["nll"])
    fastest = max(rows, key=lambda r: r["ratings_per_s_640"])
    lines.append(
        f"- Lowest NLL: {best['name']} ({best['nll']:.4f}); fastest: {fastest['name']}"
        f" ({fastest['ratings_per_s_640']:,.0f} ratings/s)."
    )
    return lines


def render(result: dict) -> str:
    t, f, fl, env = result["throughput"], result["fidelity"], result["flops_per_rating"], result["env"]
    a = result["agent"]
    if not t:  # --variants-only
        return "\n".join(["# USER-LLM agent variants (ML-100K protocol split)", *render_variants(result)]) + "\n"
    lines = [
        "# USER-LLM agents (ML-100K protocol split)",
        "",
        f"Agent `{a['path']}`: {a['train_config']['strategy']} strategy, {a['config']['integration']}"
        f" (layers {a['cross_layers']}), anchored on {a['train_config']['anchor']}; loading it with its"
        f" movie and user caches ready took {a['load_seconds']:.1f} s.",
        "",
        f"It runs in {a.get('dtype', 'float32')}"
        + (f" (measured on this machine: {a['precision']['reason']})" if a.get("precision") else "")
        + ".",
        "",
        "## Throughput (ratings/s of predict, median of the rounds)",
        "",
        "| rater | batch 10 | batch 640 |",
        "|---|---|---|",
    ]
    names = sorted({k.split("/")[0] for k in t}, key=lambda n: ["userllm", "bias", "text agents"].index(n))
    for name in names:
        cells = [f"{t[f'{name}/{b}']:,.0f}" if f"{name}/{b}" in t else "–" for b in (10, 640)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines.append("")
    lines.append(
        f"At a 640-request batch the agent rates {t['userllm/640']:,.0f} ratings/s; the bias rater (a table"
        f" lookup) is {t['bias/640'] / t['userllm/640']:,.0f}× faster."
    )
    if "text agents/10" in t:
        lines.append(
            f"At a page of 10 it rates {t['userllm/10'] / t['text agents/10']:.0f}× as many ratings/s as the text"
            " persona agents."
        )
    lines += [
        "",
        "| env: 64-wide vector env, random policy | env steps/s | ratings/s through the rater |",
        "|---|---|---|",
    ]
    for name, r in env.items():
        lines.append(f"| {name} | {r['env_steps_per_s']:,.0f} | {r['ratings_per_s']:,.0f} |")
    if "userllm" in env and env["userllm"]["ratings_per_s"] > 0:
        lines += [
            "",
            f"Through the env the agent served {env['userllm']['ratings_per_s']:,.0f} ratings/s, the bias rater"
            f" {env['bias']['ratings_per_s'] / env['userllm']['ratings_per_s']:,.1f}× that.",
        ]
    lines += ["", "## FLOPs and tokens per rating (torch FlopCounterMode)", ""]
    for name, v in fl.items():
        lines.append(f"- {name}: {v / 1e6:,.2f} MFLOP")
    if "text agents" in fl:
        lines.append(f"- The text agents spend {fl['text agents'] / fl['userllm']:,.0f}× the agent's FLOPs per rating.")
    tk = result.get("tokens_per_rating") or {}
    if "userllm" in tk:
        u = tk["userllm"]
        line = (
            f"- Tokens: the agent reads {u['user_tokens']} user tokens against the cached queries of the movie's"
            f" {u['text_tokens']:.1f} description tokens (mean) per rating"
        )
        if "text agents" in tk:
            line += (
                f"; a text persona agent runs its backbone over {tk['text agents']['prompt_tokens']:.0f} prompt tokens"
            )
        lines.append(line + ".")
    if result.get("widths"):
        lines += [
            "",
            "## Cross-attention width (speed of the cached path; blocks untrained except the agent's own width)",
            "",
            "| heads × width | inner width | trained | ratings/s (640) | MFLOP/rating |",
            "|---|---|---|---|---|",
        ]
        for r in result["widths"]:
            lines.append(
                f"| {r['heads']} × {r['head_dim']} | {r['inner_width']} | {'yes' if r['trained'] else 'no'} |"
                f" {r['ratings_per_s_640']:,.0f} | {r['mflop_per_rating']:.2f} |"
            )
        wide = max(result["widths"], key=lambda r: r["inner_width"])
        narrow = min(result["widths"], key=lambda r: r["inner_width"])
        lines += [
            "",
            f"The narrowest block ({narrow['heads']} × {narrow['head_dim']}) rates"
            f" {narrow['ratings_per_s_640'] / wide['ratings_per_s_640']:.1f}× as fast as the widest"
            f" ({wide['heads']} × {wide['head_dim']}), at {narrow['mflop_per_rating'] / wide['mflop_per_rating']:.2f}×"
            " its FLOPs per rating.",
        ]
    lines += [
        "",
        "## Fidelity on the test part",
        "",
        "| rater | ratings | RMSE | MAE | NLL | W1 | W1 per user |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in f.items():
        lines.append(
            f"| {name} | {r['n']:,} | {r['rmse_expected']:.4f} | {r['mae_expected']:.4f} | {r['nll']:.4f} |"
            f" {r['w1']:.4f} | {r['w1_user']:.4f} |"
        )
    u, b = f["userllm"], f["blend"]
    lines += [
        "",
        f"Against the blend prior the agent's RMSE is {u['rmse_expected'] - b['rmse_expected']:+.4f}, MAE"
        f" {u['mae_expected'] - b['mae_expected']:+.4f}, NLL {u['nll'] - b['nll']:+.4f}, W1 {u['w1'] - b['w1']:+.4f}.",
    ]
    lines += render_variants(result)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = parse()
    result = main(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    (out / "report.md").write_text(render(result))
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, default=float))
