"""RemoteRater against a local OpenAI-compatible server that runs the same tiny causal persona agents: equal
distributions, retries on 429 / 5xx / timeouts, clear errors, the concurrency bound; and `agents export --format
vllm` writes PEFT folders that load onto the plain base model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("openai")

from agentkit import perturbed_agents, requests  # noqa: E402
from remote_server import CompletionServer, tiny_causal_dir, train_tiny_causal  # noqa: E402

from recsim_personas.agents.rater import check_distribution  # noqa: E402
from recsim_personas.agents.remote import RemoteRater, RemoteRaterConfig, served_name  # noqa: E402
from recsim_personas.errors import ConfigError, RaterOutputError  # noqa: E402
from recsim_personas.personas.openai_endpoint import LLMEndpointError  # noqa: E402


@pytest.fixture(scope="module")
def causal_trained(world) -> Path:
    model_dir = tiny_causal_dir(world.root / "tiny-llama")
    return train_tiny_causal(world, model_dir, world.root / "agents-causal")


@pytest.fixture(scope="module")
def local(world, causal_trained):
    """The agents with seeded noise on their LoRA B matrices, so the two adapters clearly differ."""
    return perturbed_agents(world, causal_trained, "float32", seed=7)


@pytest.fixture(scope="module")
def server(world, causal_trained):
    agents = perturbed_agents(world, causal_trained, "float32", seed=7)  # its own copy, the same weights
    names = sorted(set(agents.cluster_map.values()))
    srv = CompletionServer(agents.model, {served_name(n): n for n in names}, agents.backbone.rating_tokens.ids)
    srv.url = srv.start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def clean(request):
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").reset()


def rater(local, server, **kw) -> RemoteRater:
    cfg = RemoteRaterConfig(base_url=server.url, **{"backoff_initial": 0.001, "backoff_max": 0.002, **kw})
    return RemoteRater.from_agents(local, cfg)


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "echo"},
        # a random tiny LM does not favour the digits: ask for every token's log-probability
        {"mode": "top_logprobs", "top_logprobs": 30522, "token_ids_in_answer": True},
        {"mode": "top_logprobs", "top_logprobs": 30522},
        {"mode": "echo", "prompt_format": "text"},
        {"mode": "top_logprobs", "top_logprobs": 30522, "prompt_format": "text"},
    ],
    ids=["echo", "top-ids", "top-texts", "echo-text-prompt", "top-text-prompt"],
)
def test_remote_distributions_equal_the_local_agents(world, local, server, kw):
    u, i = requests(world, 12)
    assert len({local.adapter_of(x) for x in u}) == 2  # both adapters in one batch
    want = local.predict(u, i)
    got = rater(local, server, concurrency=3, **kw).predict(u, i)
    check_distribution(got, len(u))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # raw: the log-probabilities renormalise to the unanchored local distribution
    raw = rater(local, server, **kw).log_probs(u[:2], i[:2])
    local_raw = torch.softmax(torch.as_tensor(local.logits(u[:2], i[:2], anchored=False)), -1).numpy()
    np.testing.assert_allclose(np.exp(raw) / np.exp(raw).sum(1, keepdims=True), local_raw, atol=1e-4)
    # the server routes by the model field: swapping the served names changes the answers
    swapped = rater(local, server, served_names={"persona_0": "persona-1", "persona_1": "persona-0"}, **kw)
    assert np.abs(swapped.log_probs(u[:2], i[:2]) - raw).max() > 1e-3


def test_the_session_sends_observed_memories(world, local, server):
    u, i = requests(world, 4)
    remote = rater(local, server, mode="echo")
    ours, theirs = remote.session(), local.session()
    for s in (ours, theirs):
        s.observe(u[:1], i[1:2], np.array([5]))
    np.testing.assert_allclose(ours.predict(u, i), theirs.predict(u, i), atol=1e-4, rtol=0)


@pytest.mark.parametrize("fault", ["429", "500", "503", "timeout"])
def test_transient_faults_are_retried(world, local, server, fault):
    u, i = requests(world, 1)
    want = local.predict(u, i)
    server.faults.append(fault)
    server.hang = 1.5
    r = rater(local, server, mode="echo", timeout=0.5 if fault == "timeout" else 30.0, max_retries=2)
    np.testing.assert_allclose(r.predict(u, i), want, atol=1e-4, rtol=0)
    assert r.requests_sent == 2


def test_a_permanent_500_is_a_clear_error_after_the_retries(world, local, server):
    u, i = requests(world, 1)
    server.always = "500"
    r = rater(local, server, mode="echo", max_retries=2)
    with pytest.raises(LLMEndpointError, match=r"failed request 0 \(user_id \d+, item_id \d+, model 'persona-\d'\) 3 "):
        r.predict(u, i)
    assert r.requests_sent == 3 and server.requests == 3


def test_an_unknown_served_name_is_not_retried(world, local, server):
    u, i = requests(world, 1)
    r = rater(local, server, served_names={"persona_0": "nope", "persona_1": "nope"})
    with pytest.raises(LLMEndpointError, match="does not serve model 'nope'"):
        r.predict(u, i)
    assert r.requests_sent == 1


def test_a_missing_rating_token_is_a_rater_output_error(world, local, server):
    u, i = requests(world, 1)
    server.faults.append("drop:3")
    r = rater(local, server, top_logprobs=30522, token_ids_in_answer=True)
    with pytest.raises(RaterOutputError, match=rf"request 0 \(user_id {u[0]}, .* without rating 4's token 'token_id:"):
        r.predict(u, i)
    # the real top 20 of a random tiny LM rarely holds the digits: the same error, with the fix
    with pytest.raises(RaterOutputError, match="raise top_logprobs"):
        rater(local, server, top_logprobs=5).predict(u, i)


def test_the_concurrency_bound_is_kept_and_used(world, local, server):
    u, i = requests(world, 8)
    server.barrier = threading.Barrier(2, timeout=20)  # each request waits for a second one in flight
    rater(local, server, mode="echo", concurrency=2).predict(u, i)
    assert server.max_inflight == 2 and not server.barrier_broken and server.requests == 8
    server.reset()
    rater(local, server, mode="echo", concurrency=1).predict(u, i)
    assert server.max_inflight == 1


def test_config_validation_names_field_and_value():
    with pytest.raises(ConfigError, match="base_url must be an http"):
        RemoteRaterConfig(base_url="localhost:8000")
    with pytest.raises(ConfigError, match=r"concurrency must be an integer >= 1, got 0"):
        RemoteRaterConfig(base_url="http://x/v1", concurrency=0)
    with pytest.raises(ConfigError, match=r"top_logprobs must be an integer >= 5, got 3"):
        RemoteRaterConfig(base_url="http://x/v1", top_logprobs=3)
    with pytest.raises(ConfigError, match="mode must be one of"):
        RemoteRaterConfig(base_url="http://x/v1", mode="prompt")
    with pytest.raises(ConfigError, match=r"prompt_format must be one of \['token_ids', 'text'\], got 'str'"):
        RemoteRaterConfig(base_url="http://x/v1", prompt_format="str")
    cfg = RemoteRaterConfig(base_url="http://x/v1", served_names={"persona_0": "p0"})
    assert RemoteRaterConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="no entry for adapter 'persona_1'"):
        cfg.served("persona_1")
    assert RemoteRaterConfig(base_url="http://x/v1").served("persona_3") == "persona-3"


def test_export_vllm_writes_peft_folders_that_load_on_the_base(world, causal_trained, capsys, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from recsim_personas.agents.persona_agents import PersonaAgents
    from recsim_personas.agents.remote import export_vllm, read_served_names
    from recsim_personas.cli import main

    out = tmp_path / "vllm"
    code = main(["agents", "export", "--format", "vllm", "--agents", str(causal_trained), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    base = str((world.root / "tiny-llama").resolve())
    assert f"vllm serve {base} --enable-lora" in printed
    assert f"persona-0={out.resolve() / 'persona_0'}" in printed and "persona-1=" in printed
    assert read_served_names(out) == {"persona_0": "persona-0", "persona_1": "persona-1"}
    assert json.loads((out / "served_names.json").read_text())["adapters"]["persona_1"]["cluster"] == 1
    config = json.loads((out / "persona_1" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base and config["task_type"] == "CAUSAL_LM"
    assert (out / "manifest.json").is_file()

    agents = PersonaAgents.load(causal_trained, world.split, world.pset, world.index, dtype="float32")
    u, i = requests(world, 2)
    rows, names = agents.prompts(u, i)
    ids = torch.tensor([rows[1] + list(agents.backbone.rating_tokens.lead_ids)])
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(out / names[1])).eval()
    with torch.no_grad():
        theirs = plain(input_ids=ids).logits[0, -1, list(agents.backbone.rating_tokens.ids)]
        with plain.disable_adapter():
            no_lora = plain(input_ids=ids).logits[0, -1, list(agents.backbone.rating_tokens.ids)]
    ours = agents.logits(u[1:2], i[1:2], anchored=False)[0]
    np.testing.assert_allclose(theirs.double().numpy(), ours, atol=1e-4, rtol=0)
    assert np.abs(no_lora.double().numpy() - ours).max() > 1e-6  # the adapter was loaded

    with pytest.raises(ConfigError, match="exists and is not empty"):
        export_vllm(causal_trained, out)


def test_a_remote_spec_names_the_agents_and_the_server(world, local, server, causal_trained, tmp_path):
    from recsim_personas.envs.world import parse_rater, resolve_rater

    spec = tmp_path / "remote.json"
    spec.write_text(json.dumps({"agents": str(causal_trained), "base_url": server.url, "mode": "echo"}))
    assert parse_rater(f"remote:{spec}") == ("remote", str(spec))
    remote = resolve_rater(f"remote:{spec}", world.split)
    assert isinstance(remote, RemoteRater)
    u, i = requests(world, 6)
    np.testing.assert_allclose(remote.predict(u, i), local.predict(u, i), atol=1e-4, rtol=0)
    # the gap report records the agents behind the server and the server
    from types import SimpleNamespace

    from recsim_personas.artifacts import manifest_digest
    from recsim_personas.recommenders.gap import rater_artifact

    recorded = rater_artifact(f"remote:{spec}", SimpleNamespace(rater_name=remote.name))
    assert recorded["path"] == str(causal_trained) and recorded["remote_base_url"] == server.url
    assert recorded["artifact_id"] == manifest_digest(causal_trained)
    spec.write_text(json.dumps({"base_url": server.url}))
    with pytest.raises(ConfigError, match="with an 'agents' directory"):
        resolve_rater(f"remote:{spec}", world.split)
    spec.write_text(json.dumps({"agents": str(causal_trained), "base_url": server.url, "concurency": 2}))
    with pytest.raises(ConfigError, match="concurency"):
        resolve_rater(f"remote:{spec}", world.split)
    with pytest.raises(ConfigError, match="cannot read it as JSON"):
        resolve_rater(f"remote:{tmp_path / 'missing.json'}", world.split)


def test_a_text_prompt_the_server_tokenizes_otherwise_is_a_rater_output_error(world, local, server, monkeypatch):
    r = rater(local, server, mode="echo", prompt_format="text")
    text_of = r.prompt_text
    monkeypatch.setattr(r, "prompt_text", lambda ids: text_of(ids) + " and more")  # the rating token is not last
    u, i = requests(world, 1)
    with pytest.raises(RaterOutputError, match=r"tokenized request 0 .* text prompt differently"):
        r.predict(u, i)


@pytest.mark.parametrize("as_ids", [True, False], ids=["ids", "texts"])
def test_the_chat_shaped_logprobs_of_llama_server_are_read_too(world, local, server, as_ids):
    """llama.cpp's llama-server answers completions with ``logprobs: {"content": [{id, token, logprob,
    top_logprobs}]}``; the distributions are the same."""
    u, i = requests(world, 6)
    server.content_shape = True
    got = rater(local, server, mode="top_logprobs", top_logprobs=30522, token_ids_in_answer=as_ids).predict(u, i)
    np.testing.assert_allclose(got, local.predict(u, i), atol=1e-4, rtol=0)
    server.faults.append("drop:3")
    with pytest.raises(RaterOutputError, match="without rating 4's token"):
        rater(local, server, mode="top_logprobs", top_logprobs=30522, token_ids_in_answer=as_ids).predict(u[:1], i[:1])
