"""Inference precision of the persona agents (dtype auto / float32 / bfloat16) and the token cap of a forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from agentkit import World, perturbed_agents, requests  # noqa: E402

from recsim_personas.agents import precision  # noqa: E402
from recsim_personas.agents.inference import batched_logits  # noqa: E402
from recsim_personas.agents.persona_agents import PersonaAgents  # noqa: E402
from recsim_personas.agents.precision import INFERENCE_DTYPES, native_bf16_matmul, resolve_inference_dtype  # noqa: E402
from recsim_personas.agents.rater import check_distribution  # noqa: E402
from recsim_personas.cli import main  # noqa: E402
from recsim_personas.errors import ConfigError  # noqa: E402

LEVELS = np.arange(1, 6)


@pytest.fixture(scope="module")
def agents32(world: World, trained: Path) -> PersonaAgents:
    return perturbed_agents(world, trained, "float32", seed=3)


@pytest.fixture(scope="module")
def agents16(world: World, trained: Path) -> PersonaAgents:
    return perturbed_agents(world, trained, "bfloat16", seed=3)


# ---------------------------------------------------------------------------------------------------------
# the rule of "auto"
# ---------------------------------------------------------------------------------------------------------
def test_explicit_dtypes_pass_and_auto_depends_on_kind_and_cpu(monkeypatch):
    assert INFERENCE_DTYPES == ("auto", "float32", "bfloat16")
    for kind in ("encoder", "causal"):
        assert resolve_inference_dtype("float32", kind) == "float32"
        assert resolve_inference_dtype("bfloat16", kind) == "bfloat16"
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: True)
    assert resolve_inference_dtype("auto", "encoder") == "bfloat16"
    assert resolve_inference_dtype("auto", "causal") == "float32"
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: False)
    assert resolve_inference_dtype("auto", "encoder") == "float32"
    with pytest.raises(ConfigError, match=r"unknown inference dtype 'float16'.*auto, bfloat16, float32"):
        resolve_inference_dtype("float16", "encoder")


def test_native_bf16_needs_onednn_and_the_cpu_instructions(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: True)
    assert native_bf16_matmul() == torch.backends.mkldnn.is_available()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert not native_bf16_matmul()
    monkeypatch.undo()
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: False)
    assert not native_bf16_matmul()


def test_cpu_flags_fallback_agrees_with_pytorchs_cpuinfo(monkeypatch):
    if not Path("/proc/cpuinfo").is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    detect = precision._cpu_has_bf16.__wrapped__
    from_torch = detect()
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert detect() == from_torch  # read from the flags of /proc/cpuinfo


def test_cpuinfo_flags_are_read_from_the_flags_line():
    head = "processor\t: 0\nmodel name\t: Some CPU with avx512_bf16 in its name\n"
    assert precision.cpuinfo_has_bf16(head + "flags\t\t: fpu sse2 avx512f avx512_bf16 avx2\n")
    assert precision.cpuinfo_has_bf16(head + "flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not precision.cpuinfo_has_bf16(head + "flags\t\t: fpu sse2 avx512f avx512_vnni\n")  # no bf16 unit
    assert not precision.cpuinfo_has_bf16(head)  # no flags line at all


# ---------------------------------------------------------------------------------------------------------
# loading in a precision
# ---------------------------------------------------------------------------------------------------------
def test_weights_are_converted_and_outputs_stay_float(agents32, agents16, world):
    assert agents32.dtype == "float32" and agents16.dtype == "bfloat16" and "bfloat16" in repr(agents16)
    assert {p.dtype for p in agents32.model.parameters()} == {torch.float32}
    assert {p.dtype for p in agents16.model.parameters()} == {torch.bfloat16}  # base, every adapter, every head
    u, i = requests(world)
    rows, names = agents16.prompts(u, i)
    assert batched_logits(agents16.model, agents16.backbone, rows, names, 4).dtype == torch.float32
    logits32, logits16 = agents32.logits(u, i), agents16.logits(u, i)
    assert logits16.dtype == np.float64 and logits16.shape == (len(u), 5)
    dist16 = check_distribution(agents16.predict(u, i), len(u))
    np.testing.assert_allclose(dist16.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(logits16, logits32, atol=0.02)
    gap = np.abs(dist16 @ LEVELS - agents32.predict(u, i) @ LEVELS)
    assert gap.max() < 0.01, gap


def test_auto_follows_the_rule(monkeypatch, world, trained):
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: False)
    assert PersonaAgents.load(trained, world.split, world.pset, world.index).dtype == "float32"
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: True)
    assert PersonaAgents.open(trained, world.split).dtype == "bfloat16"
    assert PersonaAgents.open(trained, world.split, dtype="float32").dtype == "float32"


def test_unknown_dtype_is_refused_before_loading_a_model(world, trained):
    with pytest.raises(ConfigError, match="unknown inference dtype 'half'"):
        PersonaAgents.load(trained, world.split, world.pset, world.index, dtype="half")
    with pytest.raises(ConfigError, match="unknown inference dtype 'fp16'"):
        PersonaAgents.prompt_only(world.split, world.pset, dtype="fp16")


# ---------------------------------------------------------------------------------------------------------
# batched passes: token cap, mixed adapters, row order
# ---------------------------------------------------------------------------------------------------------
def test_token_cap_splits_passes_keeps_mixed_routing_and_row_order(agents32, world):
    u, i = requests(world)
    rows, names = agents32.prompts(u, i)
    assert len(set(names)) == 2
    passes: list[tuple[int, int, list[str]]] = []

    def record(module, args, kwargs):
        passes.append((*kwargs["input_ids"].shape, list(kwargs["adapter_names"])))

    hook = agents32.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        whole = batched_logits(agents32.model, agents32.backbone, rows, names, 64, max_tokens=None)
        assert len(passes) == 1
        passes.clear()
        cap = 2 * max(len(r) for r in rows)
        capped = batched_logits(agents32.model, agents32.backbone, rows, names, 64, max_tokens=cap)
    finally:
        hook.remove()
    assert 1 < len(passes) <= len(rows) and sum(n for n, _, _ in passes) == len(rows)
    assert all(n * length <= cap or n == 1 for n, length, _ in passes)
    assert any(len(set(pass_names)) == 2 for _, _, pass_names in passes)  # one pass, two personas
    np.testing.assert_allclose(capped.numpy(), whole.numpy(), atol=1e-5)
    one = [batched_logits(agents32.model, agents32.backbone, [r], [n], 1) for r, n in zip(rows, names, strict=True)]
    alone = torch.cat(one)
    np.testing.assert_allclose(capped.numpy(), alone.numpy(), atol=1e-5)  # rows in input order
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        batched_logits(agents32.model, agents32.backbone, rows, names, 0)


def test_bfloat16_batched_matches_one_at_a_time(agents16, world):
    u, i = requests(world)
    batched = agents16.predict(u, i)
    alone = np.concatenate([agents16.predict(u[k : k + 1], i[k : k + 1]) for k in range(len(u))])
    assert np.abs(batched @ LEVELS - alone @ LEVELS).max() < 0.01


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------
def test_agents_eval_takes_dtype_and_reports_it(world, trained, capsys):
    split, personas = str(world.split.path), str(world.pset.path)
    argv = ["agents", "eval", "--split", split, "--personas", personas, "--agents", str(trained)]
    code = main([*argv, "--raters", "bias", "--max-test", "6", "--dtype", "float32", "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads(captured.out)
    assert f"{trained}: weights in float32 (--dtype float32)." in payload["notes"]
    with pytest.raises(SystemExit):
        main([*argv, "--dtype", "half"])
    assert "invalid choice: 'half'" in capsys.readouterr().err
