"""Causal persona agents served by a real engine (llama.cpp through llama-cpp-python's OpenAI-compatible server),
rated through RemoteRater, against the same agents run locally.

The engine runs SmolLM2-135M-Instruct from the very GGUF file (Q4_1) the project de-quantizes for its local
backbone, with each persona's LoRA adapter converted to a GGUF LoRA:

1. ``agents export --format vllm`` (:func:`recsim_personas.agents.remote.export_vllm`) writes each adapter as a
   PEFT folder on the local de-quantized copy of the base model;
2. llama.cpp's ``convert_lora_to_gguf.py`` (``--llama-cpp-src``: a llama.cpp source tree, e.g. the
   ``vendor/llama.cpp`` of the llama-cpp-python sdist) turns each into ``<adapter>.gguf`` (f32);
3. ``--server-python -m llama_cpp.server --config_file`` serves one model per persona (the GGUF + its LoRA, under
   the adapter's served name). That server keeps one model in memory at a time and reloads on a switch, so the
   requests are sorted by persona;
   With ``--engine llama-server`` instead: llama.cpp's own server in router mode (``--models-preset``: one section
   per persona, the GGUF + its LoRA, each a model instance of its own; ``--models-max 0`` keeps them all loaded);
4. with llama-cpp-python the prompts travel as text (``prompt_format="text"``: that server's completions take
   strings only) and are checked against the engine's own tokenizer (``/extras/tokenize``); llama-server takes the
   local token ids themselves. The rating tokens' log-probabilities come from ``top_logprobs``.

Reported: the share of prompts the engine tokenizes to exactly the local token ids; the largest and mean absolute
difference of the remote distributions from the local agents' (float32, de-quantized weights) and the agreement
of their expected ratings and argmax; ratings/s of the local agents, of RemoteRater through the engine, and of
the engine alone on the same request bodies (HTTP, one at a time), timed in alternation over ``--repeats``
rounds (best kept). Prints one JSON object and writes ``report.md`` / ``report.json`` into ``--out``.

Setup (a source build of llama.cpp: no binary wheel is in the package registry; ~10 minutes on 2 cores)::

    python3.11 -m venv /work/lcp-venv
    CMAKE_ARGS="-DGGML_NATIVE=OFF" /work/lcp-venv/bin/pip install 'llama-cpp-python[server]'
    pip download --no-deps --no-binary :all: llama-cpp-python -d /tmp/lcp && tar xzf /tmp/lcp/*.tar.gz -C /tmp/lcp
    recsim-personas agents train --split S --personas P --backbone causal --rank 8 --out runs/engine/agents-causal
    .venv/bin/python benchmarks/remote_engine.py --agents runs/engine/agents-causal --split S \\
        --server-python /work/lcp-venv/bin/python --llama-cpp-src /tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Args:
    agents: str = "runs/engine/agents-causal"
    """trained causal persona agents on SmolLM2 (`agents train --backbone causal`)"""
    split: str = "runs/demo-check/split"
    """the agents' split"""
    engine: str = "llama-cpp-python"
    """llama-cpp-python (its OpenAI-compatible server; text prompts) or llama-server (llama.cpp's own server in
    router mode, one model instance per persona; token-id prompts)"""
    server_python: str = "/work/lcp-venv/bin/python"
    """a Python with llama-cpp-python[server] installed (engine llama-cpp-python)"""
    llama_server: str = "/tmp/llsrv/bin/llama-server"
    """the llama-server binary (engine llama-server)"""
    llama_cpp_src: str = "/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp"
    """a llama.cpp source tree (convert_lora_to_gguf.py and gguf-py/)"""
    requests: int = 40
    """rating requests (test pairs of the split, sorted by persona)"""
    repeats: int = 2
    """timed rounds of each path (best kept)"""
    threads: int = 2
    """CPU threads of the engine and of torch"""
    n_ctx: int = 512
    """the engine's context length (the agents' prompts are at most max_length tokens)"""
    top_logprobs: int = 20
    """top log-probabilities asked per request"""
    out: str = "runs/bench/remote_engine"
    """report directory (the export, GGUF adapters and server config go to its work/ folder)"""


def parse() -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(d).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return Args(**vars(p.parse_args()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: dict, timeout: float = 120.0) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the engine exited with {proc.returncode}; its log: {log}\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the engine did not answer {url}/models within {seconds:.0f} s; its log: {log}")


def main() -> None:
    args = parse()
    wall0 = time.perf_counter()
    import torch

    from recsim_personas._io import atomic_write_text, write_json
    from recsim_personas.agents.model_loading import SMOLLM2_CACHE_NAME, model_cache_root, resolve_smollm2
    from recsim_personas.agents.persona_agents import PersonaAgents
    from recsim_personas.agents.remote import RemoteRater, RemoteRaterConfig, export_vllm, read_served_names
    from recsim_personas.data import load_split

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    src = Path(args.llama_cpp_src)
    convert = src / "convert_lora_to_gguf.py"
    if not convert.is_file() or not (src / "gguf-py").is_dir():
        raise SystemExit(
            f"{src} is not a llama.cpp source tree (no convert_lora_to_gguf.py / gguf-py). Fix: --llama-cpp-src."
        )

    split = load_split(args.split)
    local = PersonaAgents.open(args.agents, split, dtype="float32")
    base_dir = model_cache_root() / SMOLLM2_CACHE_NAME  # the de-quantized copy the local backbone loads
    gguf = resolve_smollm2()
    export = work / "export"
    export_vllm(args.agents, export, base=str(base_dir), overwrite=True)
    served = read_served_names(export)

    # 2. each PEFT adapter -> a GGUF LoRA
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}
    loras: dict[str, Path] = {}
    for adapter in sorted(served):
        target = work / "lora" / f"{adapter}.gguf"
        target.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(convert), "--base", str(base_dir), "--outtype", "f32", "--outfile", str(target),
               str(export / adapter)]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not target.is_file():
            raise SystemExit(f"converting {adapter} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        loras[adapter] = target

    # 3. the engine: one model per persona
    port = free_port()
    log = work / "server.log"
    url = f"http://127.0.0.1:{port}/v1"
    as_text = args.engine == "llama-cpp-python"
    if as_text:
        models = [
            {"model": str(gguf), "model_alias": served[a], "lora_path": str(p), "n_ctx": args.n_ctx,
             "n_threads": args.threads, "n_batch": args.n_ctx, "verbose": False}
            for a, p in loras.items()
        ]  # fmt: skip
        config_file = work / "server.json"
        config_file.write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": models}, indent=2))
        command = [args.server_python, "-m", "llama_cpp.server", "--config_file", str(config_file)]
        version = [args.server_python, "-c", "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"]
    elif args.engine == "llama-server":
        preset = work / "models.ini"
        sections = [f"[{served[a]}]\nmodel = {gguf}\nlora = {p}\nc = {args.n_ctx}\nthreads = {args.threads}\n"
                    for a, p in loras.items()]  # fmt: skip
        preset.write_text("version = 1\n\n" + "\n".join(sections))
        command = [args.llama_server, "--models-preset", str(preset), "--models-max", "0", "--host", "127.0.0.1",
                   "--port", str(port)]  # fmt: skip
        version = [args.llama_server, "--version"]
    else:
        raise SystemExit(f"--engine must be llama-cpp-python or llama-server, got {args.engine!r}")
    with open(log, "w") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_up(url, proc, log)
        shown = subprocess.run(version, capture_output=True, text=True)
        engine_version = (shown.stdout + shown.stderr).strip().splitlines()
        line = next((v for v in engine_version if "version" in v or "llama-cpp-python" in v), "")
        engine_version = (
            line if line.startswith(args.engine) else f"{args.engine} ({line.strip() or 'version unknown'})"
        )

        # requests: test pairs of the split, sorted by persona (the engine reloads on a model switch)
        test = split.test.iloc[np.random.default_rng(0).permutation(len(split.test))]
        test = test.assign(adapter=[local.adapter_of(int(u)) for u in test["user_id"]])
        per = -(-args.requests // test["adapter"].nunique())
        chosen = test.groupby("adapter", sort=True).head(per).sort_values("adapter", kind="mergesort")
        chosen = chosen.head(args.requests)
        u = chosen["user_id"].to_numpy(np.int64)
        i = chosen["item_id"].to_numpy(np.int64)

        cfg = RemoteRaterConfig(
            base_url=url, served_names=served, mode="top_logprobs", top_logprobs=args.top_logprobs,
            prompt_format="text" if as_text else "token_ids", concurrency=1, timeout=300.0,
        )  # fmt: skip
        rater = RemoteRater.from_agents(local, cfg)

        # 4. tokenization check against the engine's tokenizer
        rows, names = local.prompts(u, i)
        lead = list(local.backbone.rating_tokens.lead_ids)
        ids = [[*r, *lead] for r in rows]
        texts = [rater.prompt_text(x) for x in ids]
        tok = local.builder.tok
        same_local = sum(tok(t, add_special_tokens=False).input_ids == x for t, x in zip(texts, ids, strict=True))
        same = len(ids)  # token-id prompts: the engine gets the local ids themselves
        if as_text:
            same = 0
            for x, text, name in zip(ids, texts, names or [], strict=False):
                got = post(f"http://127.0.0.1:{port}/extras/tokenize", {"input": text, "model": served[name]})
                same += got["tokens"] == x
        bodies = [
            {"model": served[n], "prompt": t if as_text else x, "max_tokens": 1, "temperature": 0.0,
             "logprobs": args.top_logprobs}
            for t, x, n in zip(texts, ids, names or [], strict=True)
        ]  # fmt: skip

        def run_local() -> np.ndarray:
            return local.predict(u, i)

        def run_remote() -> np.ndarray:
            return rater.predict(u, i)

        def run_engine() -> None:
            for body in bodies:
                post(url + "/completions", body)

        want, got = run_local(), run_remote()  # warm-up and the comparison
        run_engine()
        best = {"local": float("inf"), "remote": float("inf"), "engine": float("inf")}
        for _ in range(args.repeats):
            for name, fn in (("local", run_local), ("remote", run_remote), ("engine", run_engine)):
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    levels = np.arange(1, 6)
    diff = np.abs(got - want)
    e_diff = np.abs(got @ levels - want @ levels)
    rates = {k: args.requests / v for k, v in best.items()}
    summary = {
        "args": asdict(args),
        "engine": engine_version,
        "prompt_format": cfg.prompt_format,
        "gguf": gguf.name,
        "adapters": len(loras),
        "requests": len(u),
        "tokenized_identically": same / len(ids),
        "local_retokenized_identically": same_local / len(ids),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_expected_rating_diff": float(e_diff.max()),
        "mean_expected_rating_diff": float(e_diff.mean()),
        "argmax_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
        "ratings_per_s": {k: round(v, 2) for k, v in rates.items()},
        "remote_over_engine": rates["remote"] / rates["engine"],
        "remote_over_local": rates["remote"] / rates["local"],
        "http_requests": rater.requests_sent,
        "wall_s": time.perf_counter() - wall0,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", summary)
    md = [
        "# Persona agents on a real serving engine",
        "",
        f"{summary['engine']} serving `{gguf.name}` with {len(loras)} persona LoRA adapters (GGUF, f32) on"
        f" {args.threads} threads; {len(u)} test requests of `{args.split}` sorted by persona; RemoteRater in"
        f" `top_logprobs` mode ({args.top_logprobs}) with {cfg.prompt_format} prompts; best of {args.repeats} rounds.",
        "",
        (
            f"- The engine tokenized {same} of {len(ids)} prompts ({100 * summary['tokenized_identically']:.0f}%) to"
            f" exactly the local token ids; the local tokenizer itself re-tokenizes {same_local} of the {len(ids)}"
            " decoded prompts to the same ids (the prompt builder joins separately tokenized parts, which a"
            " tokenizer given the whole text may merge differently)."
            if as_text
            else f"- The {len(ids)} prompts went to the engine as the local token ids (decoded to text, {same_local}"
            f" of them would re-tokenize to the same ids)."
        ),
        f"- Remote vs local distributions: largest absolute difference {summary['max_abs_diff']:.2e}, mean"
        f" {summary['mean_abs_diff']:.2e}; expected ratings differ by {summary['mean_expected_rating_diff']:.4f} on"
        f" average (at most {summary['max_expected_rating_diff']:.4f}); the most likely rating agrees on"
        f" {100 * summary['argmax_agreement']:.0f}% of the requests.",
        "",
        "| path | ratings/s |",
        "|---|---:|",
        f"| local agents (PyTorch, float32) | {rates['local']:.2f} |",
        f"| RemoteRater through the engine | {rates['remote']:.2f} |",
        f"| the engine alone (same bodies over HTTP, one at a time) | {rates['engine']:.2f} |",
        "",
        f"RemoteRater reaches {summary['remote_over_engine']:.2f}× the engine's own rate and"
        f" {summary['remote_over_local']:.2f}× the local agents'.",
    ]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
