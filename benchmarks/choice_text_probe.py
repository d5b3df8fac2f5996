"""Does the small language model's reading of persona and movie text add to the fitted choice model?

A probe, optimistic for the text on purpose: the frozen MiniLM encoder embeds each sampled user's persona
(its Ms: activity, conformity, diversity and profile) and each movie's description; on the preference-alignment
candidates of the split's test part (real test movies 1:1 with never-rated ones) it scores (a) the persona–movie
cosine alone, (b) the fitted choice model, and (c) a logistic regression on the fitted logit plus the text —
the cosine, or the elementwise product of the two embeddings — fitted by 5-fold cross-validation grouped by
user *on the test candidates themselves*. If even (c) does not beat (b), a choice head on the SLM's text
features cannot be expected to, and the fitted (non-SLM) model stays the default. Prints one JSON object and
writes ``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/choice_text_probe.py --split runs/demo/split --personas runs/demo/personas
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    split: str = "runs/demo/split"
    """the protocol split"""
    personas: str = "runs/demo/personas"
    """its persona set (from `personas distill`)"""
    seed: int = 0
    """seed of the never-rated candidates"""
    out: str = "runs/bench/choice_text"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument(f"--{name}", type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def main(args: Args) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    from recsim_personas.agents.rater import RATINGS
    from recsim_personas.choice.model import open_choice
    from recsim_personas.data import load_split
    from recsim_personas.envs.state import UserTable
    from recsim_personas.envs.world import make_world
    from recsim_personas.fidelity.alignment import candidates
    from recsim_personas.personas.embedders import LocalEmbedder
    from recsim_personas.personas.store import load_persona_set

    split = load_split(args.split)
    world = make_world(split, "bias", choice="fitted")
    personas = load_persona_set(args.personas, split_id=split.split_id)
    texts = [personas.persona(int(u)).ms_text() for u in world.user_ids]
    t0 = time.perf_counter()
    embedder = LocalEmbedder()
    users_emb = embedder.embed(texts)
    items_emb = embedder.embed(split.catalog().describe_many(world.item_ids.tolist()))
    embed_seconds = time.perf_counter() - t0
    users, items, label = candidates(world, split.test, 1, np.random.default_rng(args.seed), split.train)
    expected = world.rater.predict(world.user_ids[users], world.item_ids[items]) @ RATINGS
    p = open_choice(world).watch_probability(UserTable(world), users, items, expected, None)
    logit = np.log(p / (1 - p))
    cosine = (users_emb[users] * items_emb[items]).sum(axis=1)
    scores = {
        "text cosine alone": float(roc_auc_score(label, cosine)),
        "fitted choice model": float(roc_auc_score(label, p)),
    }
    for name, x in {
        "fitted + cosine (cross-validated on the test candidates)": np.c_[logit, cosine],
        "fitted + embedding product (cross-validated on the test candidates)": np.c_[
            logit, users_emb[users] * items_emb[items]
        ],
    }.items():
        out = np.zeros(len(label))
        for train, test in GroupKFold(5).split(x, label, users):
            model = LogisticRegression(max_iter=2000, C=0.1).fit(x[train], label[train])
            out[test] = model.decision_function(x[test])
        scores[name] = float(roc_auc_score(label, out))
    return {"args": asdict(args), "candidates": len(label), "embed_seconds": embed_seconds, "roc_auc": scores}


def render(result: dict) -> str:
    s = result["roc_auc"]
    fitted = s["fitted choice model"]
    best_name, best = max(((k, v) for k, v in s.items() if k != "fitted choice model"), key=lambda kv: kv[1])
    lines = [
        "# The SLM's text against the fitted choice model (preference alignment, 1:1)",
        "",
        f"{result['candidates']:,} candidates; embedding the personas and movies took {result['embed_seconds']:.0f} s.",
        "",
        "| scorer | ROC-AUC |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in s.items()),
        "",
        f"The best text-based scorer ({best_name}) reaches {best:.4f}, {best - fitted:+.4f} against the fitted"
        f" choice model's {fitted:.4f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = parse()
    result = main(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(render(result))
    print(json.dumps(result))
