"""Policy specs, base scores and the slate policies' probabilities."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import tiny_split_dir_fixture, tiny_world_fixture  # noqa: F401  (fixtures)

from recsim_personas.errors import ConfigError
from recsim_personas.ope.policies import PolicySpec, ScoreBank, SlatePolicy, first_position_kl, standardise
from recsim_personas.recommenders.plackett_luce import position_log_probs


def test_spec_parses_and_prints_canonically():
    spec = PolicySpec.parse("pl: 0.5*pop + affinity @0.5")
    assert spec == PolicySpec("pl", (("pop", 0.5), ("affinity", 1.0)), 0.5)
    assert str(spec) == "pl:0.5*pop+affinity@0.5"
    assert str(PolicySpec.parse("greedy:affinity@3")) == "greedy:affinity"
    assert PolicySpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pop", "expected KIND:SCORES"),
        ("pll:pop", "unknown policy kind 'pll'. Did you mean 'pl'"),
        ("pl:popp", "unknown base score 'popp'. Did you mean 'pop'"),
        ("pl:pop@hot", "temperature 'hot' is not a number"),
        ("pl:pop@0", "temperature must be a finite number > 0, got 0.0"),
        ("pl:pop+pop", "names a base score twice"),
        ("pl:2x*pop", "cannot read the term '2x\\*pop'"),
    ],
)
def test_bad_specs_name_the_problem(text, message):
    with pytest.raises(ConfigError, match=message):
        PolicySpec.parse(text)


def test_standardise_is_per_row_over_allowed_items():
    scores = np.array([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 5.0]])
    allowed = np.array([[True, True, True, False], [True, True, False, False]])
    z = standardise(scores, allowed)
    np.testing.assert_allclose(z[0, :3], [-1.2247449, 0.0, 1.2247449], atol=1e-6)
    assert z[0, 3] == 0.0 and (z[1] == 0).all()


@pytest.fixture(scope="module")
def bank(tiny_world):
    return ScoreBank(tiny_world, factor_dim=8)


def _obs(world, rows):
    seen = np.zeros((len(rows), world.n_items), dtype=np.int8)
    hist = np.full((len(rows), 20), -1, dtype=np.int64)
    for r, u in enumerate(rows):
        items = world.history_items[u]
        seen[r, items] = 1
        tail = items[-20:]
        hist[r, 20 - len(tail) :] = tail
    return {"user_index": np.array(rows), "history_items": hist, "history_ratings": (hist >= 0) * 4, "seen": seen}


def test_slate_policies_probabilities(tiny_world, bank):
    obs = _obs(tiny_world, [0, 3, 7])
    pl = SlatePolicy("pl:0.5*pop+affinity@0.7", bank, 5, seed=0)
    greedy = SlatePolicy("greedy:affinity", bank, 5)
    uniform = SlatePolicy("pl:uniform", bank, 5)
    scores, allowed = pl.logits(obs)
    assert (allowed == ~obs["seen"].astype(bool)).all()
    slates = pl.act_batch(obs)
    assert not obs["seen"][np.arange(3)[:, None], slates].any()
    np.testing.assert_allclose(
        pl.position_log_probs(scores, allowed, slates), position_log_probs(scores, slates, allowed, 0.7)
    )
    g_scores, _ = greedy.logits(obs)
    g = greedy.greedy(g_scores, allowed)
    assert greedy.position_log_probs(g_scores, allowed, g).sum() == 0.0
    swapped = g[:, [1, 0, 2, 3, 4]]
    assert np.isneginf(greedy.position_log_probs(g_scores, allowed, swapped)[:, 0]).all()
    assert greedy.inclusion(g_scores, allowed, np.hstack([g[:, :1], slates[:, :1]]))[:, 0].tolist() == [1.0] * 3
    u_scores, _ = uniform.logits(obs)
    incl = uniform.inclusion(u_scores, allowed, slates)
    np.testing.assert_allclose(incl, 5 / allowed.sum(axis=1, keepdims=True) * np.ones((1, 5)))
    assert uniform.uniform and not pl.uniform
    kl = first_position_kl(greedy.first_position(g_scores, allowed), pl.first_position(scores, allowed))
    p_first = pl.first_position(scores, allowed)[np.arange(3), g[:, 0]]
    np.testing.assert_allclose(kl, -np.log(p_first))


def test_bpr_base_needs_a_model(tiny_world, bank):
    policy = SlatePolicy("pl:bpr", bank, 5)
    with pytest.raises(ConfigError, match="the 'bpr' base score needs a trained RecBole model"):
        policy.logits(_obs(tiny_world, [0]))


def test_a_trained_rl_policy_is_a_base_score_and_greedy_rl_is_that_policy(tiny_world, tmp_path):
    import torch

    from recsim_personas.envs.model import Population
    from recsim_personas.recommenders.rl import RLPolicy, SlateNet, SlateNetConfig

    torch.manual_seed(0)
    config = SlateNetConfig(n_items=tiny_world.n_items, n_users=tiny_world.n_users, dim=4, hidden=8)
    net = SlateNet(config, popularity=tiny_world.item_popularity)
    path = RLPolicy(net, slate_size=4, split_id=tiny_world.split_id).save(tmp_path / "rl")
    policy = RLPolicy.load(path)
    users = np.arange(5)
    obs = Population(tiny_world, rng=np.random.default_rng(0)).observe(users, 8)
    obs["user_index"] = users
    bank = ScoreBank(tiny_world, factor_dim=4, rl_dir=str(path))
    np.testing.assert_allclose(bank.base("rl", obs), policy.scores(obs))
    greedy = SlatePolicy("greedy:rl", bank, slate_size=4)
    np.testing.assert_array_equal(greedy.act_batch(obs), policy.act_batch(obs))
    with pytest.raises(ConfigError, match="needs a trained RL policy"):
        ScoreBank(tiny_world, factor_dim=4).base("rl", obs)
