"""Off-policy estimators on cases with known answers, and two of them against OBP's published formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsim_personas.errors import ConfigError
from recsim_personas.ope import estimators as est
from recsim_personas.recommenders.plackett_luce import position_log_probs

N_ITEMS, K = 5, 2
Q = np.array([0.9, 0.1, 0.5, 0.3, 0.7])  # each item's expected reward, whatever its slot or neighbours


def _bandit(target_logits: np.ndarray | None, greedy: bool = False):
    """Every ordered slate of the enumerable bandit with its behaviour probability and the estimators' inputs
    when the slate's items get their *expected* rewards (the estimators are linear in the rewards, so their
    expectation over the logs is the μ-weighted mean of these contributions)."""
    behaviour = np.array([0.3, -0.5, 1.0, 0.0, 0.4])
    slates = np.array(list(itertools.permutations(range(N_ITEMS), K)))
    n = len(slates)
    b_logp = position_log_probs(np.tile(behaviour, (n, 1)), slates)
    mu = np.exp(b_logp.sum(axis=1))
    if greedy:
        g = np.argsort(-target_logits)[:K]
        t_logp = np.where(np.cumprod(slates == g, axis=1).astype(bool), 0.0, -np.inf)
    else:
        t_logp = position_log_probs(np.tile(target_logits, (n, 1)), slates)
    pi = np.exp(t_logp.sum(axis=1))
    b_incl = np.array([(mu * (slates == i).any(axis=1)).sum() for i in range(N_ITEMS)])
    t_incl = np.array([(pi * (slates == i).any(axis=1)).sum() for i in range(N_ITEMS)])
    return {
        "slates": slates,
        "mu": mu,
        "pi": pi,
        "rewards": Q[slates],
        "b_logp": b_logp,
        "t_logp": t_logp,
        "b_incl": b_incl[slates],
        "t_incl": t_incl[slates],
        "t_incl_items": t_incl,
        "truth": float(t_incl @ Q),
    }


TARGETS = {
    "pl": (np.array([-1.0, 0.5, 0.2, 2.0, -0.3]), False),
    "flat": (np.zeros(N_ITEMS), False),
    "greedy": (np.array([-1.0, 0.5, 0.2, 2.0, -0.3]), True),
}


@pytest.mark.parametrize("target", list(TARGETS))
def test_unbiased_estimators_have_the_hand_computed_expectation(target):
    b = _bandit(*TARGETS[target])
    expect = {
        "ips": est.ips(b["rewards"], b["t_logp"], b["b_logp"]),
        "iips": est.iips(b["rewards"], b["t_incl"], b["b_incl"]),
        "rips": est.rips(b["rewards"], b["t_logp"], b["b_logp"]),
    }
    q_hat = np.array([0.5, 0.5, 0.2, 0.9, 0.1])  # a wrong reward model: DR stays unbiased
    t_slates = b["slates"][:, None, :]  # DM's expectation over the target's slates: weight them by π
    dm_per_slate = est.dm(q_hat[t_slates]).contributions
    dm_value = float((b["pi"] * dm_per_slate).sum())
    dr = est.dr(b["rewards"], q_hat[b["slates"]], b["t_incl"], b["b_incl"], np.full((len(b["mu"]), 1, K), 0.0))
    for name, e in expect.items():
        assert float(b["mu"] @ e.contributions) == pytest.approx(b["truth"], abs=1e-12), name
    # DR = DM + weighted residuals; the DM part is exact in expectation over the target's slates
    assert dm_value + float(b["mu"] @ dr.contributions) == pytest.approx(b["truth"], abs=1e-12)
    assert dm_value != pytest.approx(b["truth"], abs=1e-3)  # while the DM alone is off
    # the truth by hand for the flat target: every item in the slate with probability 2/5
    if target == "flat":
        assert b["truth"] == pytest.approx(Q.sum() * K / N_ITEMS)


@pytest.mark.parametrize("target", list(TARGETS))
def test_pseudo_inverse_is_unbiased_with_the_behaviour_gamma(target):
    b = _bandit(*TARGETS[target])
    feats = np.zeros((len(b["slates"]), N_ITEMS))
    np.put_along_axis(feats, b["slates"], 1.0, axis=1)
    gamma = (feats * b["mu"][:, None]).T @ feats
    q = np.tile(b["t_incl_items"], (len(feats), 1))
    e = est.pseudo_inverse(b["rewards"].sum(axis=1), feats, q, gamma)
    assert float(b["mu"] @ e.contributions) == pytest.approx(b["truth"], abs=1e-10)


def test_uniform_pseudo_inverse_closed_form_equals_the_general_form():
    m, k = 6, 3
    slates = np.array(list(itertools.permutations(range(m), k)))
    feats = np.zeros((len(slates), m))
    np.put_along_axis(feats, slates, 1.0, axis=1)
    gamma = feats.T @ feats / len(slates)
    rng = np.random.default_rng(0)
    target = rng.dirichlet(np.ones(len(slates)))
    q_items = target @ feats
    rewards = rng.random((len(slates), k))
    general = est.pseudo_inverse(rewards.sum(axis=1), feats, np.tile(q_items, (len(slates), 1)), gamma)
    closed = est.pseudo_inverse_uniform(rewards, q_items[slates], np.full(len(slates), m))
    np.testing.assert_allclose(closed.contributions, general.contributions, atol=1e-10)


def test_target_equal_to_behaviour_gives_unit_weights_and_the_logged_mean():
    rng = np.random.default_rng(1)
    rewards = rng.integers(0, 2, size=(50, 4)).astype(float)
    logp = np.log(rng.uniform(0.05, 0.5, size=(50, 4)))
    incl = rng.uniform(0.1, 1.0, size=(50, 4))
    np.testing.assert_allclose(est.slate_weights(logp, logp), 1.0)
    np.testing.assert_allclose(est.prefix_weights(logp, logp), 1.0)
    logged = rewards.sum(axis=1).mean()
    for e in (
        est.ips(rewards, logp, logp),
        est.snips(rewards, logp, logp),
        est.rips(rewards, logp, logp),
        est.iips(rewards, incl, incl),
    ):
        assert e.value == pytest.approx(logged, abs=1e-12), e.name
    low, high = est.ips(rewards, logp, logp).interval(0.95)
    assert low < logged < high


def test_snips_contributions_average_to_the_estimate_and_no_weight_is_undefined():
    rng = np.random.default_rng(2)
    rewards = rng.random((40, 3))
    b = np.log(rng.uniform(0.1, 0.5, size=(40, 3)))
    t = np.log(rng.uniform(0.1, 0.5, size=(40, 3)))
    e = est.snips(rewards, t, b)
    w = est.slate_weights(t, b)
    assert e.value == pytest.approx((w * rewards.sum(1)).sum() / w.sum())
    assert e.contributions.mean() == pytest.approx(e.value)
    none = est.snips(rewards, np.full((40, 3), -np.inf), b)
    assert np.isnan(none.value) and np.isnan(none.se)


def test_dm_and_dr_by_hand():
    rewards = np.array([[1.0, 0.0], [0.0, 1.0]])
    q_logged = np.array([[0.5, 0.5], [0.2, 0.4]])
    q_target = np.array([[[0.9, 0.1]], [[0.3, 0.3]]])  # one target slate per page
    w_t, w_b = np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[0.5, 0.5], [0.5, 0.25]])
    assert est.dm(q_target).value == pytest.approx((1.0 + 0.6) / 2)
    # page 1: 1.0 + 2*(1-0.5) + 0 ; page 2: 0.6 + 1*(0-0.2) + 2*(1-0.4)
    assert est.dr(rewards, q_logged, w_t, w_b, q_target).contributions.tolist() == pytest.approx([2.0, 1.6])


def test_support_violations_are_refused():
    rewards = np.ones((1, 2))
    with pytest.raises(ConfigError, match="behaviour propensity 0"):
        est.iips(rewards, np.array([[0.5, 0.5]]), np.array([[0.5, 0.0]]))
    with pytest.raises(ConfigError, match="behaviour probability 0"):
        est.ips(rewards, np.log(np.array([[0.5, 0.5]])), np.array([[np.log(0.5), -np.inf]]))
    with pytest.raises(ConfigError, match=r"n_allowed must hold one count > k = 2"):
        est.pseudo_inverse_uniform(rewards, np.ones((1, 2)), np.array([2]))


# ---- OBP's published formulas, restated in OBP's long ("one row per slot") data layout -------------------------
# OBP's slate IPS family (obp/ope/estimators_slate.py) takes flattened arrays — slate_id, position, reward and a
# propensity per row — and estimates  V̂ = Σ_rows reward · (evaluation pscore / behaviour pscore) / #distinct
# slates.  The estimators differ only in the pscore of a row: SlateStandardIPS uses the whole slate's probability
# on every row of the slate; SlateRewardInteractionIPS the probability of the slate's prefix up to that row's
# position ("pscore_cascade"). These are re-derived below in that layout, independently of our (n, k) code.


def _obp_layout(rewards, target_logp, behaviour_logp, kind):
    n, k = rewards.shape
    slate_id = np.repeat(np.arange(n), k)
    if kind == "sips":
        t = np.repeat(np.exp(target_logp.sum(axis=1)), k)
        b = np.repeat(np.exp(behaviour_logp.sum(axis=1)), k)
    else:  # "rips": cascade (prefix) propensities
        t = np.exp(np.cumsum(target_logp, axis=1)).reshape(-1)
        b = np.exp(np.cumsum(behaviour_logp, axis=1)).reshape(-1)
    return (rewards.reshape(-1) * t / b).sum() / np.unique(slate_id).size


@pytest.mark.parametrize(("kind", "ours"), [("sips", est.ips), ("rips", est.rips)])
def test_slate_ips_and_rips_follow_obp_published_formulas(kind, ours):
    rng = np.random.default_rng(3)
    n, k = 200, 3
    rewards = rng.integers(0, 2, size=(n, k)).astype(float)
    behaviour_logp = np.log(rng.uniform(0.05, 0.6, size=(n, k)))
    target_logp = np.log(rng.uniform(0.05, 0.6, size=(n, k)))
    assert ours(rewards, target_logp, behaviour_logp).value == pytest.approx(
        _obp_layout(rewards, target_logp, behaviour_logp, kind), rel=1e-12
    )
