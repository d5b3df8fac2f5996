"""The fitted choice model and sessions against the hand-set ones, on the ML-100K protocol over user samples.

For each user-sample seed: prepares the protocol split, times fitting the choice model and the sessions, then
runs the fidelity suite (preference alignment at 1:1, 1:3, 1:9 beside random / popularity / item-kNN / EASE;
behaviour distances real vs simulated under Random and Pop) for ``choice="fitted"`` and ``choice="handset"``
side by side. Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``; every sentence
of the report is computed from the figures in it.

    .venv/bin/python benchmarks/choice_fidelity.py --seeds 0 1 2 --out runs/bench/choice
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Args:
    data_dir: str | None = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    """directory with the GroupLens files (default: $RECSIM_PERSONAS_DATA_DIR, then cache/download)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """user-sample seeds of the protocol split"""
    days: int = 30
    """simulated days per policy"""
    policies: str = "random,pop"
    """policies whose simulated behaviour is compared"""
    out: str = "runs/bench/choice"
    """report directory"""


TARGETS = {"accuracy_1": 0.82, "roc_auc_1": 0.90, "f1_9": 0.45}


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=defaults.data_dir)
    p.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds)
    p.add_argument("--days", type=int, default=defaults.days)
    p.add_argument("--policies", default=defaults.policies)
    p.add_argument("--out", default=defaults.out)
    return Args(**vars(p.parse_args()))


def main(args: Args) -> dict:
    from recsim_personas.choice.fit import fit_choice
    from recsim_personas.data import ProtocolConfig, prepare_split
    from recsim_personas.envs.calibration import fit_split_sessions
    from recsim_personas.envs.world import make_world
    from recsim_personas.fidelity.suite import run_fidelity

    out = Path(args.out)
    per_seed = []
    for seed in args.seeds:
        split_dir = out / f"split-seed{seed}"
        if (split_dir / "manifest.json").is_file():
            from recsim_personas.data import load_split

            split = load_split(split_dir)
        else:
            split, _ = prepare_split(ProtocolConfig(seed=seed), split_dir, data_dir=args.data_dir)
        t0 = time.perf_counter()
        model = fit_choice(split)
        t_choice = time.perf_counter() - t0
        t0 = time.perf_counter()
        sessions = fit_split_sessions(split)
        t_sessions = time.perf_counter() - t0
        row = {"seed": seed, "fit_seconds": {"choice": t_choice, "sessions": t_sessions}}
        for choice in ("fitted", "handset"):
            world = make_world(split, "bias", choice=model if choice == "fitted" else "handset")
            if choice == "fitted":
                world = dataclasses.replace(world, session_config=sessions.config)
            report = run_fidelity(
                split, world=world, policies=args.policies, seeds=(0,), days=args.days, progress=False
            )
            row[choice] = {
                "alignment": report["alignment_summary"],
                "alignment_sampled": {m: r["model"]["sampled"] for m, r in report["alignment"]["ratios"].items()},
                "behaviour": {p: v["behaviour"]["distances"] for p, v in report["policies"].items()},
                "floors": {
                    p: {k: v["behaviour"]["simulated"][k] for k in ("genre_js_floor", "rating_w1_per_user_floor")}
                    for p, v in report["policies"].items()
                },
                "replay": {p: v["replay"] for p, v in report["policies"].items()},
            }
        per_seed.append(row)
    return {"args": asdict(args), "per_seed": per_seed, "summary": summarise(per_seed)}


def summarise(per_seed: list[dict]) -> dict:
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    s: dict = {}
    for choice in ("fitted", "handset"):
        a = [r[choice]["alignment"] for r in per_seed]
        s[choice] = {
            "accuracy_1": mean([x["1"]["accuracy"] for x in a]),
            "roc_auc_1": mean([x["1"]["roc_auc"] for x in a]),
            "f1_9": mean([x["9"]["f1"] for x in a]) if "9" in a[0] else None,
            "log_likelihood_1": mean([x["1"]["log_likelihood"] for x in a]),
            "baselines_1": {b: mean([x["1"]["baselines"][b] for x in a]) for b in a[0]["1"]["baselines"]},
        }
        distances: dict = {}
        for r in per_seed:
            for policy, d in r[choice]["behaviour"].items():
                for name, value in d.items():
                    distances.setdefault(policy, {}).setdefault(name, []).append(value)
        s[choice]["behaviour"] = {p: {n: mean(v) for n, v in d.items()} for p, d in distances.items()}
        s[choice]["floors"] = {
            p: {k: mean([r[choice]["floors"][p][k] for r in per_seed]) for k in r0}
            for p, r0 in per_seed[0][choice]["floors"].items()
        }
    s["fit_seconds"] = mean([r["fit_seconds"]["choice"] + r["fit_seconds"]["sessions"] for r in per_seed])
    return s


def render(result: dict) -> str:
    s = result["summary"]
    f, h = s["fitted"], s["handset"]
    seeds = ", ".join(str(r["seed"]) for r in result["per_seed"])
    lines = [
        "# Fitted vs hand-set choice model and sessions (ML-100K protocol)",
        "",
        f"User-sample seeds {seeds}; means over them. Fitting the choice model and the sessions took"
        f" {s['fit_seconds']:.1f} s per split.",
        "",
        "| preference alignment (1:1 unless said) | fitted | hand-set | target |",
        "|---|---|---|---|",
        f"| accuracy at P > 0.5 | {f['accuracy_1']:.3f} | {h['accuracy_1']:.3f} | {TARGETS['accuracy_1']} |",
        f"| ROC-AUC | {f['roc_auc_1']:.3f} | {h['roc_auc_1']:.3f} | {TARGETS['roc_auc_1']} |",
    ]
    if f["f1_9"] is not None:
        lines.append(f"| F1 at 1:9 | {f['f1_9']:.3f} | {h['f1_9']:.3f} | {TARGETS['f1_9']} |")
    lines.append(f"| mean log-likelihood | {f['log_likelihood_1']:.3f} | {h['log_likelihood_1']:.3f} | higher |")
    lines += ["", "| baseline (1:1) | ROC-AUC | fitted model minus it |", "|---|---|---|"]
    for b, v in f["baselines_1"].items():
        lines.append(f"| {b} | {v:.3f} | {f['roc_auc_1'] - v:+.3f} |")
    met = [k for k, t in TARGETS.items() if f.get(k) is not None and f[k] >= t]
    missed = [k for k, t in TARGETS.items() if f.get(k) is not None and f[k] < t]
    lines += ["", f"Targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}."]
    lines += ["", "## Behaviour distances, real test part vs simulated (smaller is closer)", ""]
    for policy in f["behaviour"]:
        lines += [f"### {policy}", "", "| distance | fitted | hand-set | closer |", "|---|---|---|---|"]
        closer = 0
        for name, value in f["behaviour"][policy].items():
            other = h["behaviour"][policy][name]
            better = value is not None and other is not None and value < other
            closer += better
            lines.append(f"| {name} | {value:.3f} | {other:.3f} | {'fitted' if better else 'hand-set'} |")
        lines += ["", f"The fitted configuration is closer on {closer} of {len(f['behaviour'][policy])} distances."]
        ff, hf = f["floors"][policy], h["floors"][policy]
        lines += [
            f"A perfect simulator making as many picks per user would score genre JS {ff['genre_js_floor']:.3f}"
            f" and per-user rating W1 {ff['rating_w1_per_user_floor']:.3f} with the fitted configuration's"
            f" picks, {hf['genre_js_floor']:.3f} and {hf['rating_w1_per_user_floor']:.3f} with the hand-set one's.",
        ]
        fb, hb = f["behaviour"][policy], h["behaviour"][policy]
        for key, floor, label in (
            ("genre_js", "genre_js_floor", "genre JS"),
            ("rating_w1_per_user", "rating_w1_per_user_floor", "per-user rating W1"),
        ):
            excess_f, excess_h = fb[key] - ff[floor], hb[key] - hf[floor]
            who = "fitted" if excess_f < excess_h else "hand-set"
            lines.append(
                f"Above that floor the {label} is {excess_f:.3f} (fitted) vs {excess_h:.3f} (hand-set): the {who}"
                " configuration is closer."
            )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = parse()
    result = main(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    (out / "report.md").write_text(render(result))
    print(json.dumps(result["summary"], default=float))
