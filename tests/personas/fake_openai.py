"""A local OpenAI-compatible HTTP server for tests: chat completions and embeddings, with injected failures.

It answers the distillation prompt correctly (one memory per item id found in the prompt's INTERACTIONS
JSON, and a profile that says which batch it has seen), unless the next entry of ``plan`` says otherwise:

- ``"ok"``: a valid answer;  ``"429"`` / ``"500"``: that HTTP status (429 with a short retry-after);
- ``"timeout"``: sleep ``timeout_sleep`` seconds before answering (the client should time out and retry);
- ``"malformed"``: content that is not JSON;  ``"bad_ids"``: one memory missing and an unknown id added;
- ``"long"``: a profile far over the word limit.

Only 127.0.0.1 is used. Counters let tests check how many requests arrived.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

_INTERACTIONS = re.compile(r"INTERACTIONS:\n(\[.*\])", re.S)
_BATCH = re.compile(r"BATCH (\d+) OF (\d+)")


class FakeOpenAI:
    def __init__(
        self,
        plan: list[str] | None = None,
        *,
        models=("test-model",),
        delay: float = 0.0,
        timeout_sleep: float = 1.5,
        api_key: str | None = None,
        embed_dim: int = 16,
    ) -> None:
        self.plan = deque(plan or [])
        self.models = set(models)
        self.delay = delay
        self.timeout_sleep = timeout_sleep
        self.api_key = api_key
        self.embed_dim = embed_dim
        self.lock = threading.Lock()
        self.chat_requests = 0
        self.ok_answers = 0
        self.embedding_requests = 0
        self.embedded_texts = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length) or b"{}")
                if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
                if req.get("model") not in fake.models:
                    return self._send(
                        404,
                        {"error": {"message": f"model {req.get('model')} not found", "type": "invalid_request_error"}},
                    )
                if self.path.endswith("/chat/completions"):
                    return fake._chat(self, req)
                if self.path.endswith("/embeddings"):
                    return fake._embeddings(self, req)
                return self._send(404, {"error": {"message": "no such route"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------------------------
    def _next(self) -> str:
        with self.lock:
            self.chat_requests += 1
            return self.plan.popleft() if self.plan else "ok"

    def _chat(self, h: Any, req: dict[str, Any]) -> None:
        action = self._next()
        if self.delay:
            time.sleep(self.delay)
        if action == "429":
            return h._send(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"retry-after-ms": "10"})
        if action == "500":
            return h._send(500, {"error": {"message": "boom", "type": "server_error"}}, {"retry-after-ms": "10"})
        if action == "timeout":
            time.sleep(self.timeout_sleep)
        prompt = next(
            (m["content"] for m in req["messages"] if m["role"] == "user" and "INTERACTIONS:" in m["content"]), ""
        )
        items = json.loads(_INTERACTIONS.search(prompt).group(1)) if "INTERACTIONS:" in prompt else []
        m = _BATCH.search(prompt)
        batch = int(m.group(1)) if m else 0
        memories = [
            {
                "item_id": it["item_id"],
                "reason": f"I rated movie {it['title']} as {it['my_rating']} because of reasons {batch}.",
            }
            for it in items
        ]
        profile = {
            "activity": f"activity after batch {batch}",
            "conformity": "balanced",
            "diversity": "curious",
            "description": f"profile after batch {batch} of {m.group(2) if m else '?'}",
        }
        if action == "malformed":
            content = "Sure! Here is the JSON: {not json"
        else:
            if action == "bad_ids" and memories:
                memories = [*memories[1:], {"item_id": 999_999, "reason": "unknown"}]
            if action == "long":
                profile["description"] = "word " * 3000
            content = json.dumps({"memories": memories, "profile": profile})
            if action in ("ok", "timeout"):
                with self.lock:
                    self.ok_answers += 1
        body = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": req["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": len(prompt) // 4,
                "completion_tokens": len(content) // 4,
                "total_tokens": len(prompt) // 4 + len(content) // 4,
            },
        }
        h._send(200, body)

    def _embeddings(self, h: Any, req: dict[str, Any]) -> None:
        texts = req["input"] if isinstance(req["input"], list) else [req["input"]]
        with self.lock:
            self.embedding_requests += 1
            self.embedded_texts += len(texts)
        data = []
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            vec = np.random.default_rng(seed).normal(size=self.embed_dim)
            data.append({"object": "embedding", "index": i, "embedding": vec.tolist()})
        h._send(
            200,
            {
                "object": "list",
                "data": data,
                "model": req["model"],
                "usage": {"prompt_tokens": sum(len(t) for t in texts) // 4, "total_tokens": 0},
            },
        )
