"""How far can the choice model's features go on the preference-alignment test? A ceiling check.

For each user-sample seed of the ML-100K protocol split: fits the choice model (the logistic regression of
``fit_choice``) and, on exactly the same training choices and features, a gradient-boosted tree ensemble
(scikit-learn ``HistGradientBoostingClassifier``: any non-linearity or interaction of the features); then
scores both on the fidelity suite's 1:1 alignment candidates (each sampled user's real test movies beside as
many never-rated ones), beside the EASE score alone over a range of L2 penalties (learnt from the split's
whole history, as the choice model's ``ease`` feature is) and popularity. If the flexible model does no better
than the logistic one, the features — not the form — bound the alignment figures. Prints one JSON object and
writes ``report.md`` / ``report.json`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=../shared/data .venv/bin/python benchmarks/choice_ceiling.py --out runs/bench/ceiling
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (default: $RECSIM_PERSONAS_DATA_DIR, then cache/download)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """user-sample seeds of the protocol split (splits are reused from ``--splits`` when present)"""
    splits: str = "runs/bench/choice"
    """directory holding ``split-seed{N}`` (the choice benchmark's), created when missing"""
    ease_l2: list[float] = field(default_factory=lambda: [300.0, 1000.0, 3000.0, 10000.0])
    """L2 penalties of the EASE-alone scores"""
    out: str = "runs/bench/ceiling"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=defaults.data_dir)
    p.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds)
    p.add_argument("--splits", default=defaults.splits)
    p.add_argument("--ease-l2", type=float, nargs="+", default=defaults.ease_l2)
    p.add_argument("--out", default=defaults.out)
    return Args(**vars(p.parse_args()))


def one_seed(args: Args, seed: int) -> dict:
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from recsim_personas.agents.rater import RATINGS
    from recsim_personas.choice.features import feature_matrix
    from recsim_personas.choice.fit import fit_choice, training_set
    from recsim_personas.data import ProtocolConfig, load_split, prepare_split
    from recsim_personas.envs.state import UserTable
    from recsim_personas.envs.world import make_world
    from recsim_personas.fidelity.alignment import candidates, ease_scores, history_matrix

    split_dir = Path(args.splits) / f"split-seed{seed}"
    if (split_dir / "manifest.json").is_file():
        split = load_split(split_dir)
    else:
        split, _ = prepare_split(ProtocolConfig(seed=seed), split_dir, data_dir=args.data_dir)
    model = fit_choice(split)
    data = training_set(split, model.config)
    train = ~data.is_valid
    trees = HistGradientBoostingClassifier(random_state=0).fit(data.x[train], data.y[train])

    world = make_world(split, "bias", choice=model)
    users, items, label = candidates(world, split.test, 1, np.random.default_rng(seed), split.train)
    expected = world.rater.predict(world.user_ids[users], world.item_ids[items]) @ RATINGS
    x = feature_matrix(model.items, model.user_side(world, UserTable(world)), users, items, expected)
    history = history_matrix(world, split.history())

    def scores(score: np.ndarray) -> dict:
        per_user = [
            roc_auc_score(label[users == u], score[users == u])
            for u in np.unique(users)
            if 0 < label[users == u].sum() < (users == u).sum()
        ]
        return {"roc_auc": float(roc_auc_score(label, score)), "roc_auc_per_user": float(np.mean(per_user))}

    logit = model.logits(x)
    p_trees = trees.predict_proba(x)[:, 1]
    row = {
        "seed": seed,
        "candidates": len(label),
        "logistic": {**scores(logit), "accuracy": float(((logit > 0) == label).mean())},
        "trees": {**scores(p_trees), "accuracy": float(((p_trees > 0.5) == label).mean())},
        "validation": {
            "logistic": float(roc_auc_score(data.y[~train], model.logits(data.x[~train]))),
            "trees": float(roc_auc_score(data.y[~train], trees.predict_proba(data.x[~train])[:, 1])),
        },
        "popularity": scores(world.item_popularity[items].astype(np.float64)),
        "ease": {str(l2): scores(ease_scores(history, users, items, l2)) for l2 in args.ease_l2},
    }
    row["features_alone"] = {
        name: float(roc_auc_score(label, x[:, k]))
        for k, name in enumerate(pd.Index(model.coefficients()).drop("intercept"))
    }
    return row


def summarise(rows: list[dict]) -> dict:
    def mean(path: tuple[str, ...]) -> float:
        values = []
        for r in rows:
            v = r
            for key in path:
                v = v[key]
            values.append(v)
        return float(np.mean(values))

    l2s = list(rows[0]["ease"])
    ease = {l2: mean(("ease", l2, "roc_auc")) for l2 in l2s}
    best = max(ease, key=ease.get)
    return {
        "logistic": {k: mean(("logistic", k)) for k in ("roc_auc", "roc_auc_per_user", "accuracy")},
        "trees": {k: mean(("trees", k)) for k in ("roc_auc", "roc_auc_per_user", "accuracy")},
        "validation": {k: mean(("validation", k)) for k in ("logistic", "trees")},
        "popularity": mean(("popularity", "roc_auc")),
        "ease": ease,
        "ease_best_l2": best,
        "features_alone": {k: mean(("features_alone", k)) for k in rows[0]["features_alone"]},
    }


def render(result: dict) -> str:
    s = result["summary"]
    lg, tr = s["logistic"], s["trees"]
    seeds = ", ".join(str(r["seed"]) for r in result["per_seed"])
    best = s["ease_best_l2"]
    lines = [
        "# Choice model ceiling on preference alignment (ML-100K protocol, 1:1)",
        "",
        f"User-sample seeds {seeds}; means over them.",
        "",
        "| model | ROC-AUC | mean per-user ROC-AUC | accuracy at 0.5 | validation ROC-AUC (history hold-out) |",
        "|---|---|---|---|---|",
        f"| logistic regression (the fitted choice model) | {lg['roc_auc']:.3f} | {lg['roc_auc_per_user']:.3f}"
        f" | {lg['accuracy']:.3f} | {s['validation']['logistic']:.3f} |",
        f"| gradient-boosted trees, same features and choices | {tr['roc_auc']:.3f} | {tr['roc_auc_per_user']:.3f}"
        f" | {tr['accuracy']:.3f} | {s['validation']['trees']:.3f} |",
        "",
        "| score alone | ROC-AUC |",
        "|---|---|",
        f"| popularity | {s['popularity']:.3f} |",
    ]
    lines += [f"| EASE, L2 {float(l2):g} | {v:.3f} |" for l2, v in s["ease"].items()]
    lines += [f"| feature `{k}` | {v:.3f} |" for k, v in s["features_alone"].items()]
    diff = tr["roc_auc"] - lg["roc_auc"]
    lines += [
        "",
        f"The trees score {diff:+.3f} ROC-AUC against the logistic regression on the test candidates"
        f" ({s['validation']['trees'] - s['validation']['logistic']:+.3f} on the history hold-out).",
        f"The best EASE penalty here (L2 {float(best):g}) scores {s['ease'][best]:.3f}, the logistic regression"
        f" {lg['roc_auc'] - s['ease'][best]:+.3f} above it.",
        f"Mean per-user ROC-AUC is {lg['roc_auc_per_user'] - lg['roc_auc']:+.3f} from the pooled one for the"
        " logistic regression: how far the scores' scale across users moves the pooled figure.",
    ]
    return "\n".join(lines) + "\n"


def main(args: Args) -> dict:
    rows = [one_seed(args, seed) for seed in args.seeds]
    return {"args": asdict(args), "per_seed": rows, "summary": summarise(rows)}


if __name__ == "__main__":
    args = parse()
    result = main(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    (out / "report.md").write_text(render(result))
    print(json.dumps(result["summary"], default=float))
