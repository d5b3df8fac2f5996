"""A local OpenAI-compatible HTTP server for tests: chat completions and embeddings, with injected failures.

It answers the distillation prompt correctly (one memory per item id found in the prompt's INTERACTIONS
JSON, and a profile that says which batch it has seen), unless the next entry of ``plan`` (or, once the plan
is used up, ``default``) says otherwise:

- ``"ok"``: a valid answer;  ``"429"`` / ``"500"``: that HTTP status (429 with a short retry-after);
- ``"timeout"``: no answer until the same request arrives again (the client's retry after its timeout);
- ``"malformed"``: content that is not JSON;  ``"bad_ids"``: one memory missing and an unknown id added;
- ``"long"``: a profile far over the word limit;
- ``"html"``: HTTP 200 with an HTML page (``text/html``), as a proxy or a wrong URL gives;
- ``"not_json"``: HTTP 200, ``application/json``, with a body that is not JSON;
- ``"echo_400"``: HTTP 400 whose error message repeats the request's ``Authorization`` header (the key).

Only 127.0.0.1 is used. Counters let tests check how many requests arrived (in total, and the valid answers
per API key); :meth:`FakeOpenAI.wait_for` blocks until a condition on them holds, and :meth:`wait_idle` until
no request is being handled, so tests synchronise on events instead of sleeping.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

_INTERACTIONS = re.compile(r"INTERACTIONS:\n(\[.*\])", re.S)
_BATCH = re.compile(r"BATCH (\d+) OF (\d+)")
WAIT = 60.0  # the longest a test waits for an event before failing


class FakeOpenAI:
    def __init__(
        self,
        plan: list[str] | None = None,
        *,
        default: str = "ok",
        models=("test-model",),
        delay: float = 0.0,
        api_key: str | None = None,
        embed_dim: int = 16,
    ) -> None:
        self.plan = deque(plan or [])
        self.default = default
        self.models = set(models)
        self.delay = delay
        self.api_key = api_key
        self.embed_dim = embed_dim
        self.changed = threading.Condition()
        self.chat_requests = 0
        self.ok_answers = 0
        self.ok_by_key: Counter[str] = Counter()
        self.prompts: list[str] = []
        self.in_flight = 0
        self.embedding_requests = 0
        self.embedded_texts = 0
        self._closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(
                self,
                status: int,
                body: dict[str, Any] | bytes,
                headers: dict[str, str] | None = None,
                content_type: str = "application/json",
            ) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                with fake.changed:
                    fake.in_flight += 1
                try:
                    length = int(self.headers.get("Content-Length", 0))
                    req = json.loads(self.rfile.read(length) or b"{}")
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if fake.api_key is not None and key != fake.api_key:
                        return self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
                    if req.get("model") not in fake.models:
                        message = f"model {req.get('model')} not found"
                        return self._send(404, {"error": {"message": message, "type": "invalid_request_error"}})
                    if self.path.endswith("/chat/completions"):
                        return fake._chat(self, req, key)
                    if self.path.endswith("/embeddings"):
                        return fake._embeddings(self, req)
                    return self._send(404, {"error": {"message": "no such route"}})
                except (ValueError, ConnectionError):  # a client killed mid-request
                    return None
                finally:
                    with fake.changed:
                        fake.in_flight -= 1
                        fake.changed.notify_all()

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
        self._closing.set()
        with self.changed:
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, condition: Callable[[], bool], timeout: float = WAIT) -> bool:
        """Block until ``condition()`` holds (checked whenever a request finishes); False on timeout."""
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def wait_idle(self, timeout: float = WAIT) -> bool:
        """Block until no request is being handled."""
        return self.wait_for(lambda: self.in_flight == 0, timeout)

    # ------------------------------------------------------------------------------------------------
    def _next(self, prompt: str) -> tuple[str, int]:
        with self.changed:
            self.chat_requests += 1
            self.prompts.append(prompt)
            self.changed.notify_all()
            return (self.plan.popleft() if self.plan else self.default), self.chat_requests

    def _chat(self, h: Any, req: dict[str, Any], key: str) -> None:
        prompt = next(
            (m["content"] for m in req["messages"] if m["role"] == "user" and "INTERACTIONS:" in m["content"]), ""
        )
        action, number = self._next(prompt)
        if self.delay:
            self._closing.wait(self.delay)
        if action == "429":
            return h._send(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"retry-after-ms": "10"})
        if action == "500":
            return h._send(500, {"error": {"message": "boom", "type": "server_error"}}, {"retry-after-ms": "10"})
        if action == "echo_400":
            message = f"invalid request from key {key}; it ends in {key[-12:]}"
            return h._send(400, {"error": {"message": message, "type": "invalid_request_error"}})
        if action == "html":
            return h._send(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", content_type="text/html")
        if action == "not_json":
            return h._send(200, b'{"id": "chatcmpl-test", "choices": [', content_type="application/json")
        if action == "timeout":  # hold the answer until the client has given up and sent this request again
            with self.changed:
                self.changed.wait_for(lambda: prompt in self.prompts[number:] or self._closing.is_set(), WAIT)
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
        if action == "ok":
            with self.changed:
                self.ok_answers += 1
                self.ok_by_key[key] += 1
                self.changed.notify_all()
        h._send(200, body)

    def _embeddings(self, h: Any, req: dict[str, Any]) -> None:
        texts = req["input"] if isinstance(req["input"], list) else [req["input"]]
        with self.changed:
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
