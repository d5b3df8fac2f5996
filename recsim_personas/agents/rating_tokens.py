"""How a causal LM answers with a rating: the answer stem, the five rating tokens, and parsing free answers.

Every causal prompt ends with :data:`ANSWER_STEM`; the rating is read from the next-token logits of the five
tokens :func:`resolve_rating_tokens` finds for this tokenizer. :func:`parse_rating` reads a free-generated
answer (for the unusable-response rate, URR).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from recsim_personas.errors import ConfigError

ANSWER_STEM = "RATING:"
"""Every causal prompt ends with this; the rating is the next token(s)."""
RATING_DIGITS = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class RatingTokens:
    """How a causal LM's answer "1".."5" after ``RATING:`` maps to tokens.

    Attributes:
        ids: the five token ids read for ratings 1..5 (distinct, each a single token).
        lead_ids: token ids appended to a prompt ending in ``RATING:`` before reading ``ids`` (empty or
            one space token).
        form: ``"spaced"`` — the answer is `` 4`` and that is one token (GPT-2-style BPE); ``"space-token"``
            — the answer is `` 4``, tokenized as a standalone space token then a single digit token
            (SmolLM2, Llama-3-style digit splitting): the space goes in ``lead_ids``; ``"bare"`` — the
            answer is ``4`` right after the colon.
    """

    ids: tuple[int, ...]
    lead_ids: tuple[int, ...]
    form: Literal["spaced", "space-token", "bare"]


_FORMS: tuple[tuple[Literal["spaced", "space-token", "bare"], str, str], ...] = (
    ("spaced", "", " {d}"),
    ("space-token", " ", " {d}"),
    ("bare", "", "{d}"),
)


def _encode_plain(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def resolve_rating_tokens(tokenizer: Any, stem: str = ANSWER_STEM) -> RatingTokens:
    """Find how to read ratings 1..5 as single next tokens after a prompt ending in ``stem``.

    The forms are tried in order, and the first that works for all five digits wins:

    1. ``"spaced"``: ``stem + " 4"`` tokenizes as ``stem``'s tokens plus one token;
    2. ``"space-token"``: ``stem + " "`` is ``stem``'s tokens plus a space token, and ``stem + " 4"`` is
       that plus one digit token — the digit is read after appending the space;
    3. ``"bare"``: ``stem + "4"`` is ``stem``'s tokens plus one token.

    Answers with a space come first because that is how text continues after a colon, and therefore
    where an LM puts its mass. SmolLM2 splits every digit off on its own and never merges a space into
    it, so it gets ``"space-token"``: after ``"…RATING:"`` it gives the space token ~60-80 % and the
    digits together ~0.1 %; after ``"…RATING: "`` the digits get ~70-95 %. Scoring after the space thus
    reads the distribution where the model actually answers, and it is exactly how the training text
    ``"…RATING: 4"`` tokenizes, so RAFT fine-tuning and scoring agree.

    Args:
        tokenizer: anything with ``encode(text, add_special_tokens=False) -> list[int]`` and
            ``decode(ids) -> str``.
        stem: the text every prompt ends with.

    Returns:
        The :class:`RatingTokens` of the first working form.

    Raises:
        ConfigError: no form gives five distinct single tokens (names how each form split the digits).
    """
    base = _encode_plain(tokenizer, stem)
    tried: list[str] = []
    for form, lead, answer in _FORMS:
        prompt = _encode_plain(tokenizer, stem + lead)
        if prompt[: len(base)] != base or len(prompt) != len(base) + len(lead):
            tried.append(f"{form}: {stem + lead!r} does not tokenize as {stem!r} + one space token")
            continue
        ids: list[int] = []
        for d in RATING_DIGITS:
            full = _encode_plain(tokenizer, stem + answer.format(d=d))
            if full[: len(prompt)] != prompt or len(full) != len(prompt) + 1:
                tried.append(f"{form}: {answer.format(d=d)!r} -> tokens {full[len(base) :]}")
                break
            if tokenizer.decode([full[-1]]).strip() != d:
                tried.append(f"{form}: token {full[-1]} decodes to {tokenizer.decode([full[-1]])!r}, not {d!r}")
                break
            ids.append(full[-1])
        else:
            if len(set(ids)) == len(RATING_DIGITS):
                return RatingTokens(tuple(ids), tuple(prompt[len(base) :]), form)
            tried.append(f"{form}: digits share token ids {ids}")
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise ConfigError(
        f"tokenizer {name!r} has no single-token answer for all of ratings 1..5 after {stem!r}; tried "
        + "; ".join(tried)
        + ". Fix: use a causal model whose tokenizer has single-token digits (SmolLM2, Llama 3, Phi-3, Qwen2 do)."
    )


def rating_token_ids(tokenizer: Any) -> list[int]:
    """The five token ids read for ratings 1..5 after ``RATING:`` (see :func:`resolve_rating_tokens`)."""
    return list(resolve_rating_tokens(tokenizer).ids)


_ANSWER = re.compile(r"\s*(?:rating\s*:\s*)?([1-5])(?![0-9.,]*[0-9])", re.IGNORECASE)


def parse_rating(answer: str) -> int | None:
    """The rating 1..5 a free-generated answer starts with, or ``None`` if it is unusable (for the URR).

    Accepts leading whitespace, an optional repeated ``RATING:``, then one digit 1-5 not followed by
    more digits (``" 4"``, ``"4."``, ``"4/5"``, ``"Rating: 4"`` → 4; ``"10"``, ``"4.5"``, ``"I think 4"`` →
    ``None``).
    """
    m = _ANSWER.match(answer)
    return int(m.group(1)) if m else None
