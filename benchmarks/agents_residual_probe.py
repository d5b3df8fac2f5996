"""Is there anything in the agent's prompt that the anchoring prior does not already know? A linear probe.

The anchored persona agents learn a residual on top of a classical prior. This probe asks, cheaply, whether
the *frozen* MiniLM representation of the agent's prompt (persona part, retrieved memory, movie) carries
any rating signal beyond that prior:

1. RAFT prompts of ``--n-train`` train ratings (the encoder's ``compact`` template, one memory) and of
   ``--n-test`` seeded test ratings, mean-pooled through the frozen MiniLM (bfloat16);
2. the training examples are anchored on the out-of-fold prior
   (:func:`~recsim_personas.agents.prior.out_of_fold_log_probs`, ``--prior`` = mf or bias), the test ratings
   on the prior fitted on the whole history — exactly as the agents are;
3. a head ``logits = prior log-probs + f(pooled prompt)`` (``f`` linear or a 64-unit MLP, zero-initialised,
   so it starts at the prior) is trained with AdamW on 85% of the training examples and stopped on the
   other 15% (best validation NLL), for several weight decays;
4. test RMSE / NLL of the prior alone and of each probe.

If no probe beats the prior on the held-out validation NLL, a LoRA adapter on the same inputs has little to
learn at this data size. Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

    RECSIM_PERSONAS_DATA_DIR=/path/to/movielens .venv/bin/python benchmarks/agents_residual_probe.py
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
    world: str = "runs/bench/data"
    """directory with split/ and personas/ (clusters/, memory/), e.g. from agents_encoder_fidelity.py"""
    prior: str = "mf"
    """anchoring prior: mf or bias"""
    n_train: int = 5000
    """RAFT training examples embedded (seeded sample)"""
    n_test: int = 2000
    """test ratings embedded (seeded sample)"""
    epochs: int = 300
    """full-batch AdamW steps of each probe"""
    threads: int = 1
    """torch threads"""
    seed: int = 0
    """seed of the samples and the probes"""
    out: str = "runs/bench/agents_residual_probe"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def main() -> None:
    args = parse()
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.agents.agent_artifact import load_world
    from recsim_personas.agents.backbone_config import BackboneConfig
    from recsim_personas.agents.backbones import build_backbone
    from recsim_personas.agents.inference import encode_rows
    from recsim_personas.agents.prior import AnchorPrior, out_of_fold_log_probs
    from recsim_personas.agents.prompt import PromptBuilder
    from recsim_personas.agents.raft import RaftConfig, raft_examples
    from recsim_personas.agents.train_config import prompt_config

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split, pset, _, index = load_world(str(Path(args.world) / "split"), str(Path(args.world) / "personas"))
    backbone, tokenizer = build_backbone(BackboneConfig(kind="encoder"))
    backbone.to(torch.bfloat16)
    builder = PromptBuilder(tokenizer, pset, split.catalog().describe, prompt_config("encoder", "compact", 256))

    train_ex, _ = raft_examples(split.train, index, RaftConfig(memories=1, max_train=args.n_train, max_valid=1))
    test = split.test.sample(n=min(args.n_test, len(split.test)), random_state=args.seed)
    test_hits = index.retrieve_batch(test["user_id"].to_numpy(), test["item_id"].to_numpy(), 1)

    def pooled(requests: list) -> np.ndarray:
        rows = [builder.build(int(u), int(i), hits).ids for u, i, hits in requests]
        order = np.argsort([len(r) for r in rows], kind="stable")
        res = np.zeros((len(rows), backbone.encoder.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for lo in range(0, len(rows), 32):
                idx = order[lo : lo + 32]
                batch = encode_rows(backbone, [rows[j] for j in idx])
                hidden = backbone.encoder(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                res[idx] = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        return res

    t0 = time.perf_counter()
    x_train = pooled([(e.user_id, e.item_id, e.memories) for e in train_ex])
    x_test = pooled(list(zip(test["user_id"], test["item_id"], test_hits, strict=True)))
    embed_seconds = time.perf_counter() - t0

    oof = out_of_fold_log_probs(split, args.prior, 5, args.seed)
    keys = pd.MultiIndex.from_arrays([[e.user_id for e in train_ex], [e.item_id for e in train_ex]])
    p_train = torch.tensor(oof.loc[keys, [f"lp{k}" for k in range(1, 6)]].to_numpy())
    prior = AnchorPrior.fit(split.history(), args.prior)
    p_test = torch.tensor(prior.log_probs(test["user_id"].to_numpy(), test["item_id"].to_numpy()))
    y_train = torch.tensor([e.rating - 1 for e in train_ex], dtype=torch.long)
    y_test = torch.tensor(test["rating"].to_numpy() - 1, dtype=torch.long)

    xt, xs = torch.tensor(x_train, dtype=torch.float64), torch.tensor(x_test, dtype=torch.float64)
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    xt, xs = (xt - mu) / sd, (xs - mu) / sd
    valid = torch.arange(len(y_train)) >= int(0.85 * len(y_train))
    levels = torch.arange(1, 6, dtype=torch.float64)

    def scores(logits: torch.Tensor) -> dict[str, float]:
        p = torch.softmax(logits, 1)
        err = p @ levels - (y_test + 1)
        nll = torch.nn.functional.cross_entropy(logits, y_test)
        return {"rmse": float(err.pow(2).mean().sqrt()), "mae": float(err.abs().mean()), "nll": float(nll)}

    prior_valid_nll = float(torch.nn.functional.cross_entropy(p_train[valid], y_train[valid]))
    rows = [{"probe": f"{args.prior} prior alone", "valid_nll": prior_valid_nll, "best_step": 0, **scores(p_test)}]
    dim = xt.shape[1]
    for hidden in (0, 64):
        for wd in (1e-3, 1e-2, 1e-1):
            torch.manual_seed(args.seed)
            if hidden == 0:
                head = torch.nn.Linear(dim, 5).double()
                last = head
            else:
                head = torch.nn.Sequential(
                    torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 5)
                ).double()
                last = head[2]
            torch.nn.init.zeros_(last.weight)
            torch.nn.init.zeros_(last.bias)
            opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=wd)
            best = (prior_valid_nll, 0, scores(p_test))
            for step in range(1, args.epochs + 1):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(p_train[~valid] + head(xt[~valid]), y_train[~valid])
                loss.backward()
                opt.step()
                with torch.no_grad():
                    v = float(torch.nn.functional.cross_entropy(p_train[valid] + head(xt[valid]), y_train[valid]))
                    if v < best[0] - 1e-6:
                        best = (v, step, scores(p_test + head(xs)))
            label = "linear" if hidden == 0 else f"MLP {hidden}"
            row = {"probe": f"{label}, weight decay {wd:g}", "valid_nll": best[0], "best_step": best[1]}
            rows.append({**row, **best[2]})

    summary = {
        "benchmark": "agents_residual_probe",
        "args": asdict(args),
        "n_train": len(train_ex),
        "n_test": len(test),
        "embed_seconds": embed_seconds,
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    write_json(out / "report.json", summary)
    md = [
        "# Residual probe: frozen MiniLM prompt features on top of the prior",
        "",
        f"{len(train_ex)} RAFT training examples (out-of-fold {args.prior} prior; 15% held out for stopping),"
        f" {len(test)} test ratings (prior fitted on the whole history).",
        "",
        "| probe | validation NLL | best step | test RMSE | test MAE | test NLL |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['probe']} | {r['valid_nll']:.4f} | {r['best_step']} | {r['rmse']:.4f} | {r['mae']:.4f} |"
            f" {r['nll']:.4f} |"
        )
    md += ["", "Best step 0 = the probe never beat the prior on the validation examples (the prior is kept)."]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
