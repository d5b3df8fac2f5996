"""Causal SLM agents (SmolLM2-135M-Instruct, offline) on a sample of the ML-100K protocol test ratings.

The prompt-only baseline (no fine-tuning; the rating read from the five rating-token logits) with and
without the bias-prior anchor, its unusable-response rate measured the paper's way (free greedy
generation, parsed), and a short single-adapter LoRA run (``--max-train`` RAFT examples, r = ``--rank``) for
each anchor setting — all scored on the same seeded ``--max-test`` test ratings as the classical raters.

Needs the world of ``benchmarks/agents_encoder_fidelity.py`` (split + personas with clusters and memory
index in ``--world``). Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/agents_causal_fidelity.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    world: str = "runs/bench/data"
    """directory with split/ and personas/ (clusters/, memory/), e.g. from agents_encoder_fidelity.py"""
    max_test: int = 100
    """test ratings scored (seeded sample)"""
    urr_sample: int = 50
    """free-generation answers for the URR"""
    max_train: int = 64
    """RAFT training examples of the LoRA run"""
    max_valid: int = 32
    """validation examples of the LoRA run"""
    rank: int = 16
    """LoRA rank (the paper's 256 is the library default; a CPU run uses less)"""
    memories: int = 1
    """memories per prompt"""
    max_length: int = 512
    """prompt budget (tokens)"""
    anchors: str = "bias,none"
    """anchor settings of the LoRA runs"""
    threads: int = 1
    """torch threads"""
    seed: int = 0
    """seed of the samples"""
    out: str = "runs/bench/agents_causal"
    """report and artifact directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def main() -> None:
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.agents.agent_artifact import load_world
    from recsim_personas.agents.agent_report import new_report, score_entry
    from recsim_personas.agents.backbone_config import BackboneConfig
    from recsim_personas.agents.classical import make_rater
    from recsim_personas.agents.persona_agents import PersonaAgents, measure_urr
    from recsim_personas.agents.train_config import LoraTrainConfig
    from recsim_personas.agents.training import train_agents

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    split, pset, clusters, index = load_world(str(Path(args.world) / "split"), str(Path(args.world) / "personas"))
    rng = np.random.default_rng(args.seed)
    test = split.test.iloc[np.sort(rng.choice(len(split.test), size=args.max_test, replace=False))]
    persona_of = dict(clusters.labels)
    report = new_report(test, persona_of, split.split_id)
    history = split.history()
    for name in ("bias", "mf"):
        report.entries.append(
            score_entry(make_rater(name).fit(history), test, persona_of, family="classical", variant=name)
        )
    backbone = BackboneConfig(kind="causal", max_length=args.max_length)
    timings: dict[str, float] = {}

    # prompt-only, with free-generation URR
    for anchor in ("none", "bias"):
        t0 = time.perf_counter()
        agents = PersonaAgents.prompt_only(
            split, pset, index, backbone=backbone, memories=args.memories, anchor=anchor, batch_size=8
        )
        urr = (0.0, "token scoring")
        if anchor == "none":
            sample = test.iloc[: args.urr_sample]
            value, answers = measure_urr(agents, sample["user_id"].to_numpy(), sample["item_id"].to_numpy())
            urr = (value, f"free greedy generation on {len(sample)} requests (token scoring itself: 0)")
            write_json(out / "urr_answers.json", {"answers": answers, "urr": value})
        entry = score_entry(
            agents,
            test,
            persona_of,
            family="agent",
            variant="prompt",
            memories=args.memories,
            anchor=anchor,
            urr=urr,
        )
        report.entries.append(entry)
        timings[entry.label] = time.perf_counter() - t0
        print(f"{entry.label}: RMSE {entry.overall.rmse_expected:.4f} URR {entry.urr:.3f}", file=sys.stderr, flush=True)
        report.save(out)

    # a short single-adapter LoRA run per anchor setting
    training = {}
    for anchor in args.anchors.split(","):
        tag = f"single-mem{args.memories}-{anchor}"
        cfg = LoraTrainConfig(
            variant="single",
            memories=args.memories,
            anchor=anchor,
            rank=args.rank,
            max_train=args.max_train,
            max_valid=args.max_valid,
            batch_size=8,
            eval_batch_size=8,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        result = train_agents(split, pset, clusters, index, backbone, cfg, out / "agents" / tag, progress=False)
        training[tag] = result.to_dict()
        agents = PersonaAgents.load(out / "agents" / tag, split, pset, index, batch_size=8)
        entry = score_entry(
            agents, test, persona_of, family="agent", variant="single", memories=args.memories, anchor=anchor
        )
        report.entries.append(entry)
        timings[entry.label] = time.perf_counter() - t0
        print(f"{entry.label}: RMSE {entry.overall.rmse_expected:.4f}", file=sys.stderr, flush=True)
        report.save(out)

    report.notes.append(
        f"Causal: SmolLM2-135M-Instruct (offline GGUF → float32), prompt budget {args.max_length} tokens ('paper'"
        f" template), {args.memories} memory; LoRA r={args.rank}, alpha=32, {args.max_train} RAFT examples, one"
        f" epoch; {args.threads} torch thread(s)."
    )
    paths = report.save(out)
    summary = {
        "args": asdict(args),
        "split_id": split.split_id,
        "n_test": len(test),
        "results": {
            e.label: {"rmse": e.overall.rmse_expected, "mae": e.overall.mae_expected, "urr": e.urr, "w1": e.overall.w1}
            for e in report.entries
        },
        "urr_method": {e.label: e.urr_method for e in report.entries if e.family == "agent"},
        "seconds_per_rater": timings,
        "training": training,
        "seconds": time.perf_counter() - t_start,
        "files": {k: str(v) for k, v in paths.items()},
    }
    write_json(out / "report.json", summary)
    atomic_write_text(out / "report.md", "# Causal SLM agents (sampled)\n\n" + report.to_markdown() + "\n")
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
