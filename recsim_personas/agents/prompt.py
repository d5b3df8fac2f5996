"""The agent prompt: persona (Ms) + retrieved memories (Ml) + the movie, within an explicit token budget.

Two templates:

- ``"paper"`` — the prompt of *Personas within Parameters* in our own words: a role-play preamble with the
  three trait sections and the profile description, ``YOUR MEMORIES`` (each retrieved memory as the movie's
  description and ``MY MEMORY:`` with the reason), the rating task, the movie's description and
  ``RATING:``. For causal LMs.
- ``"compact"`` — the same facts without the instructions (``ACTIVITY:``, ``CONFORMITY:``, ``DIVERSITY:``,
  ``PROFILE:``, ``MEMORY:``, ``MOVIE:``). For the encoder, whose 256-token window would otherwise be spent
  on boilerplate it does not need once fine-tuned.

The prompt is assembled from separately tokenized segments, so its length is known exactly. When it does
not fit ``max_length`` tokens, it is cut in this order, each step only as far as needed:

1. each memory is always capped at ``memory_max_tokens``;
2. the profile description is cut from its end, down to ``description_min_tokens``;
3. memories are dropped, least similar first;
4. the rest of the profile description is cut;
5. the movie's description is cut from its end, never below its first ``movie_min_tokens`` tokens (title,
   year, genres and historical average come first);
6. if the task, the traits and that minimum still do not fit, :class:`PromptTooLongError` is raised.

Nothing overflows silently: :meth:`PromptBuilder.build` reports what was cut, and the counts are
summarised by :meth:`PromptBuilder.truncation_stats`. A user's persona segments and each movie's
description are tokenized once and cached.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from recsim_personas.errors import ConfigError, RecsimPersonasError

PREAMBLE = (
    "PERSONA: You are good at role-play. Imagine you are a user of a movie recommendation system, with these"
    " traits. Activity: {activity} Conformity: {conformity} Diversity: {diversity} Your profile, in your own"
    " words: "
)
EXPLAIN = (
    "\nActivity is how often you watch movies; conformity is how much other people's ratings sway yours;"
    " diversity is how willing you are to watch movies outside your usual taste. Using your persona and your"
    " memories of movies you have watched, think about the movie at the end and rate it. Use a memory only"
    " if it helps. A movie's historical average is how other people rated it, not you.\n"
)
TASK = (
    "TASK: Rate the movie below from 1 to 5, where 1 means you hated it, 2 you disliked it, 3 you feel"
    " neutral, 4 you liked it and 5 you loved it. Answer with one digit: 1, 2, 3, 4 or 5, and nothing else.\n"
)


class PromptTooLongError(RecsimPersonasError):
    """The parts of a prompt that cannot be cut do not fit the token budget."""


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are laid out and budgeted.

    Attributes:
        template: ``"paper"`` or ``"compact"`` (see the module docstring).
        max_length: token budget of the whole prompt, chat-template tokens included.
        memory_max_tokens: cap on each retrieved memory.
        description_min_tokens: the profile description is cut to this before any memory is dropped.
        movie_min_tokens: the movie description is never cut below this.
        chat_template: wrap the prompt in the tokenizer's chat template (instruction-tuned causal LMs).
    """

    template: Literal["paper", "compact"] = "paper"
    max_length: int = 512
    memory_max_tokens: int = 160
    description_min_tokens: int = 64
    movie_min_tokens: int = 48
    chat_template: bool = False

    def __post_init__(self) -> None:
        if self.template not in ("paper", "compact"):
            raise ConfigError(f"PromptConfig.template must be 'paper' or 'compact', got {self.template!r}.")
        if self.max_length < 64:
            raise ConfigError(f"PromptConfig.max_length must be >= 64 tokens, got {self.max_length!r}.")
        if self.memory_max_tokens < 8 or self.movie_min_tokens < 8:
            raise ConfigError("PromptConfig.memory_max_tokens and movie_min_tokens must be >= 8.")


@dataclass
class BuiltPrompt:
    """Token ids of one prompt and what had to be cut."""

    ids: list[int]
    memories_used: int
    cut: list[str] = field(default_factory=list)


class PromptBuilder:
    """Builds token-id prompts for (user, item, memories) within the budget.

    Args:
        tokenizer: a Hugging Face tokenizer (its special tokens are added as the model expects).
        personas: ``PersonaSet`` (``.persona(user_id)`` → Ms sections).
        describe: item id → the item's description (``ItemCatalog.describe``).
        config: layout and budget.
    """

    def __init__(self, tokenizer: Any, personas: Any, describe: Any, config: PromptConfig | None = None) -> None:
        self.tok = tokenizer
        self.personas = personas
        self.describe = describe
        self.cfg = config or PromptConfig()
        self._user: dict[int, tuple[list[int], list[int]]] = {}
        self._movie: dict[int, list[int]] = {}
        self._memory: dict[tuple[int, str], list[int]] = {}
        self.stats: Counter[str] = Counter()
        self._prefix, self._suffix = self._wrappers()
        paper = self.cfg.template == "paper"
        self._task = self._ids(TASK if paper else "")
        self._mem_header = self._ids("\nYOUR MEMORIES\n" if paper else "\n")
        self._explain = self._ids(EXPLAIN if paper else "")
        self._answer = self._ids("RATING:")
        self._fixed = len(self._prefix) + len(self._suffix) + len(self._task) + len(self._answer) + len(self._explain)

    # -- tokens ---------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def _wrappers(self) -> tuple[list[int], list[int]]:
        if self.cfg.chat_template:
            marker = "\x00PROMPT\x00"
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
            )
            before, after = text.split(marker)
            return self._ids(before), self._ids(after)
        probe = self.tok("a", add_special_tokens=True)["input_ids"]
        inner = self.tok("a", add_special_tokens=False)["input_ids"]
        start = probe.index(inner[0]) if inner and inner[0] in probe else 0
        return probe[:start], probe[start + len(inner) :]

    def _persona_parts(self, user_id: int) -> tuple[list[int], list[int]]:
        cached = self._user.get(user_id)
        if cached is None:
            p = self.personas.persona(user_id)
            if self.cfg.template == "paper":
                head = PREAMBLE.format(activity=p.activity, conformity=p.conformity, diversity=p.diversity)
            else:
                head = f"ACTIVITY: {p.activity}\nCONFORMITY: {p.conformity}\nDIVERSITY: {p.diversity}\nPROFILE: "
            cached = (self._ids(head), self._ids(p.description))
            self._user[user_id] = cached
        return cached

    def _movie_ids(self, item_id: int) -> list[int]:
        cached = self._movie.get(item_id)
        if cached is None:
            cached = self._ids(f"MOVIE: {self.describe(item_id)}\n")
            self._movie[item_id] = cached
        return cached

    def _memory_ids(self, item_id: int, reason: str) -> list[int]:
        key = (item_id, reason)
        cached = self._memory.get(key)
        if cached is None:
            if self.cfg.template == "paper":
                text = f"MOVIE: {self.describe(item_id)}\nMY MEMORY: {reason}\n"
            else:
                text = f"MEMORY: {reason}\n"
            cached = self._ids(text)[: self.cfg.memory_max_tokens]
            self._memory[key] = cached
        return cached

    # -- assembly -------------------------------------------------------------------------------
    def build(self, user_id: int, item_id: int, memories: list[Any] = ()) -> BuiltPrompt:
        """Token ids for one request; ``memories`` are hits from the memory index, best first.

        Raises:
            PromptTooLongError: even after every permitted cut the prompt exceeds ``max_length``.
        """
        head, desc = self._persona_parts(int(user_id))
        movie = self._movie_ids(int(item_id))
        mems = [self._memory_ids(m.item_id, m.reason) for m in memories]
        cut: list[str] = []
        budget = self.cfg.max_length - self._fixed - len(head)
        movie_min = min(len(movie), self.cfg.movie_min_tokens)
        if budget < movie_min:
            raise PromptTooLongError(
                f"the prompt for user {user_id} / item {item_id} needs at least"
                f" {self.cfg.max_length - budget + movie_min} tokens (task, traits and the movie's first"
                f" {movie_min} tokens) but max_length is {self.cfg.max_length}. Fix: raise max_length, or use the"
                " 'compact' template."
            )
        mem_header = self._mem_header if mems else []

        def used() -> int:
            return len(mem_header) + sum(map(len, mems)) + len(desc) + len(movie)

        # 2. the description, down to description_min_tokens
        if used() > budget:
            keep = max(self.cfg.description_min_tokens, len(desc) - (used() - budget))
            if keep < len(desc):
                desc = desc[:keep]
                cut.append("description")
        # 3. memories, least similar first
        while mems and used() > budget:
            mems.pop()
            if "memory" not in cut:
                cut.append("memory")
            if not mems:
                mem_header = []
        # 4. the rest of the description
        if used() > budget:
            desc = desc[: max(0, len(desc) - (used() - budget))]
            if "description" not in cut:
                cut.append("description")
        # 5. the movie's description tail, down to movie_min_tokens
        if used() > budget:
            movie = movie[: max(movie_min, len(movie) - (used() - budget))]
            cut.append("movie")
        ids = (
            self._prefix
            + head
            + desc
            + self._explain
            + mem_header
            + [t for m in mems for t in m]
            + self._task
            + movie
            + self._answer
            + self._suffix
        )
        if len(ids) > self.cfg.max_length:  # defensive: the arithmetic above guarantees this cannot happen
            raise PromptTooLongError(f"internal budget error: {len(ids)} > {self.cfg.max_length} tokens.")
        self.stats.update(cut or ["none"])
        self.stats["prompts"] += 1
        return BuiltPrompt(ids, len(mems), cut)

    def text(self, built: BuiltPrompt) -> str:
        """The prompt as text (for inspection and logs)."""
        return self.tok.decode(built.ids)

    def truncation_stats(self) -> dict[str, float]:
        """Share of prompts built so far in which each kind of cut happened."""
        n = max(self.stats["prompts"], 1)
        return {k: self.stats[k] / n for k in ("memory", "description", "movie", "none")}
