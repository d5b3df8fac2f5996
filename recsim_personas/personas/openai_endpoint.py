"""OpenAI-compatible endpoints (OpenAI, vLLM, Ollama, ...): the client, chat calls, retries, errors, redaction.

- **Client**: :func:`openai_client` builds an ``openai.OpenAI`` from a base URL and the name of the environment
  variable holding the key. OpenAI's own endpoint needs the key; a custom ``base_url`` without one gets a
  placeholder (local servers ignore it).
- **Retries**: the ``openai`` client retries 429, 5xx, timeouts and connection errors with exponential backoff
  (``max_retries``). An HTTP 200 whose body is not a chat completion (not JSON, an HTML page from a proxy, a
  JSON object of another shape) is not retried by the client, so :class:`ChatEndpoint` retries it itself with
  the same backoff (0.5 s doubling up to 8 s, minus up to 25% jitter), ``max_retries`` times.
- **Errors**: whatever still fails becomes an :class:`LLMEndpointError` that says what the endpoint did and the
  fix: down, key refused, model unknown, request rejected (400), persistent HTTP errors or malformed bodies.
- **Redaction**: every message this module produces passes through a :class:`Redactor` that removes the
  configured key and any piece of it of 8 characters or more (a server that echoes the key in an error text
  does not put it on stderr). Errors are raised ``from None``, so a traceback does not show the server's
  original text either.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from difflib import SequenceMatcher
from typing import Any

from recsim_personas.errors import ConfigError, RecsimPersonasError

logger = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
"""The environment variable that holds the API key unless a config names another."""
PLACEHOLDER_KEY = "not-needed"
"""The key sent to a custom ``base_url`` when none is set (local servers ignore it)."""
BACKOFF_INITIAL = 0.5
"""Seconds before the first retry of a malformed answer; doubled for each further retry."""
BACKOFF_MAX = 8.0
"""The longest wait between two retries of a malformed answer, in seconds."""
REDACTED = "<redacted key>"
_MIN_PIECE = 8


class LLMEndpointError(RecsimPersonasError):
    """The endpoint cannot be used (down, unknown model, refused key, persistent errors or malformed answers)."""


class Redactor:
    """Removes an API key, and any piece of it of at least 8 characters, from text.

    Args:
        secret: the key; ``None``, the placeholder or an empty string redact nothing.
    """

    def __init__(self, secret: str | None) -> None:
        self.secret = secret if secret and secret != PLACEHOLDER_KEY else None

    def __call__(self, text: str) -> str:
        if self.secret is None:
            return text
        text = text.replace(self.secret, REDACTED)
        for _ in range(len(text)):  # each pass removes a piece of the key; a bound, not an expected count
            m = SequenceMatcher(None, text, self.secret, autojunk=False).find_longest_match()
            if m.size < _MIN_PIECE:
                break
            text = text[: m.a] + REDACTED + text[m.a + m.size :]
        return text


def api_key(api_key_env: str, base_url: str | None) -> str:
    """The key from ``$api_key_env``, or the placeholder for a custom ``base_url``.

    Raises:
        ConfigError: no key is set and ``base_url`` is OpenAI's (``None``).
    """
    key = os.environ.get(api_key_env)
    if key:
        return key
    if base_url is None:
        raise ConfigError(
            f"no API key: the environment variable {api_key_env} is not set. Fix: export it, or point --base-url"
            " at a local OpenAI-compatible server (vLLM, Ollama)."
        )
    return PLACEHOLDER_KEY


def openai_client(base_url: str | None, api_key_env: str, timeout: float, max_retries: int) -> tuple[Any, Redactor]:
    """An ``openai.OpenAI`` client for the endpoint, and the redactor of its key.

    Raises:
        ConfigError: see :func:`api_key`.
    """
    import openai

    key = api_key(api_key_env, base_url)
    client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries)
    return client, Redactor(key)


class _MalformedAnswer(Exception):
    """An HTTP 200 whose body is not a chat completion (the message says what it is)."""


class ChatEndpoint:
    """Chat completions from one model at one endpoint, with the retries and errors of the module docstring.

    Args:
        model: the model name as the endpoint knows it.
        base_url: endpoint root; ``None`` for OpenAI's.
        api_key_env: environment variable with the key.
        timeout: seconds per request before the client retries it.
        max_retries: retries of the client (429/5xx/timeouts/connection errors) and of malformed answers.
        client: an ``openai.OpenAI`` client to use instead of building one (tests, custom transports).
        sleep: the function that waits between retries of malformed answers (``time.sleep``).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key_env: str,
        timeout: float,
        max_retries: int,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self._client = client
        self._redact = Redactor(os.environ.get(api_key_env))
        self._sleep = sleep

    @property
    def where(self) -> str:
        return self.base_url or "the OpenAI API"

    def client(self) -> Any:
        """The ``openai.OpenAI`` client (built on first use; raises ``ConfigError`` without a needed key)."""
        if self._client is None:
            self._client, self._redact = openai_client(self.base_url, self.api_key_env, self.timeout, self.max_retries)
        return self._client

    def redact(self, text: str) -> str:
        """``text`` without the configured key (see :class:`Redactor`)."""
        return self._redact(text)

    def complete(self, messages: list[dict[str, str]], **params: Any) -> tuple[str | None, dict[str, int]]:
        """One chat completion: ``(content or None, {"prompt_tokens": n, "completion_tokens": m})``.

        Args:
            messages: the chat messages.
            params: further request fields (``temperature``, ``max_tokens``, ``response_format``).

        Raises:
            LLMEndpointError: the endpoint failed for good (see the module docstring); the message is redacted.
        """
        problem = ""
        for attempt in range(self.max_retries + 1):
            raw = self._request(messages, params)
            try:
                return _read(raw)
            except _MalformedAnswer as exc:
                problem = self.redact(str(exc))
            if attempt < self.max_retries:
                delay = min(BACKOFF_INITIAL * 2.0**attempt, BACKOFF_MAX) * (1.0 - 0.25 * random.random())
                logger.warning("%s answered with %s; retrying in %.1f s", self.where, problem, delay)
                self._sleep(delay)
        tries = f"{self.max_retries + 1} time{'s' if self.max_retries else ''}"
        raise LLMEndpointError(
            f"{self.where} answered HTTP 200 with {problem} ({tries}). Fix: check that --base-url is the root of an"
            " OpenAI-compatible API (usually ending in /v1) and not a proxy or web page."
        )

    def _request(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Any:
        import openai

        client = self.client()
        where, fix_retry = self.where, f"after {self.max_retries} retries"
        try:
            return client.chat.completions.with_raw_response.create(model=self.model, messages=messages, **params)
        except openai.AuthenticationError as exc:
            message = f"{where} refused the API key from ${self.api_key_env} ({exc.status_code})."
            message += " Fix: export a valid key in that variable, or name another with --api-key-env."
        except openai.NotFoundError:
            message = (
                f"{where} does not know model {self.model!r} (404). Fix: check --model against the server's model list."
            )
        except openai.BadRequestError as exc:
            message = (
                f"{where} rejected the request (400: {exc.message}). Fix: if the server lacks JSON mode, try"
                " --response-format none."
            )
        except openai.APIConnectionError as exc:
            message = f"cannot reach {where} {fix_retry} ({exc}). Fix: check that the server is up and --base-url."
        except openai.APIStatusError as exc:
            message = (
                f"{where} kept failing with HTTP {exc.status_code} {fix_retry}. Fix: wait and rerun the same command"
                " (it resumes), or raise --max-retries."
            )
        raise LLMEndpointError(self.redact(message)) from None


def _read(raw: Any) -> tuple[str | None, dict[str, int]]:
    """Content and usage of a raw chat-completion response, or :class:`_MalformedAnswer`."""
    from openai.types.chat import ChatCompletion

    http = raw.http_response
    ctype = http.headers.get("content-type", "") or "no content type"
    snippet = " ".join(http.text[:60].split())
    try:
        resp = raw.parse()
    except ValueError as exc:  # json.JSONDecodeError and pydantic's errors are ValueErrors
        raise _MalformedAnswer(
            f"a body that is not JSON ({type(exc).__name__}; {ctype}; it starts {snippet!r})"
        ) from None
    if not isinstance(resp, ChatCompletion):  # the client returns the text of a non-JSON content type
        raise _MalformedAnswer(f"a body that is not JSON ({ctype}; it starts {snippet!r})")
    try:
        content = resp.choices[0].message.content if resp.choices else None
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        if resp.usage is not None:
            usage = {
                "prompt_tokens": int(resp.usage.prompt_tokens or 0),
                "completion_tokens": int(resp.usage.completion_tokens or 0),
            }
    except (AttributeError, TypeError, IndexError, KeyError, ValueError):
        raise _MalformedAnswer(f"a JSON body that is not a chat completion (it starts {snippet!r})") from None
    if content is not None and not isinstance(content, str):
        raise _MalformedAnswer(f"a chat completion whose content is not text (it starts {snippet!r})")
    return content, usage


__all__ = [
    "DEFAULT_KEY_ENV",
    "ChatEndpoint",
    "LLMEndpointError",
    "Redactor",
    "api_key",
    "openai_client",
]
