"""Encoder persona agents on the ML-100K protocol: every variant's fidelity beside the classical raters.

The paper's protocol split of ML-100K (200 users, seed 0), offline personas, K clusters by the elbow rule and
the FAISS memory index (built here if ``--world`` lacks them). Then, for every variant of the MiniLM-L6
agent — single LoRA / persona LoRAs × 0 / 1 memories × anchored on the bias prior / unanchored (or, with
``--anchors mf``, anchored on the biased-MF prior) — train (``--max-train`` RAFT examples, early stopping on
``--max-valid`` validation examples) and score it on the same seeded sample of ``--max-test`` test ratings as
the classical raters (RMSE, MAE, URR, W1, per persona). Resumable: rerunning the script skips finished
variants, and every variant's scores are kept in ``--out``/entries/ so a rerun does not rate again.

Prints one JSON object and writes ``report.md``, ``report.json`` and ``agents_fidelity.png`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=/path/to/movielens .venv/bin/python benchmarks/agents_encoder_fidelity.py
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
    """directory with split/ and personas/ (with clusters/ and memory/); built when missing"""
    max_train: int = 600
    """RAFT training examples per variant (all adapters together)"""
    max_valid: int = 200
    """validation examples per variant"""
    max_test: int = 1000
    """test ratings scored (seeded sample; 0 = all 11,474)"""
    memory_settings: str = "0,1"
    """comma-separated memories per prompt (0 = Ms only)"""
    anchors: str = "bias,none"
    """comma-separated anchoring priors (bias, mf, none)"""
    rank: int = 16
    """LoRA rank"""
    epochs: int = 1
    """epochs at most"""
    max_length: int = 256
    """encoder prompt budget (tokens)"""
    threads: int = 1
    """torch threads (1 is faster than 2 when another job shares the two cores)"""
    seed: int = 0
    """seed of the split, the training samples and the test sample"""
    variants: str = "single,persona"
    """comma-separated variants"""
    out: str = "runs/bench/agents_encoder"
    """report and artifact directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def build_world(root: Path, seed: int) -> None:
    """Split, offline personas, clusters (elbow) and memory index, unless already there."""
    from recsim_personas._io import sha256_file
    from recsim_personas.data import ProtocolConfig, prepare_split
    from recsim_personas.personas.clustering import cluster_personas, save_clusters
    from recsim_personas.personas.distill import distill_personas
    from recsim_personas.personas.embedders import make_embedder
    from recsim_personas.personas.memory import MemoryIndex
    from recsim_personas.personas.stats_distiller import StatsDistiller

    split, _ = prepare_split(ProtocolConfig(dataset="ml-100k", seed=seed), root / "split")
    pset, _ = distill_personas(split, root / "personas", StatsDistiller())
    embedder = make_embedder("local")
    if not (pset.path / "clusters" / "clusters.json").is_file():
        save_clusters(cluster_personas(pset, embedder), pset.path / "clusters")
    if not (pset.path / "memory" / "manifest.json").is_file():
        index = MemoryIndex.build(pset, split.catalog(), embedder)
        index.save(pset.path / "memory", personas_manifest=sha256_file(pset.path / "manifest.json"))


def main() -> None:
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    from recsim_personas._io import write_json
    from recsim_personas.agents.agent_artifact import load_world
    from recsim_personas.agents.agent_report import ReportEntry, new_report, score_entry
    from recsim_personas.agents.backbone_config import BackboneConfig
    from recsim_personas.agents.classical import make_rater
    from recsim_personas.agents.persona_agents import PersonaAgents
    from recsim_personas.agents.train_config import LoraTrainConfig
    from recsim_personas.agents.training import train_agents

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    build_world(Path(args.world), args.seed)
    split, pset, clusters, index = load_world(str(Path(args.world) / "split"), str(Path(args.world) / "personas"))
    test = split.test
    if args.max_test and args.max_test < len(test):
        rng = np.random.default_rng(args.seed)
        test = test.iloc[np.sort(rng.choice(len(test), size=args.max_test, replace=False))]
    persona_of = dict(clusters.labels)
    report = new_report(test, persona_of, split.split_id)
    report.notes.append(
        f"Encoder: MiniLM-L6, LoRA r={args.rank}, alpha=32, {args.max_train} RAFT training examples per variant,"
        f" {args.epochs} epoch(s), early stopping on {args.max_valid} validation examples, prompt budget"
        f" {args.max_length} tokens (compact template), {args.threads} torch thread(s)."
    )
    history = split.history()
    for name in ("global", "item", "bias", "mf"):
        rater = make_rater(name).fit(history)
        report.entries.append(score_entry(rater, test, persona_of, family="classical", variant=name))
    backbone = BackboneConfig(kind="encoder", max_length=args.max_length)
    training = {}
    for variant in args.variants.split(","):
        for memories in [int(m) for m in args.memory_settings.split(",")]:
            for anchor in args.anchors.split(","):
                tag = f"{variant}-mem{memories}-{anchor}"
                cfg = LoraTrainConfig(
                    variant=variant,
                    memories=memories,
                    anchor=anchor,
                    rank=args.rank,
                    epochs=args.epochs,
                    max_train=args.max_train,
                    max_valid=args.max_valid,
                    seed=args.seed,
                )
                t0 = time.perf_counter()
                result = train_agents(split, pset, clusters, index, backbone, cfg, out / "agents" / tag, progress=False)
                training[tag] = {"seconds": time.perf_counter() - t0, **result.to_dict()}
                saved = out / "entries" / f"{tag}-{len(test)}.json"
                if saved.is_file():
                    entry = ReportEntry.from_dict(json.loads(saved.read_text()))
                else:
                    agents = PersonaAgents.load(out / "agents" / tag, split, pset, index, batch_size=32)
                    entry = score_entry(
                        agents, test, persona_of, family="agent", variant=variant, memories=memories, anchor=anchor
                    )
                    write_json(saved, entry.to_dict())
                report.entries.append(entry)
                print(
                    f"{tag}: RMSE {entry.overall.rmse_expected:.4f} MAE {entry.overall.mae_expected:.4f}"
                    f" ({training[tag]['seconds']:.0f}s training)",
                    file=sys.stderr,
                    flush=True,
                )
                report.save(out)
    paths = report.save(out)
    agents_rows = [e for e in report.entries if e.family == "agent"]
    best = min(agents_rows, key=lambda e: e.overall.rmse_expected)
    summary = {
        "args": asdict(args),
        "split_id": split.split_id,
        "n_test": len(test),
        "results": {
            e.label: {
                "rmse": e.overall.rmse_expected,
                "mae": e.overall.mae_expected,
                "mae_median": e.overall.mae_median,
                "urr": e.urr,
                "w1": e.overall.w1,
                "nll": e.overall.nll,
            }
            for e in report.entries
        },
        "best_agent": {
            "label": best.label,
            "rmse": best.overall.rmse_expected,
            "mae": best.overall.mae_expected,
            "mae_median": best.overall.mae_median,
        },
        "targets_met": {
            "rmse<=0.93": best.overall.rmse_expected <= 0.93,
            "mae<=0.73 (mean)": best.overall.mae_expected <= 0.73,
            "mae<=0.73 (median)": best.overall.mae_median <= 0.73,
        },
        "training": training,
        "seconds": time.perf_counter() - t_start,
        "files": {k: str(v) for k, v in paths.items()},
    }
    from recsim_personas._io import atomic_write_text

    write_json(out / "report.json", summary)
    atomic_write_text(out / "report.md", "# Encoder persona agents on ML-100K\n\n" + report.to_markdown() + "\n")
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
