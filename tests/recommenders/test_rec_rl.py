"""RL recommenders: the slate network, the policy artifact, the training scripts, and rl:DIR in the gap report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reckit import other_split_dir_fixture, rec_split_dir_fixture, rec_world_fixture  # noqa: F401  (fixtures)

from recsim_personas.cli import main
from recsim_personas.data import load_split
from recsim_personas.envs.model import Population
from recsim_personas.errors import ArtifactError, ConfigError
from recsim_personas.recommenders.gap_policies import build_policy, parse_policies
from recsim_personas.recommenders.plackett_luce import slate_log_prob
from recsim_personas.recommenders.policies import top_k_unseen
from recsim_personas.recommenders.rl import RLPolicy, SlateNet, SlateNetConfig, obs_to_torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


def _obs(world, n_users: int = 6):
    pop = Population(world, rng=np.random.default_rng(0))
    users = np.arange(n_users)
    obs = pop.observe(users, 8)
    obs["user_index"] = users
    return obs


def _net(world, head="pl", seed=0):
    torch.manual_seed(seed)
    config = SlateNetConfig(n_items=world.n_items, n_users=world.n_users, dim=4, hidden=8, head=head)
    return SlateNet(config, popularity=world.item_popularity)


def test_the_network_scores_every_item_and_starts_from_popularity(rec_world):
    obs = _obs(rec_world)
    net = _net(rec_world)
    scores, value = net(obs_to_torch(obs))
    assert scores.shape == (6, rec_world.n_items) and value.shape == (6,)
    bias = net.item_bias.detach().numpy()[0]
    logpop = np.log1p(rec_world.item_popularity)
    assert np.corrcoef(bias, logpop)[0, 1] == pytest.approx(1.0)
    heads, _ = _net(rec_world, head="slateq")(obs_to_torch(obs))
    assert heads.shape == (6, 2, rec_world.n_items)


def test_the_policy_shows_distinct_unseen_items_greedy_or_sampled(rec_world):
    obs = _obs(rec_world)
    seen = obs["seen"].astype(bool)
    greedy = RLPolicy(_net(rec_world), slate_size=5)
    slates = greedy.act_batch(obs)
    np.testing.assert_array_equal(slates, top_k_unseen(greedy.scores(obs), seen, 5))
    sampler = RLPolicy(_net(rec_world), slate_size=5, greedy=False, seed=0)
    for _ in range(20):
        s = sampler.act_batch(obs)
        assert all(len(set(row)) == 5 for row in s)
        assert not seen[np.arange(6)[:, None], s].any()
        assert np.isfinite(slate_log_prob(sampler.scores(obs), s, ~seen)).all()
    slateq = RLPolicy(_net(rec_world, head="slateq"), slate_size=5)
    heads, _ = slateq.net(obs_to_torch(obs))
    product = (torch.sigmoid(heads[:, 0]) * heads[:, 1]).detach().double().numpy()
    np.testing.assert_allclose(slateq.scores(obs), product, rtol=1e-6)
    with pytest.raises(ConfigError, match="Plackett-Luce"):
        RLPolicy(_net(rec_world, head="slateq"), greedy=False)


def test_save_and_load_round_trip_and_refuse_what_does_not_fit(rec_world, tmp_path):
    obs = _obs(rec_world)
    policy = RLPolicy(_net(rec_world), slate_size=5, split_id=rec_world.split_id)
    path = policy.save(tmp_path / "rl", extra={"algorithm": "test"})
    back = RLPolicy.load(path, split_id=rec_world.split_id, n_items=rec_world.n_items)
    np.testing.assert_array_equal(back.scores(obs), policy.scores(obs))
    assert back.slate_size == 5 and back.name == "rl"
    with pytest.raises(ArtifactError, match="another split"):
        RLPolicy.load(path, split_id="another-split")
    with pytest.raises(ArtifactError, match="scores"):
        RLPolicy.load(path, n_items=rec_world.n_items + 1)
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        RLPolicy.load(path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(ArtifactError, match="refusing to replace"):
        policy.save(tmp_path / "junk")


def test_rl_policies_are_named_by_directory_in_the_benchmark(rec_split_dir, rec_world, other_split_dir, tmp_path):
    with pytest.raises(ConfigError, match="not a saved RL policy"):
        parse_policies(f"pop,rl:{tmp_path / 'missing'}")
    path = RLPolicy(_net(rec_world), slate_size=5, split_id=rec_world.split_id).save(tmp_path / "rl")
    assert parse_policies(f"pop,rl:{path}") == ("pop", f"rl:{path}")
    built = build_policy(f"rl:{path}", load_split(rec_split_dir), rec_world, slate_size=4)
    assert isinstance(built, RLPolicy) and built.slate_size == 4 and built.name == f"rl:{path}"
    with pytest.raises(ArtifactError, match="another split"):
        build_policy(f"rl:{path}", load_split(other_split_dir), rec_world)


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_the_policy_gradient_script_trains_resumes_and_its_policy_enters_the_gap_report(
    algo, rec_split_dir, tmp_path, capsys
):
    script = _script("rl_reinforce")
    out = tmp_path / algo
    args = script.Args(
        split=str(rec_split_dir),
        algo=algo,
        num_envs=4,
        rollout=4,
        updates=2,
        dim=4,
        hidden=8,
        out=str(out),
        checkpoint_every=1,
        progress=False,
    )
    result = script.main(args)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["update"] for row in log] == [1, 2]
    assert result["transitions_this_run"] == log[-1]["transitions"] > 0
    assert (out / "checkpoints" / "update_0002" / "manifest.json").is_file()
    # a longer run resumes from the newest checkpoint
    again = script.main(script.Args(**{**args.__dict__, "updates": 3}))
    assert [json.loads(line)["update"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert again["updates"] == 3
    # the resumed policy records the training time of both runs
    first_run = RLPolicy.load(out / "checkpoints" / "update_0002").train_seconds
    assert first_run > 0 and RLPolicy.load(out / "policy").train_seconds > first_run
    argv = ["benchmark", "--split", str(rec_split_dir), "--policies", f"pop,rl:{out / 'policy'}", "--seeds", "0,1"]
    assert main([*argv, "--days", "2", "--json", "--no-progress"]) == 0
    payload = json.loads(capsys.readouterr().out)
    rl = payload["results"][1]
    assert rl["policy"] == f"rl:{out / 'policy'}" and rl["simulated"]["likes_per_user"]["per_seed"]
    assert 0.0 <= rl["offline"]["ndcg"] <= 1.0


def test_the_slateq_script_trains_and_saves_a_policy(rec_split_dir, tmp_path):
    script = _script("rl_slateq")
    out = tmp_path / "slateq"
    args = script.Args(
        split=str(rec_split_dir),
        num_envs=4,
        steps=60,
        learning_starts=5,
        batch_size=16,
        dim=4,
        hidden=8,
        checkpoint_every=30,
        out=str(out),
        progress=False,
    )
    result = script.main(args)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [50]
    assert log[0]["loss_q"] is not None and log[0]["loss_choice"] > 0
    policy = RLPolicy.load(out / "policy", split_id=load_split(rec_split_dir).split_id)
    assert policy.net.config.head == "slateq" and result["transitions_this_run"] > 0
    assert (out / "checkpoints" / "update_000060" / "manifest.json").is_file()


def test_item_rewards_sum_to_the_page_reward():
    from recsim_personas.envs.session import item_rewards, reward

    rng = np.random.default_rng(0)
    watched = rng.random((7, 5)) < 0.5
    ratings = np.where(watched, rng.integers(1, 6, (7, 5)), 0)
    assert item_rewards(watched, ratings, "likes")[~watched].sum() == 0
    np.testing.assert_array_equal(item_rewards(watched, ratings, "rating"), np.where(watched, ratings, 0))
    for mode in ("likes", "rating", "watches"):
        np.testing.assert_allclose(item_rewards(watched, ratings, mode, 4).sum(1), reward(watched, ratings, mode, 4))
