"""Forward passes of the persona agents: one-adapter passes on PEFT's plain forward, mixed ones by adapter_names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from agentkit import World, perturbed_agents, requests  # noqa: E402

from recsim_personas.agents.inference import batched_logits  # noqa: E402
from recsim_personas.agents.persona_agents import PersonaAgents  # noqa: E402


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def agents(request: pytest.FixtureRequest, world: World, trained: Path) -> PersonaAgents:
    return perturbed_agents(world, trained, request.param, seed=5)


class Passes:
    """Records every forward pass of a model: (rows, padded length, adapter_names or None)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[tuple[int, int, list[str] | None]] = []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = kwargs["input_ids"]
        self.calls.append((int(ids.shape[0]), int(ids.shape[1]), kwargs.get("adapter_names")))

    def __enter__(self) -> Passes:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def tol(agents: PersonaAgents) -> float:
    """float32: the same up to summation order; bfloat16: other pass shapes round the matmuls differently."""
    return 1e-5 if agents.dtype == "float32" else 5e-3


def equal_length_rows(agents: PersonaAgents, world: World) -> tuple[list[list[int]], list[str]]:
    """8 prompts of one length, adapters interleaved A, B, A, B, ..."""
    u, i = requests(world, 8)
    rows, names = agents.prompts(u, i)
    assert len(set(names)) == 2 and names[0] != names[1]
    width = min(len(r) for r in rows)
    return [r[:width] for r in rows], names


def test_single_adapter_passes_give_the_mixed_route_logits(agents, world):
    rows, names = equal_length_rows(agents, world)
    mixed = batched_logits(agents.model, agents.backbone, rows, names, 2)
    with Passes(agents.model) as spy:
        plain = batched_logits(agents.model, agents.backbone, rows, names, 2, single_adapter_passes=True)
    # equal lengths are ordered by adapter: 4 passes of 2 rows, each of one adapter, none routed per row
    assert [(n, a) for n, _, a in spy.calls] == [(2, None)] * 4
    # the same logits as PEFT's mixed-batch route
    np.testing.assert_allclose(plain.numpy(), mixed.numpy(), rtol=0, atol=tol(agents))
    # ... and not the same as one adapter for every row (a routing mistake would show)
    forced = batched_logits(agents.model, agents.backbone, rows, [names[0]] * len(rows), 2)
    assert (forced - mixed).abs().max().item() > 1e-2


def test_mixed_passes_stay_one_pass_routed_row_by_row(agents, world):
    rows, names = equal_length_rows(agents, world)
    with Passes(agents.model) as spy:
        plain = batched_logits(agents.model, agents.backbone, rows, names, 3, single_adapter_passes=True)
    # ordered A A A A B B B B, cut in threes: A A A | A B B (one mixed pass) | B B
    assert [(n, a is None) for n, _, a in spy.calls] == [(3, True), (3, False), (2, True)]
    assert sorted(spy.calls[1][2]) == sorted([names[0], names[1], names[1]])
    mixed = batched_logits(agents.model, agents.backbone, rows, names, 3)
    np.testing.assert_allclose(plain.numpy(), mixed.numpy(), rtol=0, atol=tol(agents))


def test_agents_serve_with_the_same_padding_and_the_same_ratings_either_way(agents, world):
    u, i = requests(world, 12)
    assert agents.single_adapter_passes  # the default
    with Passes(agents.model) as spy:
        new = agents.predict(u, i)
    agents.single_adapter_passes = False
    try:
        with Passes(agents.model) as old_spy:
            old = agents.predict(u, i)
    finally:
        agents.single_adapter_passes = True
    assert all(a is not None for *_, a in old_spy.calls)
    # ties in length broken by adapter: the padded tokens are the same, the passes as many
    assert sum(n * w for n, w, _ in spy.calls) == sum(n * w for n, w, _ in old_spy.calls)
    assert len(spy.calls) == len(old_spy.calls)
    np.testing.assert_allclose(new, old, rtol=0, atol=tol(agents))


def test_one_request_runs_the_plain_forward_of_its_users_adapter(agents, world):
    u, i = requests(world, 2)
    for k in range(2):  # two users of different personas, one call each
        with Passes(agents.model) as spy:
            one = agents.logits(u[k : k + 1], i[k : k + 1], anchored=False)
        assert [(n, a) for n, _, a in spy.calls] == [(1, None)]
        assert agents.model.active_adapter == agents.adapter_of(int(u[k]))
        agents.single_adapter_passes = False
        try:
            routed = agents.logits(u[k : k + 1], i[k : k + 1], anchored=False)
        finally:
            agents.single_adapter_passes = True
        np.testing.assert_allclose(one, routed, rtol=0, atol=tol(agents))
    # adapters stay frozen
    assert not any(p.requires_grad for n, p in agents.model.named_parameters() if "lora_" in n)


def test_plain_forward_is_not_used_in_train_mode_or_for_the_base_model(agents, world):
    rows, names = equal_length_rows(agents, world)
    base = ["__base__"] * len(rows)
    with Passes(agents.model) as spy:
        batched_logits(agents.model, agents.backbone, rows, base, 4, single_adapter_passes=True)
    assert all(a == ["__base__"] * 4 for *_, a in spy.calls)
    agents.model.train()
    try:
        with Passes(agents.model) as spy, pytest.raises(ValueError):  # PEFT refuses adapter_names in train mode
            batched_logits(agents.model, agents.backbone, rows, names, 4, single_adapter_passes=True)
        assert spy.calls and spy.calls[0][2] is not None
    finally:
        agents.model.eval()
