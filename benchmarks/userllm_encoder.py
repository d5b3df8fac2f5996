"""The USER-LLM user encoder's next-item accuracy beside RecBole SASRec (and Pop, BPR) on the same split.

Pretrains the user encoder on the ML-100K protocol split's history (or reuses a finished encoder with the same
settings in ``OUT/encoder``; an interrupted pretraining resumes), then scores next-item Recall@10 / NDCG@10 /
MRR@10 on the test part — each sampled user's train part read, every movie it did not rate there ranked, the
top 10 compared with its test movies — beside RecBole SASRec, BPR and popularity through the gap report's own
offline evaluation (``evaluate_offline``: RecBole's full-ranking definitions). RecBole models are reused from
``--models`` when trained on this split with the same settings. Prints one JSON object and writes
``report.md`` / ``report.json`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/userllm_encoder.py --out runs/bench/userllm
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (default: $RECSIM_PERSONAS_DATA_DIR, then cache/download)"""
    split: str | None = None
    """an existing split directory (default: prepare the ML-100K protocol split, seed 0, into OUT/split)"""
    epochs: int = 30
    """pretraining epochs (early stopping on the validation users may stop sooner)"""
    d_model: int = 64
    """encoder width"""
    n_layers: int = 2
    """encoder Transformer layers"""
    threads: int = 2
    """torch CPU threads"""
    baselines: str = "pop,recbole:BPR,recbole:SASRec"
    """policies scored beside the encoder"""
    models: str | None = None
    """directory of trained RecBole models to reuse / save (default OUT/models)"""
    out: str = "runs/bench/userllm"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        kind = type(value) if value is not None else str
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    return Args(**vars(p.parse_args()))


def main(args: Args) -> dict:
    import torch

    from recsim_personas.agents.userllm.config import PretrainConfig, UserEncoderConfig
    from recsim_personas.agents.userllm.pretrain import PretrainedEncoder, next_item_metrics, pretrain_encoder
    from recsim_personas.artifacts import has_manifest
    from recsim_personas.data import ProtocolConfig, load_split, prepare_split
    from recsim_personas.envs.world import make_world
    from recsim_personas.recommenders.gap_policies import build_policy, parse_policies
    from recsim_personas.recommenders.offline import evaluate_offline

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.split:
        split = load_split(args.split)
    elif (out / "split" / "manifest.json").is_file():
        split = load_split(out / "split")
    else:
        split, _ = prepare_split(ProtocolConfig(seed=0), out / "split", data_dir=args.data_dir)

    encoder_config = UserEncoderConfig(d_model=args.d_model, n_layers=args.n_layers)
    config = PretrainConfig(epochs=args.epochs)
    target = out / "encoder"
    reused = False
    if has_manifest(target):
        encoder = PretrainedEncoder.load(target, split_id=split.split_id)
        reused = encoder.encoder_config == encoder_config and encoder.config == config
    if not reused:
        encoder = pretrain_encoder(split, target, encoder_config=encoder_config, config=config, overwrite=True)
    t0 = time.perf_counter()
    metrics = next_item_metrics(encoder, split)
    score_seconds = time.perf_counter() - t0

    world = make_world(split, "bias", choice="handset")
    rows = [
        {
            "model": "user encoder",
            "recall": metrics["recall@10"],
            "ndcg": metrics["ndcg@10"],
            "mrr": metrics["mrr@10"],
            "users": metrics["users"],
            "train_seconds": encoder.report.get("seconds"),
        }
    ]
    models_dir = Path(args.models) if args.models else out / "models"
    for name in parse_policies(args.baselines):
        policy = build_policy(name, split, world, models_dir=models_dir, progress=False)
        m = evaluate_offline(policy, world, split.test, k=10)
        rows.append(
            {
                "model": name,
                "recall": m.recall,
                "ndcg": m.ndcg,
                "mrr": m.mrr,
                "users": m.users,
                "train_seconds": getattr(policy, "train_seconds", None),
            }
        )
    return {
        "args": asdict(args),
        "split_id": split.split_id,
        "encoder": {
            "reused": reused,
            "parameters": encoder.report.get("parameters"),
            "best_epoch": encoder.report.get("best_epoch"),
            "epochs_run": encoder.report.get("epochs_run"),
            "curve": encoder.report.get("curve"),
            "score_seconds": score_seconds,
        },
        "rows": rows,
    }


def render(result: dict) -> str:
    rows = {r["model"]: r for r in result["rows"]}
    enc = rows["user encoder"]
    e = result["encoder"]
    lines = [
        "# User encoder: next-item accuracy on the test part (ML-100K protocol split)",
        "",
        f"Split {result['split_id']}; {enc['users']} sampled users; full ranking of the movies a user did not rate"
        " in its train part, k = 10. The encoder: "
        f"{e['parameters']:,} parameters, best epoch {e['best_epoch']} of {e['epochs_run']}"
        + (" (reused)." if e["reused"] else "."),
        "",
        "| model | Recall@10 | NDCG@10 | MRR@10 | train s |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        seconds = f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "–"
        lines.append(f"| {r['model']} | {r['recall']:.4f} | {r['ndcg']:.4f} | {r['mrr']:.4f} | {seconds} |")
    lines.append("")
    for name, r in rows.items():
        if name == "user encoder":
            continue
        lines.append(
            f"- The encoder's NDCG@10 is {enc['ndcg'] / r['ndcg']:.2f}× {name}'s"
            f" (Recall@10 {enc['recall'] / r['recall']:.2f}×)."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = parse()
    result = main(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    (out / "report.md").write_text(render(result))
    print(
        json.dumps(
            {k: v for k, v in result.items() if k != "encoder"}
            | {"encoder": {k: v for k, v in result["encoder"].items() if k != "curve"}},
            default=float,
        )
    )
