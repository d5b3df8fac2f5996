"""How low can the test RMSE go with the signals the agents hold? Classical and content residuals on top of MF.

The persona agents anchor on a classical prior and learn a residual from the prompt (persona, retrieved
memories — past ratings with reasons — and the movie). This script measures, without any language model,
what such residuals can be worth on the protocol split, as an upper bound for the agents' RMSE target:

- the classical raters ``mf``, ``knn`` (item-kNN with baseline) and ``blend`` (hold-out-weighted), fitted on
  the history;
- ``mf + a * cf``: MF plus ``a`` times the item-kNN residual (``knn``'s prediction minus its bias baseline);
- ``mf + a * content(k)``: MF plus ``a`` times the similarity-weighted mean of the user's MF residuals on the
  ``k`` rated movies whose descriptions are most similar to the requested one (cosine of the MiniLM
  description embeddings of the memory index — what memory retrieval sees);
- ``mf + a * cf + b * content(k)``.

The weights ``a``, ``b`` and ``k`` are chosen **on the test part itself** (a grid), so these rows are
optimistic bounds, not fair models; the classical rows are fitted without the test part. Prints one JSON
object and writes ``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/rating_ceiling.py --world runs/bench/data
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    world: str = "runs/bench/data"
    """directory with split/ and personas/ (memory/), e.g. from agents_encoder_fidelity.py"""
    out: str = "runs/bench/rating_ceiling"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def content_residual(index, train, residual: np.ndarray, users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Similarity-weighted mean of the user's train residuals on the k rated movies most similar to each item."""
    out = np.zeros(len(users))
    by_user = {u: (g["item_id"].to_numpy(), residual[g.index]) for u, g in train.groupby("user_id")}
    for n, (u, i) in enumerate(zip(users, items, strict=True)):
        if u not in by_user:
            continue
        js, zs = by_user[u]
        sims = index.item_vector(js) @ index.item_vector(np.array([i]))[0]
        top = np.argsort(-sims)[:k]
        w = np.maximum(sims[top], 0.0)
        out[n] = (w * zs[top]).sum() / (w.sum() + 1.0)
    return out


def main() -> None:
    args = parse()
    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.agents.agent_artifact import load_world
    from recsim_personas.agents.classical import make_rater

    t0 = time.perf_counter()
    world = Path(args.world)
    split, _, _, index = load_world(str(world / "split"), str(world / "personas"), need_clusters=False)
    history, test = split.history(), split.test
    train = split.train.reset_index(drop=True)
    users, items = test["user_id"].to_numpy(), test["item_id"].to_numpy()
    y = test["rating"].to_numpy(dtype=np.float64)

    def rmse(pred: np.ndarray) -> float:
        return float(np.sqrt(np.mean((np.clip(pred, 1, 5) - y) ** 2)))

    raters = {name: make_rater(name).fit(history) for name in ("bias", "mf", "knn", "blend")}
    point = {name: r.predict_point(users, items) for name, r in raters.items()}
    rows = {name: {"rmse": rmse(p), "tuned_on_test": False} for name, p in point.items()}
    knn = raters["knn"]
    cf = knn._predict_point(users, items) - knn.base_._predict_point(users, items)
    mf_train = raters["mf"].predict_point(train["user_id"].to_numpy(), train["item_id"].to_numpy())
    residual = train["rating"].to_numpy(dtype=np.float64) - mf_train
    content = {k: content_residual(index, train, residual, users, items, k) for k in (1, 3, 10, 30)}
    grid = np.round(np.arange(0.0, 1.21, 0.1), 2)
    best_cf = min((rmse(point["mf"] + a * cf), a) for a in grid)
    rows["mf + a*cf"] = {"rmse": best_cf[0], "a": best_cf[1], "tuned_on_test": True}
    for k, c in content.items():
        best = min((rmse(point["mf"] + b * c), b) for b in grid)
        rows[f"mf + b*content({k})"] = {"rmse": best[0], "b": best[1], "tuned_on_test": True}
    best_both = min(
        (rmse(point["mf"] + a * cf + b * c), a, b, k) for (k, c), a, b in itertools.product(content.items(), grid, grid)
    )
    rows["mf + a*cf + b*content(k)"] = {
        "rmse": best_both[0],
        "a": best_both[1],
        "b": best_both[2],
        "k": best_both[3],
        "tuned_on_test": True,
    }
    summary = {"args": asdict(args), "n_test": len(test), "rows": rows, "seconds": time.perf_counter() - t0}
    out = Path(args.out)
    write_json(out / "report.json", summary)
    lines = [
        "# How low can the RMSE go?",
        "",
        f"{len(test):,} test ratings of the protocol split ({split.split_id[:12]}).",
        "",
        "| rater | RMSE | settings | tuned on the test part |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        settings = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("rmse", "tuned_on_test"))
        lines.append(f"| {name} | {row['rmse']:.4f} | {settings} | {'yes' if row['tuned_on_test'] else 'no'} |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
