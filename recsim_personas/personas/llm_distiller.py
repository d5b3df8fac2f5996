"""Persona distillation with an LLM over any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, ...).

For each user, the train interactions are sent in chronological batches of at most ``batch_size`` (10).
Each call carries the current Ms (empty for the first batch), the user's trait statistics and the batch
(title, year, genres, the user's rating, the historical average, the summary); the answer is one JSON
object with one reason (Ml) per item and the updated Ms (activity, conformity, diversity, description).

This module ties the parts together; each part answers one question:

- :mod:`~recsim_personas.personas.llm_config` — the settings (:class:`LLMConfig`);
- :mod:`~recsim_personas.personas.openai_endpoint` — calling the endpoint: retries with backoff (also of HTTP
  200 answers that are not JSON), clear errors, the API key redacted from every message;
- :mod:`~recsim_personas.personas.llm_prompts` — the prompts and the validation of an answer;
- :mod:`~recsim_personas.personas.llm_journal` — the resumable record of finished batches.

What a run guarantees:

- **Content**: an invalid answer (not JSON, wrong ids, an empty section, too many words) gets one repair
  request quoting the problem; if that fails too, the batch is recorded as failed and the run goes on. Items
  of failed batches get a reason from the offline distiller (``source="stats-fallback"``), so every train
  interaction ends up with exactly one Ml. If more than ``max_failed_share`` of the run's batches failed,
  the run stops with :class:`FailedBatchesError` and writes no persona set; ``retry_failed`` asks the failed
  batches of earlier runs again (with the Ms that preceded them; later batches keep theirs).
- **Durability**: every finished batch (ok or failed) is fsynced to ``journal.jsonl`` before the user's next
  batch is sent, and a rerun asks only the batches without a record; ``personas.jsonl``, ``memories.parquet``
  and the manifest are written from the journal once every batch is done. After a ``kill -9`` and a rerun
  there is exactly one Ms per user and one Ml per (user, item), and no journaled batch is asked again. The
  batches that were in flight at the kill — at most ``concurrency``, one per worker, whether their answer was
  still on its way or had arrived but was not yet fsynced — have no record, so the rerun asks (and pays for)
  them again: that is the whole of the double cost a kill can cause.
- **Growth**: the journal is tied to the split and the config identity, not to the selected users, so a
  larger run (``--max-users 10`` then ``11``, or all) reuses every batch a smaller one finished.
- **Concurrency**: up to ``concurrency`` users are distilled at once (a user's batches are sequential,
  since each depends on the previous Ms). A lock file stops two runs from sharing a directory.
- **Cost**: prompt and completion tokens are summed from the server's ``usage``; with prices configured,
  the cost is reported too.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_personas.data.protocol import Split
from recsim_personas.errors import RecsimPersonasError
from recsim_personas.personas.llm_config import LLMConfig
from recsim_personas.personas.llm_journal import JOURNAL, JOURNAL_FORMAT, Journal, run_lock
from recsim_personas.personas.llm_prompts import BatchAnswer, DistillPrompts, InvalidAnswer, parse_answer, stats_text
from recsim_personas.personas.llm_prompts import response_format as response_format_field
from recsim_personas.personas.openai_endpoint import ChatEndpoint, LLMEndpointError
from recsim_personas.personas.stats_distiller import _join_items, _traits_dict, describe_profile, reason_for, tastes_of
from recsim_personas.personas.store import SECTIONS, Persona, truncate_words, word_count
from recsim_personas.personas.traits import compute_traits

logger = logging.getLogger(__name__)


class FailedBatchesError(RecsimPersonasError):
    """More of a run's batches failed validation than ``LLMConfig.max_failed_share`` allows."""


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
        self.endpoint = ChatEndpoint(
            config.model,
            base_url=config.base_url,
            api_key_env=config.api_key_env,
            timeout=config.timeout,
            max_retries=config.max_retries,
            client=client,
        )
        self.prompts = DistillPrompts(config.prompt_version, config.max_words)
        self._params: dict[str, Any] = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        fmt = response_format_field(config.response_format)
        if fmt is not None:
            self._params["response_format"] = fmt

    def config(self) -> dict[str, Any]:
        """What identifies the result (recorded in the manifest; a rerun with the same is a no-op)."""
        return {"distiller": self.name, **self.cfg.identity()}

    def needs_rerun(self, manifest: dict[str, Any]) -> bool:
        """Whether a finished persona set of this config is to be made again: failed batches to retry."""
        return self.cfg.retry_failed and int(manifest.get("usage", {}).get("failed_batches", 0)) > 0

    # -- one user -------------------------------------------------------------------------------
    def _run_batch(self, prompt: str, item_ids: list[int]) -> tuple[BatchAnswer | None, dict[str, int], list[str]]:
        messages = [{"role": "system", "content": self.prompts.system}, {"role": "user", "content": prompt}]
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        problems: list[str] = []
        for attempt in range(2):  # the answer, then one repair
            content, u = self.endpoint.complete(messages, **self._params)
            usage = {k: usage[k] + u[k] for k in usage}
            try:
                return parse_answer(content, item_ids, self.cfg.max_words), usage, problems
            except InvalidAnswer as exc:
                problems.append(self.endpoint.redact(str(exc)))
                logger.info("invalid answer (attempt %d) for items %s: %s", attempt + 1, item_ids, problems[-1])
                messages = [
                    *messages,
                    {"role": "assistant", "content": content or ""},
                    {"role": "user", "content": self.prompts.repair(str(exc), item_ids)},
                ]
        return None, usage, problems

    def _distill_user(self, uid: int, rated: pd.DataFrame, stats: str, journal: Journal, stop: threading.Event) -> None:
        batches = [rated.iloc[i : i + self.cfg.batch_size] for i in range(0, len(rated), self.cfg.batch_size)]
        profile: dict[str, str] | None = None
        for b, batch in enumerate(batches):
            rec = journal.done(uid, b)
            if rec is not None and (rec["status"] == "ok" or not self.cfg.retry_failed):
                if rec["status"] == "ok":
                    profile = rec["profile"]
                continue
            if stop.is_set():
                return
            item_ids = [int(i) for i in batch["item_id"]]
            prompt = self.prompts.batch(profile, stats, batch, b + 1, len(batches))
            answer, usage, problems = self._run_batch(prompt, item_ids)
            if rec is not None:  # a retry: what the failed attempts cost stays counted
                usage = {k: usage[k] + int(rec["usage"].get(k, 0)) for k in usage}
            new = {"user_id": uid, "batch": b, "item_ids": item_ids, "usage": usage}
            if answer is None:
                new.update(status="failed", problems=problems)
                logger.warning("user %d batch %d failed after a repair attempt: %s", uid, b, problems[-1])
            else:
                profile = answer.profile.model_dump()
                new.update(status="ok", profile=profile, memories={str(m.item_id): m.reason for m in answer.memories})
            journal.append(new)

    def _todo(self, rec: dict[str, Any] | None) -> bool:
        return rec is None or (rec["status"] == "failed" and self.cfg.retry_failed)

    # -- the run --------------------------------------------------------------------------------
    def distill(
        self,
        split: Split,
        out_dir: str | os.PathLike[str],
        *,
        user_ids: list[int] | None = None,
        progress: bool = False,
        overwrite: bool = False,
    ) -> tuple[list[Persona], pd.DataFrame, dict[str, Any]]:
        """Distil every selected user (resuming from ``out_dir/journal.jsonl``) and assemble the result.

        Args:
            split: the split.
            out_dir: the personas directory (holds the journal).
            user_ids: the users to distil (default: all of the split's).
            progress: show a progress bar.
            overwrite: discard a journal of another split or config instead of refusing it.

        Returns:
            (personas, memories, usage): as :meth:`StatsDistiller.distill`, plus token usage, the failed share
            and the cost.

        Raises:
            LLMEndpointError: the endpoint cannot be used; finished batches are kept for a rerun.
            FailedBatchesError: more than ``max_failed_share`` of the batches failed validation.
            ArtifactError: the journal belongs to another run, or is damaged.
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
        header = {"journal": JOURNAL_FORMAT, "split_id": split.split_id, "config": self.cfg.identity()}
        stop = threading.Event()
        with run_lock(out):
            journal = Journal(out / JOURNAL, header, discard_other=overwrite)
            self.endpoint.client()  # fail fast on a missing key
            todo = [
                u
                for u, g in groups.items()
                if any(self._todo(journal.done(u, b)) for b in range(_n_batches(len(g), self.cfg.batch_size)))
            ]
            logger.info("%d users to distill (%d already done)", len(todo), len(groups) - len(todo))
            with (
                ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool,
                tqdm(total=len(todo), desc="distilling", unit="user", disable=not progress) as bar,
            ):
                futures = {
                    pool.submit(self._distill_user, u, groups[u], stats_text(traits.loc[u]), journal, stop): u
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
            personas, memories, usage = self._assemble(split, groups, traits, cutoffs, journal)
        if usage["failed_share"] > self.cfg.max_failed_share:
            raise FailedBatchesError(self._failure_message(usage, journal, groups))
        return personas, memories, usage

    def _failure_message(self, usage: dict[str, Any], journal: Journal, groups: dict[int, pd.DataFrame]) -> str:
        problems = [
            r["problems"][-1]
            for u, g in groups.items()
            for b in range(_n_batches(len(g), self.cfg.batch_size))
            if (r := journal.done(u, b)) is not None and r["status"] == "failed" and r.get("problems")
        ]
        last = f" The last problem: {problems[-1]}" if problems else ""
        return (
            f"{usage['failed_batches']} of {usage['calls_batches']} batches ({usage['failed_share']:.0%}) failed"
            f" validation after a repair request, more than --max-failed-share {self.cfg.max_failed_share:g}"
            f" allows; no persona set was written (the journal keeps every answer).{last} Fix: check that"
            f" {self.cfg.model!r} can answer in the JSON the prompt asks for (try --response-format json_schema or"
            " none), then rerun with --retry-failed; or accept more offline reasons with a higher --max-failed-share."
        )

    def _assemble(
        self, split: Split, groups: dict[int, pd.DataFrame], traits: pd.DataFrame, cutoffs: Any, journal: Journal
    ) -> tuple[list[Persona], pd.DataFrame, dict[str, Any]]:
        personas: list[Persona] = []
        parts: list[pd.DataFrame] = []
        usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "calls_batches": 0, "failed_batches": 0}
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
        usage["failed_share"] = usage["failed_batches"] / usage["calls_batches"] if usage["calls_batches"] else 0.0
        if self.cfg.price_input_per_mtok is not None and self.cfg.price_output_per_mtok is not None:
            usage["cost"] = (
                usage["prompt_tokens"] * self.cfg.price_input_per_mtok
                + usage["completion_tokens"] * self.cfg.price_output_per_mtok
            ) / 1e6
        memories = pd.concat(parts, ignore_index=True)
        return personas, memories, usage


def _n_batches(n: int, size: int) -> int:
    return (n + size - 1) // size


__all__ = ["FailedBatchesError", "LLMConfig", "LLMDistiller", "LLMEndpointError"]
