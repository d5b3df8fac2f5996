"""A small OpenAI-compatible completions server for the remote-rater tests and benchmark (stdlib ``http.server``).

``POST /v1/completions`` computes REAL next-token log-probabilities with the project's causal backbone and the
adapter the ``model`` field names (served name → PEFT adapter), one request at a time (a lock: torch already uses
the cores). It answers ``max_tokens=1`` with ``choices[0].logprobs.top_logprobs`` (``logprobs=k``) and, with
``echo=True``, the prompt log-probabilities of each prompt of a batch. ``return_tokens_as_token_ids`` (vLLM's
extension) gives ``token_id:<id>`` keys.

Test hooks: ``faults`` (a queue: ``"429"``, ``"500"``, ``"timeout"`` (answer after ``hang`` s), ``"drop:K"`` (leave
rating K's token out of the answer)) applied to the next requests; ``always`` (a fault for every request);
``barrier`` (a ``threading.Barrier`` each request waits on: proves the client keeps that many in flight);
``inflight`` / ``max_inflight`` / ``requests`` counters.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch


class CompletionServer:
    """Serve ``model``'s adapters as OpenAI completions models.

    Args:
        model: a ``PeftModel`` over a :class:`~recsim_personas.agents.backbones.CausalRatingBackbone` (eval mode).
        served: served model name → adapter name.
        rating_ids: the five rating token ids (for ``drop:K`` faults).
    """

    def __init__(self, model: Any, served: dict[str, str], rating_ids: tuple[int, ...] = ()) -> None:
        self.model = model.eval()
        self.lm = model.get_base_model().lm
        self.tokenizer = model.get_base_model().tokenizer
        self.served = dict(served)
        self.rating_ids = tuple(rating_ids)
        self.texts = [self.tokenizer.decode([t]) for t in range(len(self.tokenizer))]
        self.faults: collections.deque[str] = collections.deque()
        self.always: str | None = None
        self.hang = 2.0
        self.content_shape = False  # answer logprobs as llama.cpp's llama-server does ({"content": [...]})
        self.barrier: threading.Barrier | None = None
        self.barrier_broken = False
        self.inflight = 0
        self.generation = 0
        self.max_inflight = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._compute = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- the model ------------------------------------------------------------------------------
    def log_probs(self, ids: list[int], adapter: str) -> torch.Tensor:
        """float64 (L, V): log-probabilities of the next token after each prefix of ``ids`` under ``adapter``."""
        with self._compute, torch.inference_mode():
            if self.model.active_adapter != adapter:
                self.model.set_adapter(adapter, inference_mode=True)
            logits = self.lm(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
            return torch.log_softmax(logits.double(), dim=-1)

    def key(self, token: int, as_ids: bool) -> str:
        return f"token_id:{token}" if as_ids else self.texts[token]

    def complete(self, body: dict[str, Any], drop: int | None = None) -> dict[str, Any]:
        """The completion answer to a request ``body`` (raises ``KeyError`` for an unknown model)."""
        adapter = self.served[body["model"]]
        prompts = body["prompt"]
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        # text prompts (llama-cpp-python's API takes only strings) are tokenized here, with each token's character
        # offset in the text (what an engine's echo reports as text_offset)
        texts = [p if isinstance(p, str) else None for p in prompts]
        encoded = [
            self.tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) if t else None for t in texts
        ]
        prompts = [e.input_ids if e is not None else p for e, p in zip(encoded, prompts, strict=True)]
        as_ids = bool(body.get("return_tokens_as_token_ids", False))
        k = int(body.get("logprobs") or 0)
        choices = []
        for index, ids in enumerate(prompts):
            lp = self.log_probs(list(ids), adapter)
            last = lp[-1]
            best = int(torch.argmax(last))
            top: dict[str, float] = {}
            if k:
                values, tokens = torch.topk(last, min(k, last.numel()))
                for v, t in zip(values.tolist(), tokens.tolist(), strict=True):
                    top.setdefault(self.key(t, as_ids), v)  # texts can collide: keep the likelier token
            if drop is not None:
                top.pop(self.key(self.rating_ids[drop], as_ids), None)
            tokens_out, lps_out, tops_out = [self.key(best, as_ids)], [float(last[best])], [top]
            text, enc = texts[index], encoded[index]
            offsets = [len(text)] if text is not None else [0]
            if body.get("echo"):
                prompt_lps = [None] + [float(lp[p - 1, ids[p]]) for p in range(1, len(ids))]
                tokens_out = [self.key(t, as_ids) for t in ids] + tokens_out
                lps_out = prompt_lps + lps_out
                tops_out = [None] * len(ids) + tops_out
                offsets = ([start for start, _ in enc.offset_mapping] if enc is not None else [0] * len(ids)) + offsets
            logprobs: dict[str, Any] = {
                "tokens": tokens_out,
                "token_logprobs": lps_out,
                "top_logprobs": tops_out,
                "text_offset": offsets,
            }
            if self.content_shape:  # one generated position, its top entries likeliest first, with ids
                values, tokens = torch.topk(last, min(max(k, 1), last.numel()))
                tops = [
                    {"id": t, "token": self.texts[t], "logprob": v}
                    for v, t in zip(values.tolist(), tokens.tolist(), strict=True)
                ]
                if drop is not None:
                    tops = [e for e in tops if e["id"] != self.rating_ids[drop]]
                logprobs = {
                    "content": [
                        {"id": best, "token": self.texts[best], "logprob": float(last[best]), "top_logprobs": tops}
                    ]
                }
            choices.append({"index": index, "text": self.texts[best], "finish_reason": "length", "logprobs": logprobs})
        n = sum(len(p) for p in prompts)
        return {
            "id": f"cmpl-{self.requests}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": n, "completion_tokens": len(prompts), "total_tokens": n + len(prompts)},
        }

    # -- HTTP -----------------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on a free localhost port in a daemon thread; returns the base URL (``http://127.0.0.1:P/v1``)."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                return None

            def reply(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout fault)
                    pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    generation = server.generation  # a request still hanging from before a reset() is not counted
                    server.requests += 1
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                    fault = server.faults.popleft() if server.faults else server.always
                try:
                    if server.barrier is not None:
                        try:
                            server.barrier.wait()
                        except threading.BrokenBarrierError:
                            server.barrier_broken = True
                    if self.path.rstrip("/") != "/v1/completions":
                        self.reply(404, {"error": {"message": f"no route {self.path}"}})
                    elif fault == "429":
                        self.reply(429, {"error": {"message": "rate limited", "type": "rate_limit"}})
                    elif fault in ("500", "503"):
                        self.reply(int(fault), {"error": {"message": "server error", "type": "server_error"}})
                    elif body.get("model") not in server.served:
                        self.reply(404, {"error": {"message": f"model {body.get('model')!r} not found"}})
                    else:
                        if fault == "timeout":
                            time.sleep(server.hang)
                        drop = int(fault.split(":")[1]) if fault and fault.startswith("drop:") else None
                        self.reply(200, server.complete(body, drop))
                finally:
                    with server._lock:
                        if server.generation == generation:
                            server.inflight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="completion-server").start()
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def reset(self) -> None:
        """Clear the faults, the barrier and the counters."""
        with self._lock:
            self.faults.clear()
            self.always = None
            self.barrier = None
            self.barrier_broken = False
            self.content_shape = False
            self.inflight = self.max_inflight = self.requests = 0
            self.generation += 1


# ---------------------------------------------------------------------------------------------------------
# tiny causal persona agents (a randomly initialised Llama with MiniLM's tokenizer; nothing is downloaded)
# ---------------------------------------------------------------------------------------------------------
def tiny_causal_dir(out: Any, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Any:
    """Save a tiny Llama (``layers`` layers, ``hidden`` wide) with MiniLM's tokenizer into ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from recsim_personas.agents.model_loading import load_encoder

    _, tokenizer = load_encoder()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # test helper: the initialisation of the tiny model
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    torch.random.set_rng_state(gen_state)
    tokenizer.save_pretrained(out)
    return out


def train_tiny_causal(world: Any, model_dir: Any, out: Any) -> Any:
    """Persona agents (2 clusters, rank 2, 16 examples, compact prompts of <= 128 tokens) on the tiny Llama."""
    import dataclasses

    from agentkit import CONFIG

    from recsim_personas.agents.backbone_config import BackboneConfig
    from recsim_personas.agents.training import train_agents

    backbone = BackboneConfig(kind="causal", model=str(model_dir), max_length=128)
    config = dataclasses.replace(CONFIG, template="compact")
    train_agents(world.split, world.pset, world.clusters, world.index, backbone, config, out, progress=False)
    return out
