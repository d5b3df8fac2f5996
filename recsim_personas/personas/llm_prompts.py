"""What the LLM distiller says and what it accepts back: the rendered prompts and the validated answer.

The prompts are the versioned ``distill`` templates (:mod:`recsim_personas.personas.prompts`): a system
prompt, one user prompt per batch (the current Ms, the user's trait statistics and the batch of rated movies
as JSON) and a repair prompt that quotes what was wrong with an answer. The answer must be one JSON object,
:class:`BatchAnswer`: one reason per item of the batch and the updated Ms; :func:`parse_answer` checks it.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from recsim_personas.data.catalog import display_title
from recsim_personas.personas.prompts import load_template
from recsim_personas.personas.store import SECTIONS, word_count


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


def response_format(kind: str) -> dict[str, Any] | None:
    """The ``response_format`` request field for ``json_schema``, ``json_object`` or ``none`` (→ ``None``)."""
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "batch_answer", "schema": BatchAnswer.model_json_schema()},
        }
    return None


def stats_text(traits: pd.Series) -> str:
    """The user's trait statistics as the prompt states them (``traits``: a row of ``compute_traits``)."""
    tr = traits
    return (
        f"rated {int(tr.activity)} movies (activity: {tr.activity_level}); mean squared gap between their ratings and"
        f" the movies' historical averages {tr.conformity:.2f} (conformity: {tr.conformity_level}); {int(tr.diversity)}"
        f" genres make up 80% of what they watch (diversity: {tr.diversity_level})."
    )


class DistillPrompts:
    """The ``distill`` templates of one prompt version, rendered.

    Args:
        version: the template version (``distill_v<version>.*.txt``).
        max_words: the Ms word limit the prompts state.
    """

    def __init__(self, version: int, max_words: int) -> None:
        self.max_words = max_words
        self.system = load_template("distill", version, "system").substitute(max_words=max_words)
        self._user = load_template("distill", version, "user")
        self._repair = load_template("distill", version, "repair")

    def batch(self, profile: dict[str, str] | None, stats: str, batch: pd.DataFrame, number: int, count: int) -> str:
        """The user prompt of batch ``number`` of ``count`` (``batch``: the rated movies joined with item data)."""
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

    def repair(self, problem: str, item_ids: list[int]) -> str:
        """The repair request quoting ``problem``."""
        return self._repair.substitute(problem=problem, item_ids=item_ids, max_words=self.max_words)


__all__ = ["BatchAnswer", "DistillPrompts", "InvalidAnswer", "parse_answer", "response_format", "stats_text"]
