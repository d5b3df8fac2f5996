"""USER-LLM's persona-cluster variant: one LoRA adapter per persona cluster (plus one shared by the users without
a persona), trained through the CLI from the personas' clusters; every request is routed through its user's
adapter, in mixed batches as one at a time, and the artifact round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from agentkit import make_world

from recsim_personas.agents.userllm.agent import UserLLMAgent
from recsim_personas.agents.userllm.config import PretrainConfig, UserEncoderConfig, UserLLMTrainConfig
from recsim_personas.agents.userllm.pretrain import pretrain_encoder
from recsim_personas.agents.userllm.train import train_userllm
from recsim_personas.cli import main
from recsim_personas.errors import ConfigError

SMALL = UserEncoderConfig(d_model=16, field_dim=8, n_layers=1, n_heads=2, ffn_mult=2, max_len=12)


@pytest.fixture(scope="module", name="world")
def world_fixture(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("persona-userllm"))


@pytest.fixture(scope="module", name="encoder")
def encoder_fixture(world):
    return pretrain_encoder(
        world.split, world.root / "enc", encoder_config=SMALL, config=PretrainConfig(epochs=1), progress=False
    )


@pytest.fixture(scope="module", name="agent")
def agent_fixture(world, encoder):
    out = world.root / "agent"
    argv = ["userllm", "train", "--split", str(world.split.path), "--encoder", str(encoder.path), "--out", str(out)]
    flags = ["--strategy", "lora", "--lora-per-persona", "--personas", str(world.pset.path), "--epochs", "1"]
    flags += ["--batch-size", "4", "--targets-per-cut", "4", "--min-prefix", "3", "--prior-folds", "2", "--lora-r", "2"]
    flags += ["--max-text-tokens", "24", "--no-progress", "--json"]
    assert main([*argv, *flags]) == 0
    return UserLLMAgent.load(out, split_id=world.split.split_id, dtype="float32")


def test_one_adapter_per_persona_cluster_and_a_shared_one(world, agent):
    assert agent.model.adapters == ["persona_0", "persona_1", "shared"]
    rows = agent.user_rows(np.asarray(world.split.user_ids))
    expected = [agent.model.adapters.index(f"persona_{world.clusters.labels[int(u)]}") for u in world.split.user_ids]
    assert agent.user_adapter[rows].tolist() == expected
    background = np.setdiff1d(agent.histories.user_ids, world.split.user_ids)
    assert (agent.user_adapter[agent.user_rows(background)] == 2).all()
    body = json.loads((agent.path / "agent.json").read_text())
    assert body["adapters"] == agent.model.adapters
    trained = {
        name.split(".lora_B.")[1].split(".")[0]
        for name, p in agent.model.named_parameters()
        if ".lora_B." in name and p.abs().sum() > 0
    }
    assert {"persona_0", "persona_1"} <= trained  # each persona's adapter was trained on its users' chunks
    n_items = len(agent.items.item_ids)
    assert agent.movie_states()["pooled"].shape[0] == 3 * n_items  # per adapter: the movies' states


def test_requests_route_through_their_users_adapter(world, agent):
    test = world.split.test
    users, items = test["user_id"].to_numpy(), test["item_id"].to_numpy()
    mixed = agent.predict(users, items)
    one_by_one = np.vstack([agent.predict(users[i : i + 1], items[i : i + 1]) for i in range(len(users))])
    np.testing.assert_allclose(mixed, one_by_one, atol=1e-9)
    # the same requests through another persona's adapter give other ratings
    rerouted = agent.user_adapter.copy()
    agent.user_adapter = 1 - np.minimum(rerouted, 1)  # persona_0 <-> persona_1 (and shared -> persona_0)
    try:
        other = agent.predict(users, items)
    finally:
        agent.user_adapter = rerouted
    assert not np.allclose(other, mixed, atol=1e-6)
    with torch.no_grad():  # the stored per-adapter movie cache equals the backbone's
        stored = {k: v.clone() for k, v in agent.movie_states().items()}
        agent._movies = None
        for key, value in agent.movie_states().items():
            torch.testing.assert_close(stored[key], value, atol=1e-5, rtol=1e-5)


def test_persona_variant_needs_lora_and_the_clusters(world, encoder):
    with pytest.raises(ConfigError, match="needs strategy 'lora'"):
        UserLLMTrainConfig(strategy="enc", lora_per_persona=True)
    with pytest.raises(ConfigError, match="needs the clusters"):
        train_userllm(
            world.split,
            encoder,
            world.root / "no-clusters",
            train=UserLLMTrainConfig(strategy="lora", lora_per_persona=True),
            progress=False,
        )
