"""Persona distillation with an LLM over any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, ...).

For each user, the train interactions are sent in chronological batches of at most ``batch_size`` (10).
Each call carries the current Ms (empty for the first batch), the user's trait statistics and the batch
(title, year, genres, the user's rating, the historical average, the summary); the answer is one JSON
object with one reason (Ml) per item and the updated Ms (activity, conformity, diversity, description).

Robustness:

- **Transport**: the ``openai`` client retries 429, 5xx, timeouts and connection errors with exponential
  backoff (``max_retries``). If they persist, or the endpoint is down, the model unknown or the key
  refused, the run stops with a clear message; everything finished so far is kept and a rerun resumes.
- **Content**: the answer is parsed (JSON mode where the server supports it) and validated with pydantic:
  exactly the batch's item ids, non-empty sections, at most ``max_words`` words. An invalid answer gets one
  repair request quoting the problem; if that fails too, the batch is recorded as failed and the run goes
  on. Items of failed batches get a reason from the offline distiller (``source="stats-fallback"``), so
  every train interaction ends up with exactly one Ml.
- **Durability**: every finished batch (ok or failed) is appended to ``journal.jsonl`` and fsynced before
  the user's next batch is sent. A rerun reads the journal (ignoring a torn last line after a crash),
  skips what is done and continues each user from its last Ms. ``personas.jsonl``, ``memories.parquet``
  and the manifest are written from the journal once every batch is done, so after a ``kill -9`` and a
  rerun there is exactly one Ms per user and one Ml per (user, item).
- **Concurrency**: up to ``concurrency`` users are distilled at once (a user's batches are sequential,
  since each depends on the previous Ms). A lock file stops two runs from sharing a directory.
- **Cost**: prompt and completion tokens are summed from the server's ``usage``; with prices configured,
  the cost is reported too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from recsim_personas.data.catalog import display_title
from recsim_personas.data.protocol import Split
from recsim_personas.errors import ArtifactError, ConfigError, RecsimPersonasError
from recsim_personas.personas.prompts import load_template
from recsim_personas.personas.stats_distiller import _join_items, _traits_dict, reason_for, tastes_of
from recsim_personas.personas.store import MAX_MS_WORDS, SECTIONS, Persona, truncate_words, word_count
from recsim_personas.personas.traits import compute_traits

logger = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
LOCK = ".distill.lock"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class LLMEndpointError(RecsimPersonasError):
    """The endpoint cannot be used (down, unknown model, refused key, persistent errors)."""


@dataclass(frozen=True)
class LLMConfig:
    """How to reach the LLM and how to batch.

    Attributes:
        model: model name as the endpoint knows it (``gpt-4o``, a vLLM model id, an Ollama tag).
        base_url: endpoint root (``http://localhost:8000/v1``); ``None`` for OpenAI's default.
        api_key_env: environment variable holding the API key. Required for OpenAI's endpoint; for a
            custom ``base_url`` a missing key is replaced by a placeholder (local servers ignore it).
        batch_size: interactions per call (the paper: 10).
        concurrency: users distilled in parallel.
        temperature: sampling temperature.
        max_tokens: cap on the completion tokens of one call.
        timeout: seconds before a call times out (then retried by the client).
        max_retries: client retries on 429 / 5xx / timeouts / connection errors.
        response_format: ``"json_schema"`` (structured output), ``"json_object"`` (JSON mode) or
            ``"none"`` (for servers without either; the answer is still parsed and validated).
        max_words: word limit of the four Ms sections together.
        prompt_version: version of the ``distill`` prompt templates.
        price_input_per_mtok, price_output_per_mtok: prices per million tokens, for the cost report.
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

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("LLMConfig.model must be a non-empty model name.")
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

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (the endpoint address may)."""
        return {
            "model": self.model,
            "batch_size": self.batch_size,
            "max_words": self.max_words,
            "prompt_version": self.prompt_version,
        }


# -------------------------------------------------------------------------------------------- answers
class _Memory(BaseModel):
    item_id: int
    reason: str = Field(min_length=1)


class _Profile(BaseModel):
    activity: str = Field(min_length=1)
    conformity: str = Field(min_length=1)
    diversity: str = Field(min_length=1)
    description: str = Field(min_length=1)


class BatchAnswer(BaseModel):
    """The JSON object the LLM must return for one batch."""

    memories: list[_Memory]
    profile: _Profile


class InvalidAnswer(ValueError):
    """An answer that is not usable; the message is sent back in the repair request."""


def parse_answer(content: str | None, item_ids: list[int], max_words: int) -> BatchAnswer:
    """Parse and validate one answer against the batch's item ids.

    Raises:
        InvalidAnswer: not JSON, wrong shape, missing/unknown/duplicate item ids, an empty section, or
            more than ``max_words`` words in the profile.
    """
    if not content or not content.strip():
        raise InvalidAnswer("the answer was empty.")
    text = content.strip()
    if text.startswith("```"):  # tolerate a fenced block
        text = text.strip("`")
        text = text[text.find("{") :]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"it is not valid JSON ({exc.msg} at character {exc.pos}).") from None
    try:
        answer = BatchAnswer.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidAnswer(f"field {where or '(root)'}: {first['msg']}.") from None
    got = [m.item_id for m in answer.memories]
    dupes = sorted({i for i in got if got.count(i) > 1})
    missing = sorted(set(item_ids) - set(got))
    unknown = sorted(set(got) - set(item_ids))
    if dupes or missing or unknown:
        raise InvalidAnswer(
            f"memories must cover each item_id once; missing {missing}, unknown {unknown}, repeated {dupes}."
        )
    words = sum(word_count(getattr(answer.profile, s)) for s in SECTIONS)
    if words > max_words:
        raise InvalidAnswer(f"the profile has {words} words; the limit is {max_words}.")
    return answer


# -------------------------------------------------------------------------------------------- journal
class Journal:
    """Append-only, fsynced record of finished batches (one JSON object per line).

    The first line is a header with the split id and the config identity; a journal from another split
    or config is refused. A torn last line (crash mid-write) is cut off when the journal is opened.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.records: dict[tuple[int, int], dict[str, Any]] = {}
        if path.exists():
            self._load(header)
        else:
            self._write_line(header)

    def _load(self, header: dict[str, Any]) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            logger.warning(
                "journal %s: dropping a torn last line (%d bytes) left by an interrupted run",
                self.path,
                len(data) - cut,
            )
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        lines = data.decode("utf-8").splitlines()
        if not lines:
            self._write_line(header)
            return
        first = json.loads(lines[0])
        if first.get("split_id") != header["split_id"] or first.get("config") != header["config"]:
            raise ArtifactError(
                f"{self.path} belongs to another run (split {str(first.get('split_id'))[:12]}…, config"
                f" {first.get('config')}); this run is split {header['split_id'][:12]}…, config {header['config']}."
                " Fix: use another --out, or pass --overwrite to start over."
            )
        for n, line in enumerate(lines[1:], start=2):
            rec = json.loads(line)
            key = (int(rec["user_id"]), int(rec["batch"]))
            if key in self.records:
                logger.warning("journal %s:%d repeats batch %s; keeping the first", self.path, n, key)
                continue
            self.records[key] = rec

    def _write_line(self, obj: dict[str, Any]) -> None:
        line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def append(self, rec: dict[str, Any]) -> None:
        key = (int(rec["user_id"]), int(rec["batch"]))
        with self._lock:
            if key in self.records:
                return
            self._write_line(rec)
            self.records[key] = rec

    def done(self, user_id: int, batch: int) -> dict[str, Any] | None:
        return self.records.get((user_id, batch))


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtifactError(
                f"another distillation is running in {str(directory)!r}; wait for it or use another --out."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------ distiller
class LLMDistiller:
    """Distil Ms/Ml with an OpenAI-compatible chat endpoint (see the module docstring).

    Args:
        config: endpoint, batching and limits.
        client: an ``openai.OpenAI`` client to use instead of building one from ``config`` (tests,
            custom transports).
    """

    name = "openai"

    def __init__(self, config: LLMConfig, client: Any | None = None) -> None:
        self.cfg = config
        self._client = client
        self._system = load_template("distill", config.prompt_version, "system").substitute(max_words=config.max_words)
        self._user = load_template("distill", config.prompt_version, "user")
        self._repair = load_template("distill", config.prompt_version, "repair")

    def config(self) -> dict[str, Any]:
        """What identifies the result (recorded in the manifest; a rerun with the same is a no-op)."""
        return {"distiller": self.name, **self.cfg.identity()}

    # -- client ---------------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            import openai

            key = os.environ.get(self.cfg.api_key_env)
            if not key:
                if self.cfg.base_url is None:
                    raise ConfigError(
                        f"no API key: the environment variable {self.cfg.api_key_env} is not set. Fix: export it,"
                        " or point --base-url at a local OpenAI-compatible server (vLLM, Ollama)."
                    )
                key = "not-needed"
            self._client = openai.OpenAI(
                api_key=key, base_url=self.cfg.base_url, timeout=self.cfg.timeout, max_retries=self.cfg.max_retries
            )
        return self._client

    def _response_format(self) -> dict[str, Any] | None:
        if self.cfg.response_format == "json_object":
            return {"type": "json_object"}
        if self.cfg.response_format == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "batch_answer", "schema": BatchAnswer.model_json_schema()},
            }
        return None

    def _call(self, messages: list[dict[str, str]]) -> tuple[str | None, dict[str, int]]:
        import openai

        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        fmt = self._response_format()
        if fmt is not None:
            kwargs["response_format"] = fmt
        where = self.cfg.base_url or "the OpenAI API"
        try:
            resp = self.client().chat.completions.create(**kwargs)
        except openai.AuthenticationError as exc:
            raise LLMEndpointError(
                f"{where} refused the API key from ${self.cfg.api_key_env} ({exc.status_code})."
            ) from exc
        except openai.NotFoundError as exc:
            raise LLMEndpointError(
                f"{where} does not know model {self.cfg.model!r} (404). Fix: check --model against the server's"
                " model list."
            ) from exc
        except openai.BadRequestError as exc:
            raise LLMEndpointError(
                f"{where} rejected the request (400: {exc.message}). If the server lacks JSON mode, try"
                " --response-format none."
            ) from exc
        except openai.APIConnectionError as exc:
            raise LLMEndpointError(
                f"cannot reach {where} after {self.cfg.max_retries} retries ({exc}). Is the server up?"
            ) from exc
        except openai.APIStatusError as exc:
            raise LLMEndpointError(
                f"{where} kept failing with HTTP {exc.status_code} after {self.cfg.max_retries} retries."
            ) from exc
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        if resp.usage is not None:
            usage = {
                "prompt_tokens": resp.usage.prompt_tokens or 0,
                "completion_tokens": resp.usage.completion_tokens or 0,
            }
        content = resp.choices[0].message.content if resp.choices else None
        return content, usage

    # -- one user -------------------------------------------------------------------------------
    def _batch_prompt(
        self, profile: dict[str, str] | None, stats: str, batch: pd.DataFrame, number: int, count: int
    ) -> str:
        rows = [
            {
                "item_id": int(r.item_id),
                "title": display_title(r.title),
                "year": None if pd.isna(r.year) else int(r.year),
                "genres": [g for g in r.genres if g != "unknown"],
                "my_rating": int(r.rating),
                "historical_average": None if pd.isna(r.hist_avg_rating) else round(float(r.hist_avg_rating), 2),
                "summary": r.summary,
            }
            for r in batch.itertuples(index=False)
        ]
        profile_text = (
            json.dumps(profile, ensure_ascii=False, indent=1)
            if profile
            else "(none yet: this is the viewer's first batch)"
        )
        return self._user.substitute(
            profile=profile_text,
            statistics=stats,
            batch_number=number,
            batch_count=count,
            n_items=len(rows),
            interactions=json.dumps(rows, ensure_ascii=False),
        )

    def _run_batch(self, prompt: str, item_ids: list[int]) -> tuple[BatchAnswer | None, dict[str, int], list[str]]:
        messages = [{"role": "system", "content": self._system}, {"role": "user", "content": prompt}]
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        problems: list[str] = []
        for attempt in range(2):  # the answer, then one repair
            content, u = self._call(messages)
            usage = {k: usage[k] + u[k] for k in usage}
            try:
                return parse_answer(content, item_ids, self.cfg.max_words), usage, problems
            except InvalidAnswer as exc:
                problems.append(str(exc))
                logger.info("invalid answer (attempt %d) for items %s: %s", attempt + 1, item_ids, exc)
                messages = [
                    *messages,
                    {"role": "assistant", "content": content or ""},
                    {
                        "role": "user",
                        "content": self._repair.substitute(
                            problem=str(exc), item_ids=item_ids, max_words=self.cfg.max_words
                        ),
                    },
                ]
        return None, usage, problems

    def _distill_user(self, uid: int, rated: pd.DataFrame, stats: str, journal: Journal, stop: threading.Event) -> None:
        batches = [rated.iloc[i : i + self.cfg.batch_size] for i in range(0, len(rated), self.cfg.batch_size)]
        profile: dict[str, str] | None = None
        for b, batch in enumerate(batches):
            rec = journal.done(uid, b)
            if rec is not None:
                if rec["status"] == "ok":
                    profile = rec["profile"]
                continue
            if stop.is_set():
                return
            item_ids = [int(i) for i in batch["item_id"]]
            answer, usage, problems = self._run_batch(
                self._batch_prompt(profile, stats, batch, b + 1, len(batches)), item_ids
            )
            rec = {"user_id": uid, "batch": b, "item_ids": item_ids, "usage": usage}
            if answer is None:
                rec.update(status="failed", problems=problems)
                logger.warning("user %d batch %d failed after a repair attempt: %s", uid, b, problems[-1])
            else:
                profile = answer.profile.model_dump()
                rec.update(status="ok", profile=profile, memories={str(m.item_id): m.reason for m in answer.memories})
            journal.append(rec)

    # -- the run --------------------------------------------------------------------------------
    def distill(
        self,
        split: Split,
        out_dir: str | os.PathLike[str],
        *,
        user_ids: list[int] | None = None,
        progress: bool = False,
    ) -> tuple[list[Persona], pd.DataFrame, dict[str, Any]]:
        """Distil every selected user (resuming from ``out_dir/journal.jsonl``) and assemble the result.

        Returns:
            (personas, memories, usage): as :meth:`StatsDistiller.distill`, plus token usage and cost.

        Raises:
            LLMEndpointError: the endpoint cannot be used; finished batches are kept for a rerun.
        """
        from tqdm.auto import tqdm

        out = Path(out_dir)
        traits, cutoffs = compute_traits(split.train, split.items)
        traits = traits.set_index("user_id")
        cols = ["item_id", "title", "year", "genres", "cast", "director", "hist_avg_rating", "summary"]
        train = split.train.merge(split.items[cols], on="item_id", how="left")
        train = train.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
        if user_ids is not None:
            train = train[train["user_id"].isin(user_ids)]
        groups = {int(u): g.reset_index(drop=True) for u, g in train.groupby("user_id", sort=True)}
        header = {"journal": "recsim-personas/distill", "split_id": split.split_id, "config": self.cfg.identity()}
        stop = threading.Event()
        with _dir_lock(out):
            journal = Journal(out / JOURNAL, header)
            self.client()  # fail fast on a missing key
            todo = [
                u
                for u, g in groups.items()
                if any(journal.done(u, b) is None for b in range(_n_batches(len(g), self.cfg.batch_size)))
            ]
            logger.info("%d users to distill (%d already done)", len(todo), len(groups) - len(todo))
            with (
                ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool,
                tqdm(total=len(todo), desc="distilling", unit="user", disable=not progress) as bar,
            ):
                futures = {
                    pool.submit(self._distill_user, u, groups[u], _stats_text(traits.loc[u]), journal, stop): u
                    for u in todo
                }
                error: BaseException | None = None
                for fut in as_completed(futures):
                    try:
                        fut.result()
                    except BaseException as exc:  # stop the others after their current call
                        stop.set()
                        error = error or exc
                    bar.update(1)
                if error is not None:
                    raise error
            return self._assemble(split, groups, traits, cutoffs, journal)

    def _assemble(
        self, split: Split, groups: dict[int, pd.DataFrame], traits: pd.DataFrame, cutoffs: Any, journal: Journal
    ) -> tuple[list[Persona], pd.DataFrame, dict[str, Any]]:
        personas: list[Persona] = []
        parts: list[pd.DataFrame] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "calls_batches": 0, "failed_batches": 0}
        joined = _join_items(split.train, split.items)
        for uid, rated in groups.items():
            n_b = _n_batches(len(rated), self.cfg.batch_size)
            recs = [journal.done(uid, b) for b in range(n_b)]
            ok = [r for r in recs if r is not None and r["status"] == "ok"]
            failed = [r["batch"] for r in recs if r is not None and r["status"] == "failed"]
            for r in recs:
                if r is not None:
                    usage["prompt_tokens"] += r["usage"]["prompt_tokens"]
                    usage["completion_tokens"] += r["usage"]["completion_tokens"]
            usage["calls_batches"] += n_b
            usage["failed_batches"] += len(failed)
            reasons: dict[int, str] = {}
            for r in ok:
                reasons.update({int(k): v for k, v in r["memories"].items()})
            mine = joined[joined["user_id"] == uid]
            tastes = tastes_of(mine)
            by_item = {int(r.item_id): r for r in mine.itertuples(index=False)}
            source = ["llm" if int(i) in reasons else "stats-fallback" for i in rated["item_id"]]
            text = [reasons.get(int(i)) or reason_for(by_item[int(i)], tastes) for i in rated["item_id"]]
            parts.append(
                pd.DataFrame(
                    {
                        "user_id": uid,
                        "item_id": rated["item_id"].to_numpy(),
                        "rating": rated["rating"].to_numpy(),
                        "timestamp": rated["timestamp"].to_numpy(),
                        "reason": text,
                        "source": source,
                    }
                )
            )
            profile = ok[-1]["profile"] if ok else None
            truncated = False
            if profile is None:  # every batch failed: fall back to the offline Ms
                from recsim_personas.personas.stats_distiller import describe_profile

                profile = {
                    "activity": "",
                    "conformity": "",
                    "diversity": "",
                    "description": describe_profile(tastes, len(rated)),
                }
            else:
                words = sum(word_count(profile[s]) for s in SECTIONS)
                if words > self.cfg.max_words:
                    budget = self.cfg.max_words - (words - word_count(profile["description"]))
                    profile = {**profile, "description": truncate_words(profile["description"], max(budget, 0))}
                    truncated = True
            personas.append(
                Persona(
                    user_id=uid,
                    activity=profile["activity"],
                    conformity=profile["conformity"],
                    diversity=profile["diversity"],
                    description=profile["description"],
                    traits=_traits_dict(traits.loc[uid], cutoffs),
                    provenance={
                        "distiller": self.name,
                        "model": self.cfg.model,
                        "prompt_version": self.cfg.prompt_version,
                        "batches": n_b,
                        "failed_batches": failed,
                        "profile_from_batch": ok[-1]["batch"] if ok else None,
                        "truncated": truncated,
                    },
                )
            )
        if self.cfg.price_input_per_mtok is not None and self.cfg.price_output_per_mtok is not None:
            usage["cost"] = (
                usage["prompt_tokens"] * self.cfg.price_input_per_mtok
                + usage["completion_tokens"] * self.cfg.price_output_per_mtok
            ) / 1e6
        memories = pd.concat(parts, ignore_index=True)
        return personas, memories, usage


def _n_batches(n: int, size: int) -> int:
    return (n + size - 1) // size


def _stats_text(tr: pd.Series) -> str:
    return (
        f"rated {int(tr.activity)} movies (activity: {tr.activity_level}); mean squared gap between their ratings and"
        f" the movies' historical averages {tr.conformity:.2f} (conformity: {tr.conformity_level}); {int(tr.diversity)}"
        f" genres make up 80% of what they watch (diversity: {tr.diversity_level})."
    )


__all__ = [
    "BatchAnswer",
    "InvalidAnswer",
    "Journal",
    "LLMConfig",
    "LLMDistiller",
    "LLMEndpointError",
    "parse_answer",
]
