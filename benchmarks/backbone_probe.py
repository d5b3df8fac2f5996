"""Backbone probe: SmolLM2 load times (GGUF vs safetensors copy) and forward throughput with and without LoRA.

Converts the SmolLM2 GGUF into a fresh model cache (a temporary directory unless ``--cache-dir`` is given),
loads it again from the copy, then times batched forward passes of ``--batch`` prompts of about
``--tokens`` tokens for each backbone: the bare backbone, one LoRA adapter of rank ``--rank`` active
(unmerged), a mixed batch routed over two adapters with ``adapter_names``, and one LoRA training step
(forward + backward + Adam). Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

    .venv/bin/python benchmarks/backbone_probe.py --out runs/bench/backbones
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    cache_dir: str | None = None
    """model cache root (default: a fresh temporary directory, so the GGUF conversion is timed)"""
    batch: int = 16
    """prompts per forward pass"""
    tokens: int = 300
    """approximate prompt length in tokens (each backbone's own tokenizer)"""
    rank: int = 16
    """LoRA rank"""
    repeats: int = 3
    """timed forward passes per setting (after one warm-up)"""
    seed: int = 0
    """seed of the synthetic prompt text and of the LoRA perturbation"""
    out: str = "runs/bench/backbones"
    """report directory"""


def parse() -> Args:
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        kind = int if isinstance(value, int) else str
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    return Args(**vars(p.parse_args()))


VOCABULARY = (
    "movie action drama comedy thriller romance classic plot actor director scene slow fast loved hated watched"
    " weekend friends critics soundtrack ending twist character story visual effects boring funny dark light"
    " family war science fiction horror documentary western musical animation"
)
WORDS = VOCABULARY.split()


def make_prompts(tokenizer, n: int, tokens: int, rng: np.random.Generator) -> list[str]:
    """n texts of about ``tokens`` tokens under ``tokenizer``, each ending in ``RATING:``."""
    prompts = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS, size=tokens * 2))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: tokens - 4]
        prompts.append(tokenizer.decode(ids) + " RATING:")
    return prompts


def timed(fn, repeats: int) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def probe(kind: str, args: Args, cache_dir: Path, rng: np.random.Generator) -> dict[str, float]:
    """Prompts per second of one backbone: bare, one LoRA adapter, two adapters mixed, one training step."""
    import torch
    from peft import LoraConfig, get_peft_model

    from recsim_personas.agents.adapters import lora_targets
    from recsim_personas.agents.backbone_config import BackboneConfig
    from recsim_personas.agents.backbones import build_backbone

    config = BackboneConfig(kind=kind, max_length=max(512, args.tokens))
    backbone, tokenizer = build_backbone(config, cache_dir=cache_dir)
    batch = backbone.encode(make_prompts(tokenizer, args.batch, args.tokens, rng))
    row = {"prompt_tokens_mean": float(batch["attention_mask"].sum(dim=1).float().mean())}

    def rate(model, **kwargs) -> float:
        def forward():
            with torch.inference_mode():
                model(**batch, **kwargs)

        return args.batch / timed(forward, args.repeats)

    row["none"] = rate(backbone)
    cfg = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        target_modules=lora_targets(kind),
        modules_to_save=["rating_head"] if kind == "encoder" else None,
    )
    with torch.random.fork_rng():  # PEFT draws lora_A from the global generator
        torch.manual_seed(args.seed)
        model = get_peft_model(backbone, cfg, adapter_name="u1")
        model.add_adapter("u2", cfg)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    model.eval()
    model.set_adapter("u1")
    row[f"lora_r{args.rank}"] = rate(model)
    names = [("u1", "u2")[i % 2] for i in range(args.batch)]
    row[f"lora_r{args.rank}_mixed_2_adapters"] = rate(model, adapter_names=names)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    target = torch.as_tensor(rng.integers(0, 5, args.batch))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(**batch), target).backward()
        opt.step()

    row[f"lora_r{args.rank}_train_step"] = args.batch / timed(step, max(1, args.repeats - 1))
    return row


if __name__ == "__main__":
    args = parse()
    import torch

    from recsim_personas.agents import model_loading as ml

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = tempfile.TemporaryDirectory(prefix="backbone-probe-") if args.cache_dir is None else None
    cache_dir = Path(tmp.name if tmp else args.cache_dir)
    rng = np.random.default_rng(args.seed)
    result: dict = {"args": asdict(args), "torch_threads": torch.get_num_threads(), "load_seconds": {}}

    copy_exists = (cache_dir / ml.SMOLLM2_CACHE_NAME / ml.SOURCE_FILE).is_file()
    t0 = time.perf_counter()
    ml.load_causal(cache_dir=cache_dir)
    first = "smollm2_gguf_convert_and_save" if not copy_exists else "smollm2_cached_first"
    result["load_seconds"][first] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ml.load_causal(cache_dir=cache_dir)
    result["load_seconds"]["smollm2_cached"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ml.load_encoder()
    result["load_seconds"]["minilm"] = time.perf_counter() - t0
    print(f"loads: {result['load_seconds']}", file=sys.stderr)

    result["throughput"] = {}
    for kind in ("causal", "encoder"):
        result["throughput"][kind] = row = probe(kind, args, cache_dir, rng)
        print(f"{kind}: " + json.dumps({k: round(v, 2) for k, v in row.items()}), file=sys.stderr)

    if tmp is not None:
        tmp.cleanup()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    metrics = [k for k in result["throughput"]["causal"] if k != "prompt_tokens_mean"]
    lines = [
        "# Backbone probe",
        "",
        f"torch threads: {result['torch_threads']}; batch {args.batch} prompts of ~{args.tokens} tokens;"
        f" LoRA r={args.rank}.",
        "",
        "| load | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in result["load_seconds"].items()],
        "",
        "| backbone | tokens/prompt | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for kind, row in result["throughput"].items():
        cells = " | ".join(f"{row[k]:.2f}" for k in metrics)
        lines.append(f"| {kind} | {row['prompt_tokens_mean']:.0f} | {cells} |")
    lines += ["", "Throughput in prompts per second (train step: prompts per second of forward + backward + Adam)."]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
