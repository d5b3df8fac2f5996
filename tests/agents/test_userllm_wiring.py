"""USER-LLM agents as raters everywhere a rater is named: ``userllm:DIR`` and ``agents:DIR`` (told apart by the
manifest) in worlds and environments, ``recsim-personas eval --raters``, ``agents eval --agents`` and the gap
report's rater record; and the refusals (empty path, another split)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import TINY_CONFIG, tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.agents.userllm.agent import UserLLMAgent
from recsim_personas.agents.userllm.config import PretrainConfig, UserEncoderConfig, UserLLMTrainConfig
from recsim_personas.agents.userllm.pretrain import pretrain_encoder
from recsim_personas.agents.userllm.train import train_userllm
from recsim_personas.artifacts import manifest_digest
from recsim_personas.cli import main
from recsim_personas.data import load_split, prepare_split
from recsim_personas.envs.world import make_world
from recsim_personas.errors import ArtifactError, ConfigError

SMALL = UserEncoderConfig(d_model=16, field_dim=8, n_layers=1, n_heads=2, ffn_mult=2, max_len=12)
FAST = UserLLMTrainConfig(epochs=1, batch_size=4, targets_per_cut=4, min_prefix=3, anchor="bias", prior_folds=2)
ENV_ID = "recsim_personas/MovieLens-v0"


@pytest.fixture(scope="module", name="split")
def split_fixture(tiny_split_dir):
    return load_split(tiny_split_dir)


@pytest.fixture(scope="module", name="agent_dir")
def agent_dir_fixture(split, tmp_path_factory) -> Path:
    """A tiny trained USER-LLM agent of the tiny split (one epoch of encoder pretraining and of training)."""
    root = tmp_path_factory.mktemp("userllm")
    encoder = pretrain_encoder(
        split, root / "encoder", encoder_config=SMALL, config=PretrainConfig(epochs=1), progress=False
    )
    return train_userllm(split, encoder, root / "agent", train=FAST, progress=False).path


@pytest.fixture(scope="module", name="other_split")
def other_split_fixture(tiny_split_dir, tmp_path_factory):
    """The tiny split's data sampled with another seed: another split id."""
    out = tmp_path_factory.mktemp("other") / "split"
    config = dataclasses.replace(TINY_CONFIG, seed=1)
    other, _ = prepare_split(config, out, data_dir=tiny_split_dir.parent, download=False)
    return load_split(other.path)


def _requests(split):
    return split.test["user_id"].to_numpy(), split.test["item_id"].to_numpy()


@pytest.mark.parametrize("prefix", ["userllm:", "agents:"])
def test_a_world_loads_the_agent_by_either_prefix(split, agent_dir, prefix):
    from recsim_personas.recommenders.gap import rater_artifact

    world = make_world(split, f"{prefix}{agent_dir}", choice="handset")
    assert isinstance(world.rater, UserLLMAgent) and world.rater_name == world.rater.name
    assert world.rater.name.startswith("userllm-") and world.rater.path == agent_dir
    users, items = _requests(split)
    want = UserLLMAgent.load(agent_dir).predict(users, items)
    np.testing.assert_allclose(world.rater.predict(users, items), want, atol=1e-9)
    record = rater_artifact(f"{prefix}{agent_dir}", world)
    assert record["path"] == str(agent_dir) and record["artifact_id"] == manifest_digest(agent_dir)
    assert "fitted_on_split" not in record


def test_the_environment_steps_with_the_agent(split, agent_dir):
    import gymnasium as gym

    import recsim_personas  # noqa: F401  (registers the environment id)

    env = gym.make(ENV_ID, split=str(split.path), rater=f"userllm:{agent_dir}", slate_size=5)
    agent = env.unwrapped.world.rater
    assert isinstance(agent, UserLLMAgent)
    users, items = _requests(split)
    before = agent.predict(users, items)
    env.reset(seed=0)
    _obs, _reward, terminated, truncated, info = env.step(np.arange(5, dtype=np.int64))
    # the first page's expected ratings are the agent's own, from the user's logged history
    unseen = info["expected_ratings"] > 0
    want = agent.predict(np.full(int(unseen.sum()), info["user_id"]), info["item_ids"][unseen]) @ np.arange(1, 6)
    np.testing.assert_allclose(info["expected_ratings"][unseen], want, atol=1e-9)
    for _ in range(6):
        if terminated or truncated:
            env.reset()
        _obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.isfinite(reward) and set(info["ratings"].tolist()) <= {0, 1, 2, 3, 4, 5}
    # the simulation's watches went to its own session: the shared agent is unchanged
    np.testing.assert_allclose(agent.predict(users, items), before, atol=1e-9)
    env.close()


def test_eval_cli_scores_the_agent_beside_a_classical_rater(split, agent_dir, capsys):
    argv = ["eval", "--split", str(split.path), "--raters", f"bias,userllm:{agent_dir}", "--json", "--no-progress"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    rows = payload["raters"]
    assert [r["rater"] for r in rows] == ["bias", UserLLMAgent.load(agent_dir).name]
    assert all(r["n"] == len(split.test) and 0 < r["rmse_expected"] < 4 for r in rows)
    assert rows[0]["rmse_expected"] != rows[1]["rmse_expected"]
    # agents:DIR names the same agent
    argv[4] = f"agents:{agent_dir}"
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)["raters"]
    assert again[0]["rater"] == rows[1]["rater"]
    assert again[0]["rmse_expected"] == pytest.approx(rows[1]["rmse_expected"])


def test_agents_eval_scores_a_userllm_dir_overall_and_per_persona(split, agent_dir, monkeypatch, capsys, tmp_path):
    from recsim_personas.cli import agents as agents_cli

    persona_of = {int(u): int(u) % 2 for u in split.user_ids}
    clusters = SimpleNamespace(labels=persona_of)
    monkeypatch.setattr(agents_cli, "load_world", lambda *args, **kwargs: (split, None, clusters, None))
    argv = ["agents", "eval", "--split", str(split.path), "--personas", str(tmp_path), "--agents", str(agent_dir)]
    assert main([*argv, "--raters", "bias", "--json", "--no-progress"]) == 0
    payload = json.loads(capsys.readouterr().out)
    bias, agent = payload["entries"]
    loaded = UserLLMAgent.load(agent_dir)
    assert (agent["label"], agent["family"]) == (loaded.name, "userllm")
    assert agent["variant"] == loaded.model.config.integration and agent["anchor"] == loaded.train_config.anchor
    assert agent["memories"] is None and bias["family"] == "classical"
    assert set(agent["per_persona"]) == {"0", "1"} == set(payload["personas"])
    assert sum(r["n"] for r in agent["per_persona"].values()) == agent["overall"]["n"] == len(split.test)
    assert any("USER-LLM agent" in note and str(agent_dir) in note for note in payload["notes"])


def test_empty_paths_and_another_split_are_refused(split, other_split, agent_dir, capsys):
    with pytest.raises(ConfigError, match=r"name the USER-LLM agent directory, e\.g\. userllm:"):
        make_world(split, "userllm:", choice="handset")
    with pytest.raises(ConfigError, match=r"unknown rater 'userlm'\..*userllm:DIR"):
        make_world(split, "userlm", choice="handset")
    for prefix in ("userllm:", "agents:"):
        with pytest.raises(ArtifactError, match=r"USER-LLM agent .* was made from another split"):
            make_world(other_split, f"{prefix}{agent_dir}", choice="handset")
    # the CLI validates every entry before any work, and names the refusal in one line
    assert main(["eval", "--split", str(split.path), "--raters", "bias,userllm:", "--no-progress"]) == 2
    assert "name the USER-LLM agent directory" in capsys.readouterr().err
    argv = ["eval", "--split", str(other_split.path), "--raters", f"bias,agents:{agent_dir}", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "made from another split" in err and err.count("\n") == 1
