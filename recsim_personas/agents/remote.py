"""Persona agents served remotely: one OpenAI-compatible **completions** endpoint, one served name per adapter.

:class:`RemoteRater` implements the :class:`~recsim_personas.agents.rater.Rater` contract (and hands out
sessions as :class:`~recsim_personas.agents.persona_agents.PersonaAgents` does). A request ``(user, item)`` travels:

1. the causal persona agent's own prompt (persona, retrieved memories, movie, ``RATING:``) and its answer lead
   (:class:`~recsim_personas.agents.rating_tokens.RatingTokens`), built locally *as token ids* — so the server
   sees exactly the tokens the local agent scores, with no second tokenization;
2. the served model of the user's adapter (``persona_3`` → ``persona-3`` by default, or
   :attr:`RemoteRaterConfig.served_names`; vLLM: ``--enable-lora --lora-modules persona-3=DIR``, see
   ``recsim-personas agents export --format vllm``);
3. one ``POST /v1/completions`` with ``max_tokens=1``:

   - ``mode="top_logprobs"``: ``logprobs=top_logprobs``; the five rating tokens' log-probabilities are read
     from the first generated position's ``top_logprobs``. A rating token absent from it is a
     :class:`~recsim_personas.errors.RaterOutputError` naming the request and the token (a well-trained causal
     agent puts nearly all its mass on the five digits, so ``top_logprobs=20`` holds them);
   - ``mode="echo"``: the five prompts ``prompt + rating token`` in one request with ``echo=True,
     logprobs=0``; each rating token's log-probability is the prompt log-probability at its position (exact
     for any model, five prompts of prefill per rating — cheap with vLLM's prefix caching; a server that takes
     one prompt per request, as llama-cpp-python's, needs ``"top_logprobs"``);

4. the five log-probabilities, plus the anchoring prior's when the agents are anchored, → softmax → float64
   (n, 5). Renormalising over the five tokens is the local agent's softmax over the same five logits (the
   log-normaliser over the vocabulary cancels), so the distributions agree with the local agent's.

Requests run on a thread pool of :attr:`RemoteRaterConfig.concurrency` workers. 429, 5xx, timeouts and
connection errors are retried :attr:`~RemoteRaterConfig.max_retries` times with exponential backoff (doubling
from ``backoff_initial`` up to ``backoff_max`` seconds, minus up to 25 % jitter); what still fails is an
:class:`~recsim_personas.personas.openai_endpoint.LLMEndpointError` naming the request and the fix. The client,
the key handling and the key redaction are :mod:`~recsim_personas.personas.openai_endpoint`'s.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recsim_personas.agents.rater import N_LEVELS, as_requests
from recsim_personas.agents.rating_tokens import RATING_DIGITS
from recsim_personas.errors import ConfigError, RaterOutputError, config_from_dict
from recsim_personas.personas.openai_endpoint import DEFAULT_KEY_ENV, LLMEndpointError, Redactor, openai_client

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("top_logprobs", "echo")
PROMPT_FORMATS: tuple[str, ...] = ("token_ids", "text")
BASE_ADAPTER = "__base__"
"""The key of :attr:`RemoteRaterConfig.served_names` for agents without adapters (the prompt-only baseline)."""
SERVED_NAMES_FILE = "served_names.json"
"""What ``agents export`` writes beside the adapter folders (see :func:`read_served_names`)."""


def served_name(adapter: str) -> str:
    """The default served model name of an adapter: ``persona_3`` → ``persona-3`` (``single`` stays ``single``)."""
    return adapter.replace("_", "-")


@dataclass(frozen=True)
class RemoteRaterConfig:
    """Where and how a :class:`RemoteRater` asks for rating log-probabilities.

    Attributes:
        base_url: root of the OpenAI-compatible API, usually ending in ``/v1`` (``http://host:8000/v1``).
        api_key_env: environment variable holding the key (a local server without one gets a placeholder).
        served_names: adapter name (``persona_3``, ``single``; ``__base__`` for prompt-only agents) → the model
            name the server serves it under; ``None`` = :func:`served_name` of each adapter.
        mode: ``"top_logprobs"`` (read the rating tokens among the first answer token's top log-probabilities) or
            ``"echo"`` (prompt log-probabilities of the five ``prompt + rating`` continuations); see the module
            docstring.
        top_logprobs: how many top log-probabilities to ask for (``"top_logprobs"`` mode; >= 5; OpenAI and
            vLLM's default cap is 20).
        concurrency: at most this many requests in flight.
        timeout: seconds per HTTP request before it counts as timed out (and is retried).
        max_retries: retries of one request after a 429, a 5xx, a timeout or a connection error.
        backoff_initial: seconds before the first retry; doubled for each further one.
        backoff_max: the longest wait between two retries, in seconds.
        token_ids_in_answer: ask the server for ``token_id:<id>`` keys instead of token texts (vLLM's
            ``return_tokens_as_token_ids``; robust when two tokens decode to the same text).
        prompt_format: ``"token_ids"`` (the prompt as a list of token ids: the server scores exactly the local
            agent's tokens) or ``"text"`` (the ids decoded back to text, special tokens kept, for servers whose
            completions API takes strings only, e.g. llama-cpp-python's; the server tokenizes it again, so the
            tokens match only when the decode/encode round trip is exact — ``benchmarks/remote_engine.py``
            checks it against the server's tokenizer).
    """

    base_url: str
    api_key_env: str = DEFAULT_KEY_ENV
    served_names: Mapping[str, str] | None = None
    mode: Literal["top_logprobs", "echo"] = "top_logprobs"
    top_logprobs: int = 20
    concurrency: int = 8
    timeout: float = 30.0
    max_retries: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    token_ids_in_answer: bool = False
    prompt_format: Literal["token_ids", "text"] = "token_ids"

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"RemoteRaterConfig.base_url must be an http(s) URL, got {self.base_url!r}. Fix: pass the API root,"
                " e.g. 'http://localhost:8000/v1'."
            )
        if self.mode not in MODES:
            raise ConfigError(f"RemoteRaterConfig.mode must be one of {list(MODES)}, got {self.mode!r}.")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ConfigError(
                f"RemoteRaterConfig.prompt_format must be one of {list(PROMPT_FORMATS)}, got {self.prompt_format!r}."
            )
        for name in ("top_logprobs", "concurrency", "max_retries"):
            value = getattr(self, name)
            low = {"top_logprobs": N_LEVELS, "concurrency": 1, "max_retries": 0}[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"RemoteRaterConfig.{name} must be an integer >= {low}, got {value!r}.")
        for name in ("timeout", "backoff_initial", "backoff_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
                raise ConfigError(f"RemoteRaterConfig.{name} must be a positive number of seconds, got {value!r}.")
        if self.served_names is not None:
            if not isinstance(self.served_names, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in self.served_names.items()
            ):
                raise ConfigError(
                    "RemoteRaterConfig.served_names must map adapter names to non-empty served model names, got"
                    f" {self.served_names!r}."
                )
            object.__setattr__(self, "served_names", dict(self.served_names))

    def served(self, adapter: str | None) -> str:
        """The served model name of ``adapter`` (``None``: the prompt-only baseline's base model).

        Raises:
            ConfigError: no served name for it (names the known ones).
        """
        key = BASE_ADAPTER if adapter is None else adapter
        if self.served_names is None:
            if adapter is None:
                raise ConfigError(
                    "prompt-only agents need the served name of the base model. Fix: pass"
                    f" served_names={{{BASE_ADAPTER!r}: '<model>'}}."
                )
            return served_name(adapter)
        try:
            return self.served_names[key]
        except KeyError:
            raise ConfigError(
                f"RemoteRaterConfig.served_names has no entry for adapter {key!r} (it has"
                f" {sorted(self.served_names)}). Fix: add it, or pass served_names=None for the default names."
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RemoteRaterConfig:
        return config_from_dict(cls, d, "remote rater config fields")


def read_served_names(export_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{adapter: served name}`` from the ``served_names.json`` that ``agents export --format vllm`` wrote.

    Raises:
        ConfigError: the file is missing or is not such a mapping.
    """
    path = Path(export_dir) / SERVED_NAMES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(a): str(v["served_name"]) for a, v in data["adapters"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"cannot read served names from {str(path)!r} ({type(exc).__name__}: {exc}). Fix: write it with"
            " `recsim-personas agents export --format vllm --agents DIR --out EXPORT_DIR`."
        ) from None


class RemoteRater:
    """Causal persona agents whose backbone + adapters run behind an OpenAI-compatible completions endpoint.

    Build with :meth:`from_agents` (the prompt side — prompt builder, memory index, cluster map, anchoring prior —
    of loaded :class:`~recsim_personas.agents.persona_agents.PersonaAgents`) or :meth:`open` (a trained agents
    directory).

    Args:
        prompter: the causal persona agents whose prompts are sent: ``prompts(users, items, observed)``, ``prior``,
            ``memories``, ``index``, ``backbone.rating_tokens``, ``builder.tok``, ``name``.
        config: the endpoint and how to call it.
        client: an ``openai.OpenAI`` client to use instead of building one (tests, custom transports); its own
            retries should be 0 (this rater retries).
        sleep: waits between retries (``time.sleep``).

    Attributes:
        name: report label (``"remote " + the agents' label``).
        requests_sent: HTTP requests sent so far, retries included.
    """

    def __init__(
        self,
        prompter: Any,
        config: RemoteRaterConfig,
        *,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        name: str | None = None,
    ) -> None:
        if getattr(prompter, "kind", "causal") != "causal":
            raise ConfigError(
                f"a remote rater serves causal persona agents; {getattr(prompter, 'name', prompter)!r} is an"
                f" {prompter.kind} agent (its rating head is not an LM answer). Fix: train causal agents"
                " (`agents train --backbone causal`)."
            )
        self.prompter = prompter
        self.config = config
        self.name = name or f"remote {getattr(prompter, 'name', 'persona agents')}"
        tokens = prompter.backbone.rating_tokens
        self.rating_ids: tuple[int, ...] = tuple(int(t) for t in tokens.ids)
        self.lead_ids: tuple[int, ...] = tuple(int(t) for t in tokens.lead_ids)
        tok = prompter.builder.tok
        self.token_keys: tuple[str, ...] = tuple(
            f"token_id:{t}" if config.token_ids_in_answer else tok.decode([t]) for t in self.rating_ids
        )
        if len(set(self.token_keys)) != N_LEVELS:
            raise ConfigError(
                f"the rating tokens {self.rating_ids} decode to {self.token_keys}, not five distinct texts. Fix: pass"
                " token_ids_in_answer=True (vLLM's return_tokens_as_token_ids)."
            )
        self._client = client
        self._redact = Redactor(os.environ.get(config.api_key_env))
        self._sleep = sleep
        self.requests_sent = 0
        self._count = threading.Lock()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_agents(cls, agents: Any, config: RemoteRaterConfig, **kwargs: Any) -> RemoteRater:
        """A remote rater sending the prompts of loaded causal :class:`PersonaAgents` (their weights stay unused)."""
        return cls(agents, config, **kwargs)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        split: Any,
        config: RemoteRaterConfig,
        *,
        personas: str | os.PathLike[str] | None = None,
        memories: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> RemoteRater:
        """A remote rater for the trained agents directory ``path`` (as ``PersonaAgents.open``: personas, memory
        index and prior as recorded; the artifact checks included). The base model is loaded locally for its
        tokenizer and rating tokens; its weights are not used."""
        from recsim_personas.agents.persona_agents import PersonaAgents

        agents = PersonaAgents.open(
            path, split, personas=personas, memories=memories, cache_dir=cache_dir, dtype="float32"
        )
        return cls(agents, config, **kwargs)

    # -- the Rater contract ---------------------------------------------------------------------
    @property
    def memories(self) -> int:
        return int(self.prompter.memories)

    @property
    def index(self) -> Any:
        return self.prompter.index

    def session(self) -> Any:
        """A fresh session: memories of watched movies, as ``persona_agents.AgentSession`` keeps them."""
        from recsim_personas.agents.persona_agents import AgentSession

        return AgentSession(self)  # type: ignore[arg-type]  # duck-typed: memories, index, predict(observed=)

    def log_probs(self, users: np.ndarray, items: np.ndarray, *, observed: Any = None) -> np.ndarray:
        """The served model's log-probabilities of the five rating tokens, float64 (n, 5) (not renormalised)."""
        u, i = as_requests(users, items)
        if u.size == 0:
            return np.zeros((0, N_LEVELS))
        rows, names = self.prompter.prompts(u, i, observed)
        models = [self.config.served(None if names is None else names[j]) for j in range(len(rows))]
        out = np.empty((len(rows), N_LEVELS), dtype=np.float64)
        workers = min(self.config.concurrency, len(rows))

        def one(j: int) -> None:
            out[j] = self._rating_log_probs(j, [*rows[j], *self.lead_ids], models[j], int(u[j]), int(i[j]))

        if workers == 1:
            for j in range(len(rows)):
                one(j)
            return out
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="remote-rater") as pool:
            futures = [pool.submit(one, j) for j in range(len(rows))]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return out

    def predict(self, users: np.ndarray, items: np.ndarray, *, observed: Any = None) -> np.ndarray:
        """Rating distributions, float64 (n, 5), rows summing to 1 (anchored as the agents are)."""
        u, i = as_requests(users, items)
        logits = self.log_probs(u, i, observed=observed)
        prior = getattr(self.prompter, "prior", None)
        if prior is not None and getattr(self.prompter, "anchored", True) and u.size:
            logits = logits + prior.log_probs(u, i)
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    # -- one request ----------------------------------------------------------------------------
    def client(self) -> Any:
        """The ``openai.OpenAI`` client (built on first use, without client-side retries)."""
        if self._client is None:
            cfg = self.config
            self._client, self._redact = openai_client(cfg.base_url, cfg.api_key_env, cfg.timeout, 0)
        return self._client

    def _rating_log_probs(self, j: int, ids: list[int], model: str, user: int, item: int) -> np.ndarray:
        cfg = self.config
        what = f"request {j} (user_id {user}, item_id {item}, model {model!r})"
        extra = {"return_tokens_as_token_ids": True} if cfg.token_ids_in_answer else None
        as_text = cfg.prompt_format == "text"
        if cfg.mode == "top_logprobs":
            resp = self._create(
                what,
                model=model,
                prompt=self.prompt_text(ids) if as_text else ids,
                max_tokens=1,
                temperature=0.0,
                logprobs=cfg.top_logprobs,
                extra=extra,
            )
            try:
                top = self._first_top_logprobs(resp.choices[0].logprobs)
            except (AttributeError, IndexError, TypeError, KeyError):
                raise RaterOutputError(
                    f"{cfg.base_url} answered {what} without top_logprobs. Fix: use a server that returns"
                    " log-probabilities for completions (vLLM, llama.cpp server), or mode='echo'."
                ) from None
            values = []
            for k, key in enumerate(self.token_keys):
                if key not in top:
                    raise RaterOutputError(
                        f"{cfg.base_url} answered {what} without rating {RATING_DIGITS[k]}'s token {key!r} (id"
                        f" {self.rating_ids[k]}) among its {len(top)} top log-probabilities {sorted(top)[:8]}. Fix:"
                        f" raise top_logprobs (now {cfg.top_logprobs}; the server may cap it), or use mode='echo'"
                        " (exact for any model)."
                    )
                values.append(float(top[key]))
            return np.asarray(values, dtype=np.float64)
        prompts = [[*ids, t] for t in self.rating_ids]
        sent: list[Any] = [self.prompt_text(p) for p in prompts] if as_text else prompts
        resp = self._create(what, model=model, prompt=sent, max_tokens=1, echo=True, logprobs=0, extra=extra)
        values = [math.nan] * N_LEVELS
        for choice in resp.choices or []:
            k = int(choice.index)
            lps = getattr(choice.logprobs, "token_logprobs", None) or []
            at = len(ids)  # token ids: the rating token's position is known
            if as_text and 0 <= k < N_LEVELS:  # text: the server's own tokens; find the one ending the prompt
                at = self._text_position(choice.logprobs, sent[k], self.token_keys[k])
                if at is None:
                    raise RaterOutputError(
                        f"{cfg.base_url} tokenized {what}'s text prompt differently: no token {self.token_keys[k]!r}"
                        f" (rating {RATING_DIGITS[k]}) ends it. Fix: use prompt_format='token_ids' with a server that"
                        " takes token-id prompts, or mode='top_logprobs'."
                    )
            if 0 <= k < N_LEVELS and 0 <= at < len(lps) and lps[at] is not None:
                values[k] = float(lps[at])
        for k, v in enumerate(values):
            if math.isnan(v):
                raise RaterOutputError(
                    f"{cfg.base_url} answered {what} (echo) without the prompt log-probability of rating"
                    f" {RATING_DIGITS[k]}'s token {self.token_keys[k]!r} (id {self.rating_ids[k]}, position"
                    f" {len(ids)}). Fix: use a server that returns prompt log-probabilities with echo=True (vLLM), or"
                    " mode='top_logprobs'."
                )
        return np.asarray(values, dtype=np.float64)

    def _first_top_logprobs(self, logprobs: Any) -> dict[str, float]:
        """The first generated position's top log-probabilities, ``{token key: log-probability}``.

        Two answer shapes: the completions API's (``top_logprobs``: a list of ``{token: logprob}`` per position;
        vLLM, llama-cpp-python) and the chat API's that llama.cpp's ``llama-server`` also uses for completions
        (``content``: a list of ``{id, token, logprob, top_logprobs: [{id, token, logprob}]}``), read by token id
        when :attr:`RemoteRaterConfig.token_ids_in_answer`, else by token text.
        """
        extra = getattr(logprobs, "model_extra", None) or {}
        content = getattr(logprobs, "content", None) or extra.get("content")
        if content:
            first = content[0]
            entries = first["top_logprobs"] if isinstance(first, dict) else first.top_logprobs
            out: dict[str, float] = {}
            for e in entries:
                e = e if isinstance(e, dict) else e.model_dump()
                key = f"token_id:{e['id']}" if self.config.token_ids_in_answer else e["token"]
                out.setdefault(key, float(e["logprob"]))  # texts can collide: the list is likeliest first
            return out
        return dict(logprobs.top_logprobs[0] or {})

    @staticmethod
    def _text_position(logprobs: Any, text: str, key: str) -> int | None:
        """The index of the echoed token ``key`` that ends the prompt ``text`` (by its ``text_offset``), or None.
        Servers differ in whether the echo lists the generated token after the prompt's; the offset does not."""
        tokens = getattr(logprobs, "tokens", None) or []
        offsets = getattr(logprobs, "text_offset", None) or []
        start = len(text) - len(key)
        return next((j for j, (t, o) in enumerate(zip(tokens, offsets, strict=False)) if t == key and o == start), None)

    def prompt_text(self, ids: list[int]) -> str:
        """The text of a token-id prompt (``prompt_format="text"``): decoded with its special tokens."""
        return str(self.prompter.builder.tok.decode(ids, skip_special_tokens=False))

    def _create(self, what: str, *, extra: dict[str, Any] | None, **params: Any) -> Any:
        """``completions.create`` with this rater's retries (module docstring); raises ``LLMEndpointError``."""
        import openai

        cfg, client = self.config, self.client()
        problem = ""
        for attempt in range(cfg.max_retries + 1):
            with self._count:
                self.requests_sent += 1
            try:
                return client.completions.create(**params, extra_body=extra, timeout=cfg.timeout)
            except openai.APITimeoutError:
                problem = f"a timeout after {cfg.timeout} s"
            except openai.APIConnectionError as exc:
                problem = f"a connection error ({exc})"
            except openai.RateLimitError:
                problem = "HTTP 429 (rate limited)"
            except openai.InternalServerError as exc:
                problem = f"HTTP {exc.status_code}"
            except openai.NotFoundError:
                raise LLMEndpointError(
                    self._redact(
                        f"{cfg.base_url} does not serve model {params['model']!r} (404) for {what}. Fix: serve the"
                        " adapter under that name (`--lora-modules NAME=DIR`), or set served_names."
                    )
                ) from None
            except openai.APIStatusError as exc:
                raise LLMEndpointError(
                    self._redact(
                        f"{cfg.base_url} refused {what} (HTTP {exc.status_code}: {exc.message}). Fix: check the key"
                        f" in ${cfg.api_key_env} and that the server offers completions with logprobs."
                    )
                ) from None
            if attempt < cfg.max_retries:
                delay = min(cfg.backoff_initial * 2.0**attempt, cfg.backoff_max) * (1.0 - 0.25 * random.random())
                logger.warning("%s: %s got %s; retry %d in %.2f s", cfg.base_url, what, problem, attempt + 1, delay)
                self._sleep(delay)
        raise LLMEndpointError(
            self._redact(
                f"{cfg.base_url} failed {what} {cfg.max_retries + 1} times; the last answer was {problem}. Fix: check"
                " that the server is up and not overloaded, then rerun; or raise max_retries / timeout."
            )
        )

    def __repr__(self) -> str:
        return f"RemoteRater({self.name!r}, {self.config.base_url!r}, mode={self.config.mode!r})"


# ---------------------------------------------------------------------------------------------------------
# export for vLLM
# ---------------------------------------------------------------------------------------------------------
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hugging Face id of the offline default causal model (``smollm2``), which a server loads by id."""
VLLM_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ``--max-lora-rank`` values vLLM accepts."""
_WRAPPER_PREFIX = "base_model.model.lm."
"""Adapter tensors trained on a CausalRatingBackbone sit under its ``lm``; a plain causal LM has none."""


@dataclass(frozen=True)
class VllmExport:
    """What :func:`export_vllm` wrote.

    Attributes:
        out: the export directory (one PEFT folder per adapter, ``served_names.json``, ``manifest.json``).
        base: the base model id or directory the server loads.
        adapters: adapter name → ``{"served_name", "path", "cluster"}`` (``cluster`` ``None`` for ``single``).
        command: the ``vllm serve`` command line.
    """

    out: Path
    base: str
    adapters: dict[str, dict[str, Any]]
    command: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "base": self.base, "adapters": self.adapters, "command": self.command}


def export_vllm(
    agents_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    base: str | None = None,
    overwrite: bool = False,
) -> VllmExport:
    """Write a trained causal agents directory's adapters in the layout ``vllm serve --enable-lora`` loads.

    Each adapter becomes a PEFT folder ``out/<adapter>/`` (``adapter_config.json`` with
    ``base_model_name_or_path = base`` and ``task_type = "CAUSAL_LM"``, ``adapter_model.safetensors`` with the
    tensor names of a plain causal LM — the rating wrapper's ``lm.`` level removed), so
    ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out/<adapter>)`` loads it too.
    ``served_names.json`` maps each adapter to its served name and persona cluster; ``manifest.json`` records
    the source artifact and the files' sha256. The directory is written atomically.

    Args:
        agents_dir: a finished ``agents train`` directory of a causal backbone (checked against its manifest).
        out: the export directory.
        base: the base model the server loads; default: the manifest's model (a local directory as an absolute
            path; the offline default ``smollm2`` as :data:`SMOLLM2_HUB_ID`).
        overwrite: replace an existing ``out``.

    Raises:
        ArtifactError: an unfinished or altered agents directory.
        ConfigError: encoder agents (no LM answer to serve), or ``out`` exists without ``overwrite``.
    """
    from safetensors.torch import load_file, save_file

    from recsim_personas._io import atomic_dir, write_json
    from recsim_personas.agents.agent_artifact import read_agents_manifest, verify_agents
    from recsim_personas.agents.model_loading import SMOLLM2_ALIASES
    from recsim_personas.artifacts import ArtifactKind, file_digests, manifest_digest, write_manifest

    src, out = Path(agents_dir), Path(out)
    manifest = read_agents_manifest(src)
    backbone = manifest["backbone"]
    if backbone.get("kind") != "causal":
        raise ConfigError(
            f"agents {str(src)!r} are {backbone.get('kind')!r} agents: vLLM serves causal LMs, and an encoder's rating"
            " head is not an LM answer. Fix: export agents trained with `agents train --backbone causal`."
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{str(out)!r} exists and is not empty. Fix: choose another --out, or pass --overwrite.")
    cmap = verify_agents(src, manifest)
    if base is None:
        model = backbone.get("model")
        if model is None or str(model).strip().lower() in SMOLLM2_ALIASES:
            base = SMOLLM2_HUB_ID
        elif Path(model).expanduser().is_dir():
            base = str(Path(model).expanduser().resolve())
        else:
            base = str(model)
    names = sorted(set(cmap.values()))
    adapters: dict[str, dict[str, Any]] = {}
    ranks: list[int] = []
    with atomic_dir(out) as tmp:
        for name in names:
            folder = src / "adapters" / name
            config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            config.pop("auto_mapping", None)
            config.update(base_model_name_or_path=base, task_type="CAUSAL_LM", inference_mode=True)
            ranks.append(int(config.get("r", 8)))
            tensors = load_file(str(folder / "adapter_model.safetensors"))
            renamed = {
                ("base_model.model." + k[len(_WRAPPER_PREFIX) :] if k.startswith(_WRAPPER_PREFIX) else k): v
                for k, v in tensors.items()
            }
            (tmp / name).mkdir()
            save_file(renamed, str(tmp / name / "adapter_model.safetensors"), metadata={"format": "pt"})
            write_json(tmp / name / "adapter_config.json", config)
            cluster = int(name.rsplit("_", 1)[1]) if name.startswith("persona_") else None
            adapters[name] = {"served_name": served_name(name), "path": name, "cluster": cluster}
        write_json(tmp / SERVED_NAMES_FILE, {"base_model": base, "adapters": adapters})
        files = [f"{n}/{f}" for n in names for f in ("adapter_config.json", "adapter_model.safetensors")]
        kind = ArtifactKind(
            "recsim-personas/vllm-export",
            1,
            "persona adapters exported for vLLM",
            "run `recsim-personas agents export --format vllm --agents DIR --out DIR2`",
        )
        body = {"source": str(src.resolve()), "source_manifest": manifest_digest(src), "base_model": base}
        body["files"] = file_digests(tmp, [*files, SERVED_NAMES_FILE])
        write_manifest(tmp, kind, body, libraries=("peft", "safetensors"))
    rank = next((r for r in VLLM_LORA_RANKS if r >= max(ranks)), max(ranks))
    command = ["vllm", "serve", base, "--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(len(names))]
    command += ["--max-logprobs", "20", "--lora-modules"]
    command += [f"{a['served_name']}={(out / a['path']).resolve()}" for a in adapters.values()]
    logger.info("exported %d adapters of %s to %s", len(names), src, out)
    return VllmExport(out, base, adapters, command)


__all__ = [
    "BASE_ADAPTER",
    "SERVED_NAMES_FILE",
    "SMOLLM2_HUB_ID",
    "RemoteRater",
    "RemoteRaterConfig",
    "VllmExport",
    "export_vllm",
    "read_served_names",
    "served_name",
]
