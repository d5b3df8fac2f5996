"""Inference precision of the persona agents (dtype auto — measured, cached — / float32 / bfloat16) and the token cap
of a forward pass. No assertion depends on real timing: the measured choice runs on a pretend clock."""

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
from recsim_personas.agents.model_loading import MODEL_CACHE_ENV  # noqa: E402
from recsim_personas.agents.persona_agents import PRECISION_PROBE_REQUESTS, PersonaAgents  # noqa: E402
from recsim_personas.agents.precision import (  # noqa: E402
    AUTO_TOLERANCE,
    INFERENCE_DTYPES,
    MIN_SPEEDUP,
    PRECISION_CACHE_ENV,
    choose_precision,
    cpu_model_name,
    measure_precision,
    native_bf16_matmul,
    precision_cache_dir,
    resolve_inference_dtype,
    verdict_path,
)
from recsim_personas.agents.rater import check_distribution  # noqa: E402
from recsim_personas.cli import main  # noqa: E402
from recsim_personas.errors import ConfigError  # noqa: E402

LEVELS = np.arange(1, 6)
RATINGS = np.array([3.2, 4.1, 2.7, 3.9])
"""Expected ratings of a pretend batch (float32)."""


@pytest.fixture(autouse=True)
def _private_precision_cache(tmp_path, monkeypatch) -> Path:
    """Every test's verdicts in its own directory, never in the user's cache."""
    root = tmp_path / "precision-cache"
    monkeypatch.setenv(PRECISION_CACHE_ENV, str(root))
    return root


@pytest.fixture(scope="module")
def agents32(world: World, trained: Path) -> PersonaAgents:
    return perturbed_agents(world, trained, "float32", seed=3)


@pytest.fixture(scope="module")
def agents16(world: World, trained: Path) -> PersonaAgents:
    return perturbed_agents(world, trained, "bfloat16", seed=3)


class Bench:
    """A pretend workload on a pretend clock: a run in ``dtype`` advances the clock by ``seconds[dtype]`` (a float,
    or a list consumed run by run) — by 1,000 s when the previous run was in the other precision (a conversion,
    which must never be timed) — and returns ``outputs[dtype]``. No real time is ever measured."""

    def __init__(self, seconds: dict[str, float | list[float]], outputs: dict[str, np.ndarray]):
        self.seconds = {d: list(v) if isinstance(v, list) else v for d, v in seconds.items()}
        self.outputs = outputs
        self.now = 100.0
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def probe(self, dtype: str) -> np.ndarray:
        switched = not self.calls or self.calls[-1] != dtype
        self.calls.append(dtype)
        cost = self.seconds[dtype]
        if switched:
            self.now += 1000.0
        else:
            self.now += cost.pop(0) if isinstance(cost, list) else cost
        return self.outputs[dtype]

    def measure(self, key: str = "bench", **kwargs):
        return measure_precision(self.probe, key=key, clock=self.clock, **kwargs)


def bench(f32_s: float, bf16_s: float, shift: float = 0.0) -> Bench:
    return Bench({"float32": f32_s, "bfloat16": bf16_s}, {"float32": RATINGS, "bfloat16": RATINGS + shift})


def refuse(*args):
    raise AssertionError("a cached verdict must not time or run the workload")


CHECK = ["float32", "bfloat16"]
"""The accuracy check: one untimed run per precision."""


# ---------------------------------------------------------------------------------------------------------
# the measured choice
# ---------------------------------------------------------------------------------------------------------
def test_float32_when_bfloat16_is_slower_even_with_bf16_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: True)  # AVX512-BF16 reported, no AMX
    b = bench(1.0, 1.0 / 0.77)
    verdict = b.measure()
    assert verdict.dtype == "float32" and not verdict.from_cache
    assert verdict.float32_s == pytest.approx(1.0) and verdict.bfloat16_s == pytest.approx(1 / 0.77)
    assert verdict.speedup == pytest.approx(0.77) and "0.77×" in verdict.reason
    assert verdict.max_abs_diff == 0.0 and verdict.native_bf16_matmul is True  # recorded, not obeyed
    # the check, then 2 warm-ups (the check's run is bfloat16's first) and 5 timed runs each, never interleaved
    assert b.calls == CHECK + ["bfloat16"] * 6 + ["float32"] * 7


def test_bfloat16_when_faster_and_within_tolerance():
    verdict = bench(1.0, 0.5, shift=8e-4).measure()
    assert verdict.dtype == "bfloat16" and verdict.speedup == pytest.approx(2.0)
    assert verdict.max_abs_diff == pytest.approx(8e-4) and verdict.n_outputs == RATINGS.size
    assert verdict.tolerance == AUTO_TOLERANCE and "at most 0.0008" in verdict.reason


def test_bfloat16_refused_when_faster_but_outside_tolerance():
    verdict = bench(1.0, 0.5, shift=0.07).measure()  # what a causal SmolLM2 agent does in bfloat16
    assert verdict.dtype == "float32" and verdict.max_abs_diff == pytest.approx(0.07)
    assert "moved the outputs by up to 0.07" in verdict.reason
    # with timings at hand (a looser tolerance measured them), the same outputs are refused as fast
    timed = bench(1.0, 0.5, shift=0.07).measure(key="timed", tolerance=0.1)
    assert timed.dtype == "bfloat16" and timed.speedup == pytest.approx(2.0)
    again = measure_precision(refuse, key="timed", clock=refuse)  # default tolerance, re-decided from the cache
    assert again.dtype == "float32" and "2.00× as fast but moved the outputs by up to 0.07" in again.reason


def test_bfloat16_outside_tolerance_in_the_check_is_not_timed():
    b = bench(1.0, 0.5, shift=0.07)
    verdict = b.measure()
    assert verdict.dtype == "float32" and verdict.float32_s is None and verdict.bfloat16_s is None
    assert verdict.speedup is None and "not timed" in verdict.reason and verdict.max_abs_diff == pytest.approx(0.07)
    assert b.calls == CHECK and b.now == 2100.0  # the two untimed runs only
    nan = Bench({"float32": 1.0, "bfloat16": 0.5}, {"float32": RATINGS, "bfloat16": RATINGS * np.nan})
    verdict = nan.measure(key="nan")  # non-finite bfloat16 outputs: infinitely far
    assert verdict.dtype == "float32" and verdict.max_abs_diff == np.inf
    assert measure_precision(refuse, key="nan", clock=refuse).max_abs_diff == np.inf  # cached as null
    # the untimed verdict is reused while the tolerance refuses the outputs, measured again once it accepts them
    assert measure_precision(refuse, key="bench", clock=refuse, tolerance=0.05).dtype == "float32"
    again = bench(1.0, 0.5, shift=0.07)
    assert (
        again.measure(tolerance=0.1).dtype == "bfloat16" and again.calls == CHECK + ["bfloat16"] * 6 + ["float32"] * 7
    )


def test_timings_are_medians_of_the_timed_runs_only():
    b = Bench({"float32": [1.0, 9.0, 1.0], "bfloat16": [0.5, 30.0, 0.1]}, {"float32": RATINGS, "bfloat16": RATINGS})
    verdict = b.measure(warmup=1, repeats=3)  # the check's float32 run and each conversion: 1,000 s, untimed
    assert b.calls == CHECK + ["bfloat16"] * 3 + ["float32"] * 4
    assert verdict.float32_s == pytest.approx(1.0) and verdict.bfloat16_s == pytest.approx(0.5)
    one = bench(1.0, 0.5)
    assert one.measure(key="one", warmup=1, repeats=1).speedup == pytest.approx(2.0)
    assert one.calls == CHECK + ["bfloat16"] + ["float32"] * 2


def test_choose_precision_boundaries_and_bad_timings():
    assert choose_precision(1.0, 1.0 / 0.77, 0.0)[0] == "float32"  # the text agent on AVX512-BF16 without AMX
    assert choose_precision(1.0, 1.0, 0.0)[0] == "float32"  # equal speed: not faster
    assert choose_precision(MIN_SPEEDUP, 1.0, 0.0)[0] == "bfloat16"
    assert choose_precision(1.04, 1.0, 0.0)[0] == "float32"  # within timing noise
    assert choose_precision(1.01, 1.0, 0.0, min_speedup=1.0)[0] == "bfloat16"
    assert choose_precision(2.0, 1.0, AUTO_TOLERANCE)[0] == "bfloat16"  # the tolerance itself is accepted
    assert choose_precision(2.0, 1.0, float("nan"))[0] == "float32"
    untimed = ("float32", "bfloat16 moved the outputs by up to 0.07 (tolerance 0.01; not timed)")
    assert choose_precision(None, None, 0.07) == untimed
    with pytest.raises(ConfigError, match="bfloat16_s must be a positive number of seconds, got None"):
        choose_precision(2.0, None, 0.001)  # within the tolerance: only the timings can decide
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="bfloat16_s must be a positive number of seconds"):
            choose_precision(1.0, bad, 0.0)


def test_bad_arguments_and_probes_are_refused():
    b = bench(1.0, 0.5)
    for kwargs, message in [
        ({"key": ""}, "key must name the workload"),
        ({"tolerance": -0.1}, "tolerance must be a number >= 0"),
        ({"min_speedup": 0}, "min_speedup must be a number > 0"),
        ({"repeats": 0}, "repeats must be an integer >= 1, got 0"),
        ({"warmup": 0}, "warmup must be an integer >= 1, got 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            measure_precision(b.probe, **{"key": "k", "clock": b.clock, **kwargs})
    assert b.calls == []
    shapes = Bench({"float32": 1.0, "bfloat16": 0.5}, {"float32": RATINGS, "bfloat16": RATINGS[:2]})
    with pytest.raises(ConfigError, match=r"shape \(4,\) in float32 but \(2,\) in bfloat16"):
        shapes.measure()
    empty = Bench({"float32": 1.0, "bfloat16": 0.5}, {"float32": np.zeros(0), "bfloat16": np.zeros(0)})
    with pytest.raises(ConfigError, match="returned no outputs in float32"):
        empty.measure()
    broken = Bench({"float32": 1.0, "bfloat16": 0.5}, {"float32": RATINGS * np.nan, "bfloat16": RATINGS})
    with pytest.raises(ConfigError, match="non-finite outputs in float32"):
        broken.measure()
    frozen = bench(0.0, 0.0)
    with pytest.raises(ConfigError, match="Fix: pass a monotonic clock"):
        frozen.measure()


# ---------------------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------------------
def test_verdict_is_cached_per_machine_and_reused_without_timing(_private_precision_cache, monkeypatch):
    first = bench(1.0, 0.5, shift=1e-3).measure(key="userllm:abc")
    path = verdict_path("userllm:abc")
    assert path.parent == _private_precision_cache and path.name.startswith("userllm-abc-")
    stored = json.loads(path.read_text())
    assert stored["dtype"] == "bfloat16" and stored["float32_s"] == 1.0 and stored["bfloat16_s"] == 0.5
    assert stored["torch_version"] == torch.__version__ and stored["threads"] == torch.get_num_threads()
    assert stored["cpu_model"] == cpu_model_name() and isinstance(stored["native_bf16_matmul"], bool)

    again = measure_precision(refuse, key="userllm:abc", clock=refuse)
    assert again.from_cache and again.dtype == "bfloat16"
    assert (again.float32_s, again.bfloat16_s, again.max_abs_diff) == (
        first.float32_s,
        first.bfloat16_s,
        first.max_abs_diff,
    )
    strict = measure_precision(refuse, key="userllm:abc", clock=refuse, tolerance=1e-4)  # re-decided, not timed
    assert strict.from_cache and strict.dtype == "float32" and strict.tolerance == 1e-4

    other = bench(1.0, 2.0)
    assert other.measure(key="userllm:other").dtype == "float32" and other.calls  # another workload: measured
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    more = bench(1.0, 2.0)
    assert more.measure(key="userllm:abc").dtype == "float32" and more.calls  # another thread count: measured
    assert len(list(_private_precision_cache.glob("*.json"))) == 3
    refreshed = bench(3.0, 1.0)
    assert refreshed.measure(key="userllm:abc", refresh=True).dtype == "bfloat16" and refreshed.calls
    assert measure_precision(refuse, key="userllm:abc", clock=refuse).bfloat16_s == 1.0  # replaced


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: "",
        lambda text: "[1, 2]",
        lambda text: text.replace('"bfloat16_s": 0.5', '"bfloat16_s": -0.5'),
        lambda text: text.replace('"threads": ', '"threads": "many", "x": '),
        lambda text: text.replace('"dtype": "bfloat16"', '"dtype": "float16"'),
        lambda text: json.dumps({**json.loads(text), "cpu_model": "another CPU"}),  # not this machine's
        lambda text: b"\xff\xfe\x00 not text",
    ],
)
def test_damaged_cache_file_is_measured_again(damage, caplog):
    bench(1.0, 0.5).measure(key="k")
    path = verdict_path("k")
    damaged = damage(path.read_text())
    path.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
    b = bench(1.0, 2.0)
    with caplog.at_level("WARNING", logger=precision.__name__):
        verdict = b.measure(key="k")
    assert not verdict.from_cache and verdict.dtype == "float32" and b.calls
    assert "measuring again" in caplog.text
    assert measure_precision(refuse, key="k", clock=refuse).dtype == "float32"  # rewritten, whole


def test_an_unwritable_cache_still_gives_the_verdict(tmp_path, caplog):
    (tmp_path / "file").write_text("not a directory")
    with caplog.at_level("WARNING", logger=precision.__name__):
        verdict = bench(1.0, 0.5).measure(cache_dir=tmp_path / "file")
    assert verdict.dtype == "bfloat16" and "cannot cache the precision verdict" in caplog.text


def test_cache_directory_and_its_overrides(monkeypatch, tmp_path):
    assert precision_cache_dir() == tmp_path / "precision-cache"  # the autouse fixture's variable
    assert precision_cache_dir(tmp_path / "models") == tmp_path / "models" / "precision"
    monkeypatch.delenv(PRECISION_CACHE_ENV)
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "m"))
    assert precision_cache_dir() == tmp_path / "m" / "precision"
    bench(1.0, 0.5).measure(key="k", cache_dir=tmp_path / "root")
    assert len(list((tmp_path / "root" / "precision").glob("k-*.json"))) == 1


def test_cpu_model_name_is_read_from_cpuinfo():
    text = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Some  CPU @ 2.0GHz\nflags\t\t: fpu\nmodel name\t: Other\n"
    assert cpu_model_name(text) == "Some CPU @ 2.0GHz"
    assert cpu_model_name("processor\t: 0\n")  # no model name line: still something stable


# ---------------------------------------------------------------------------------------------------------
# resolve_inference_dtype and the CPU flags (information only)
# ---------------------------------------------------------------------------------------------------------
def test_explicit_dtypes_bypass_measuring_and_auto_needs_a_workload(monkeypatch):
    assert INFERENCE_DTYPES == ("auto", "float32", "bfloat16")
    monkeypatch.setattr(precision, "native_bf16_matmul", lambda: True)
    for kind in ("encoder", "causal"):
        assert resolve_inference_dtype("float32", kind, refuse, key="k") == "float32"
        assert resolve_inference_dtype("bfloat16", kind, refuse, key="k") == "bfloat16"
        assert resolve_inference_dtype("auto", kind) == "float32"  # nothing measured: flags alone never decide
    b = bench(1.0, 0.5, shift=1e-4)
    monkeypatch.setattr(precision, "measure_precision", lambda probe, **kw: Bench.measure(b, **kw))
    assert resolve_inference_dtype("auto", "encoder", b.probe, key="k") == "bfloat16" and b.calls
    with pytest.raises(ConfigError, match=r"unknown inference dtype 'float16'.*auto, bfloat16, float32"):
        resolve_inference_dtype("float16", "encoder")
    with pytest.raises(ConfigError, match="unknown backbone kind 'decoder'"):
        resolve_inference_dtype("auto", "decoder")
    with pytest.raises(ConfigError, match="needs key="):
        resolve_inference_dtype("auto", "causal", b.probe)


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
    assert agents32.precision is None and agents16.precision is None  # explicit: nothing measured
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


def test_explicit_dtype_loads_without_measuring(world, trained, _private_precision_cache):
    for dtype in ("float32", "bfloat16"):
        agents = PersonaAgents.load(trained, world.split, world.pset, world.index, dtype=dtype)
        assert agents.dtype == dtype and agents.precision is None
    assert not _private_precision_cache.exists()


def test_auto_measures_the_agents_own_batch_then_reuses_the_verdict(world, trained, _private_precision_cache):
    agents = PersonaAgents.load(trained, world.split, world.pset, world.index, batch_size=4)
    verdict = agents.precision
    assert verdict is not None and not verdict.from_cache and verdict.key.startswith("persona-agents:persona:encoder:")
    assert agents.dtype == verdict.dtype and {p.dtype for p in agents.model.parameters()} == {
        getattr(torch, verdict.dtype)
    }
    assert verdict.n_outputs == min(PRECISION_PROBE_REQUESTS, len(world.split.test))
    assert verdict.max_abs_diff < AUTO_TOLERANCE  # MiniLM agents: bfloat16 moves expected ratings by < 1e-3
    assert verdict.threads == torch.get_num_threads() and verdict.torch_version == torch.__version__
    # the weights are exactly those of an explicit load in the chosen precision (float32 restored, not widened)
    explicit = PersonaAgents.load(trained, world.split, world.pset, world.index, batch_size=4, dtype=verdict.dtype)
    u, i = requests(world)
    np.testing.assert_allclose(agents.logits(u, i), explicit.logits(u, i), atol=1e-6, rtol=0)

    path = verdict_path(verdict.key)
    assert path.is_file()
    stored = json.loads(path.read_text())
    for f32_s, bf16_s, diff, expected in [
        (2.0, 1.0, 1e-4, "bfloat16"),
        (1.0, 2.0, 1e-4, "float32"),
        (2.0, 1.0, 0.07, "float32"),
    ]:
        path.write_text(json.dumps({**stored, "float32_s": f32_s, "bfloat16_s": bf16_s, "max_abs_diff": diff}))
        reopened = PersonaAgents.open(trained, world.split)
        assert reopened.precision.from_cache and reopened.dtype == expected, reopened.precision
        assert {p.dtype for p in reopened.model.parameters()} == {getattr(torch, expected)}


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
