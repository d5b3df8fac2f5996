"""Which RecBole models plug in: every general and sequential model of RecBole 1.2.1, one short training each.

Top to bottom: load the ML-100K protocol split (prepare it first with
``recsim-personas data prepare --dataset ml-100k --out runs/split``) and its simulation world, then per model
of RecBole's own registry (``recbole.model.general_recommender`` / ``sequential_recommender``): build its
``RecBoleConfig`` (``--epochs`` epochs, no early stopping; a small ``--embedding-size`` and
``--max-seq-len`` so that one epoch of each model stays short on 2 cores; the adapter's defaults otherwise),
train it on the split's history through ``train_recbole``, and score it offline through our policy
(``evaluate_offline``: NDCG@10 on the held-out test part, full ranking, history excluded). Each model ends as

- **ok** — trained and scored (NDCG@10, seconds);
- **refused** — the adapter refuses it by name (``ConfigError``: it needs item features, a knowledge graph,
  a click label), with the reason;
- **failed** — RecBole failed while building, training or scoring it (``PolicyError``, the error), or an
  error the adapter did not wrap (``unwrapped``: a bug to fix).

Each model's result is written to ``OUT/results/<Model>.json`` as soon as it is known, and a rerun skips the
models already there (``--rerun-failed`` retries the failed ones), so the sweep can be stopped and resumed.
Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/recbole_compat_sweep.py --split runs/split --out runs/bench/recbole_compat
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class Args:
    split: str = "runs/split"
    """the ML-100K protocol split (from `recsim-personas data prepare --dataset ml-100k --out runs/split`)"""
    out: str = "runs/bench/recbole_compat"
    """report directory (per-model results in OUT/results/, reused by a rerun)"""
    models: list[str] = field(default_factory=list)
    """models to try (default: every general and sequential model in RecBole's registry)"""
    epochs: int = 1
    """training epochs of each model"""
    embedding_size: int = 32
    """embedding size (hidden size of sequential models); small, so one epoch of each model is short on 2 cores"""
    max_seq_len: int = 20
    """longest history a sequential model reads (the gap benchmark's SASRec setting)"""
    rerun_failed: bool = False
    """train the models whose stored result is 'failed' again"""


def parse() -> Args:
    """One flag per field of :class:`Args` (``--rerun-failed`` for ``rerun_failed``), its default from there."""
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Args):
        default, flag = getattr(defaults, f.name), "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action="store_true", default=default)
        elif isinstance(default, list):
            p.add_argument(flag, dest=f.name, nargs="*", default=default)
        else:
            p.add_argument(flag, dest=f.name, type=type(default), default=default)
    return Args(**vars(p.parse_args()))


def try_model(name: str, kind: str, split, world, args: Args) -> dict:
    """Train and score one model; the result row (status ok / refused / failed)."""
    from recsim_personas.errors import ConfigError, RecsimPersonasError
    from recsim_personas.recommenders import RecBoleConfig, evaluate_offline, train_recbole

    settings = {"epochs": args.epochs, "embedding_size": args.embedding_size, "max_seq_len": args.max_seq_len}
    row: dict = {"model": name, "kind": kind, **settings, "split_id": split.split_id}
    t0 = time.perf_counter()
    try:
        config = RecBoleConfig(model=name, **settings)
    except ConfigError as exc:
        return {**row, "status": "refused", "why": str(exc), "seconds": 0.0}
    try:
        policy = train_recbole(split, config, slate_size=10, progress=False)
        row["train_seconds"] = round(time.perf_counter() - t0, 1)
        metrics = evaluate_offline(policy, world, split.test, k=10)
        row.update(status="ok", ndcg10=round(metrics.ndcg, 4), recall10=round(metrics.recall, 4))
    except RecsimPersonasError as exc:
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # not wrapped by the adapter: keep the place it came from
        where = traceback.extract_tb(exc.__traceback__)[-1]
        row.update(
            status="failed", unwrapped=True, error=f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
        )
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def markdown(rows: list[dict], split_id: str, args: Args) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "refused", "failed")}
    lines = [
        f"# RecBole compatibility sweep: {len(rows)} general and sequential models on split {split_id[:12]}",
        "",
        f"{args.epochs} epoch(s) each, embedding size {args.embedding_size}, sequences of at most {args.max_seq_len}"
        " items, adapter defaults otherwise; NDCG@10 through our policy on the held-out test part."
        f" ok {counts['ok']}, refused {counts['refused']}, failed {counts['failed']}.",
        "",
        "| model | kind | status | NDCG@10 | seconds | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["kind"], r["model"].lower())):
        note = r.get("why") or r.get("error") or ""
        note = note.split(" Fix:")[0].replace("|", "/").replace("\n", " ")
        ndcg = f"{r['ndcg10']:.4f}" if "ndcg10" in r else "–"
        lines.append(f"| {r['model']} | {r['kind']} | {r['status']} | {ndcg} | {r['seconds']:.0f} | {note[:160]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = parse()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("recsim_personas").setLevel(logging.INFO)
    logging.getLogger("__main__").setLevel(logging.INFO)

    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.data.protocol import Split
    from recsim_personas.envs import make_world
    from recsim_personas.recommenders.recbole_config import recbole_models

    log = logging.getLogger("__main__")
    out = Path(args.out)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)

    # 1. the split and its world (the policy's observations come from it; its rater is not used here)
    split = Split.load(args.split)
    world = make_world(split)

    # 2. every model of RecBole's registry (or the ones asked for), resumable: a stored result is kept
    registry = recbole_models()
    names = args.models or sorted(registry, key=str.lower)
    rows = []
    for i, name in enumerate(names, 1):
        path = results / f"{name}.json"
        if path.is_file():
            row = json.loads(path.read_text())
            settings = (args.epochs, args.embedding_size, args.max_seq_len, split.split_id)
            same = tuple(row.get(k) for k in ("epochs", "embedding_size", "max_seq_len", "split_id")) == settings
            if same and not (args.rerun_failed and row["status"] == "failed"):
                rows.append(row)
                continue
        log.info("[%d/%d] %s", i, len(names), name)
        row = try_model(name, registry.get(name, "?"), split, world, args)
        write_json(path, row)
        log.info("%s: %s (%.0f s)", name, row["status"], row["seconds"])
        rows.append(row)

    # 3. the report
    report = markdown(rows, split.split_id, args)
    atomic_write_text(out / "report.md", report)
    payload = {
        "args": asdict(args),
        "split_id": split.split_id,
        "counts": {s: sum(r["status"] == s for r in rows) for s in ("ok", "refused", "failed")},
        "results": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    write_json(out / "report.json", payload)
    print(json.dumps(payload, default=str))
