"""The settings of the LLM distiller: which endpoint and model, how to batch, what to accept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from recsim_personas.errors import ConfigError
from recsim_personas.personas.openai_endpoint import DEFAULT_KEY_ENV
from recsim_personas.personas.store import MAX_MS_WORDS


@dataclass(frozen=True)
class LLMConfig:
    """How to reach the LLM, how to batch, and how many failed batches a run may accept.

    Only :meth:`identity` (model, batching, word limit, prompt version) decides what the answers are; a rerun
    with another endpoint address, concurrency, timeouts or acceptance settings resumes the same run.

    Attributes:
        model: model name as the endpoint knows it (gpt-4o, a vLLM model id, an Ollama tag).
        base_url: endpoint root, e.g. http://localhost:8000/v1; None for OpenAI's.
        api_key_env: environment variable holding the API key. Required for OpenAI's endpoint; for a custom
            base_url a missing key is replaced by a placeholder (local servers ignore it).
        batch_size: interactions per call (the paper: at most 10).
        concurrency: users distilled in parallel; also the most batches a kill -9 can make a rerun ask again.
        temperature: sampling temperature.
        max_tokens: cap on the completion tokens of one call.
        timeout: seconds before a call times out (then it is retried).
        max_retries: retries on 429, 5xx, timeouts, connection errors and HTTP 200 answers that are not JSON.
        response_format: json_schema (structured output), json_object (JSON mode) or none (for servers with
            neither; the answer is still parsed and validated).
        max_words: word limit of the four Ms sections together.
        prompt_version: version of the distill prompt templates.
        price_input_per_mtok: price per million prompt tokens, for the cost report.
        price_output_per_mtok: price per million completion tokens, for the cost report.
        max_failed_share: the largest share of the run's batches that may fail validation (their items get
            offline reasons); above it the run stops with an error and writes no persona set.
        retry_failed: ask the batches that failed in an earlier run again (once per run).
    """

    model: str = "gpt-4o"
    base_url: str | None = None
    api_key_env: str = DEFAULT_KEY_ENV
    batch_size: int = 10
    concurrency: int = 4
    temperature: float = 0.2
    max_tokens: int = 4096
    timeout: float = 120.0
    max_retries: int = 5
    response_format: Literal["json_schema", "json_object", "none"] = "json_object"
    max_words: int = MAX_MS_WORDS
    prompt_version: int = 1
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    max_failed_share: float = 0.1
    retry_failed: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("LLMConfig.model must be a non-empty model name, got ''.")
        if not 1 <= self.batch_size <= 10:
            raise ConfigError(f"LLMConfig.batch_size must be in 1..10 (the paper's ≤ 10), got {self.batch_size!r}.")
        if self.concurrency < 1:
            raise ConfigError(f"LLMConfig.concurrency must be >= 1, got {self.concurrency!r}.")
        if self.timeout <= 0 or self.max_retries < 0:
            raise ConfigError(
                f"LLMConfig.timeout must be > 0 and max_retries >= 0, got {self.timeout!r}, {self.max_retries!r}."
            )
        if self.response_format not in ("json_schema", "json_object", "none"):
            raise ConfigError(
                "LLMConfig.response_format must be 'json_schema', 'json_object' or 'none',"
                f" got {self.response_format!r}."
            )
        if not 50 <= self.max_words <= MAX_MS_WORDS:
            raise ConfigError(f"LLMConfig.max_words must be in 50..{MAX_MS_WORDS}, got {self.max_words!r}.")
        if not 0.0 <= self.max_failed_share <= 1.0:
            raise ConfigError(f"LLMConfig.max_failed_share must be in [0, 1], got {self.max_failed_share!r}.")

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (the endpoint address may)."""
        return {
            "model": self.model,
            "batch_size": self.batch_size,
            "max_words": self.max_words,
            "prompt_version": self.prompt_version,
        }


__all__ = ["LLMConfig"]
