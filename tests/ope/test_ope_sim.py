"""Off-policy evaluation end to end on the tiny fixture world: the truth probe, the logs, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import tiny_split_dir_fixture, tiny_world_fixture  # noqa: F401  (fixtures)

from recsim_personas.envs.model import Population
from recsim_personas.errors import ArtifactError, ConfigError
from recsim_personas.ope import OPEConfig, OPELog, evaluate_offpolicy, log_sessions
from recsim_personas.ope import evaluate as evaluate_module
from recsim_personas.ope.policies import ScoreBank
from recsim_personas.ope.truth import expected_item_rewards

BEHAVIOUR = "pl:0.5*pop+affinity"
TARGETS = ("pl:0.5*pop+affinity", "pl:affinity@0.5", "greedy:affinity")


@pytest.fixture(scope="module")
def bank(tiny_world):
    return ScoreBank(tiny_world, factor_dim=8)


@pytest.fixture(scope="module")
def log(tiny_world, bank):
    return log_sessions(
        tiny_world, BEHAVIOUR, TARGETS, bank=bank, pages=300, seed=0, num_envs=8, slate_size=5, progress=False
    )


def test_truth_probe_reads_without_changing_the_population(tiny_world):
    pop = Population(tiny_world, seed=3)
    users = np.array([0, 5, 9])
    before = (pop.state.seen.copy(), pop.state.hist_len.copy(), pop.rng.bit_generator.state)
    items = np.tile(np.arange(tiny_world.n_items), (3, 1))
    q = expected_item_rewards(pop, users, items, "likes")
    assert q.shape == (3, tiny_world.n_items)
    assert (pop.state.seen == before[0]).all() and (pop.state.hist_len == before[1]).all()
    assert pop.rng.bit_generator.state == before[2]
    assert (q[pop.state.seen[users]] == 0).all() and (q[~pop.state.seen[users]] > 0).all()
    watches = expected_item_rewards(pop, users, items, "watches")
    ratings = expected_item_rewards(pop, users, items, "rating")
    assert (q <= watches + 1e-12).all() and (ratings <= 5 * watches + 1e-12).all()
    with pytest.raises(ConfigError, match="unknown reward 'like'"):
        expected_item_rewards(pop, users, items, "like")


def test_log_records_exact_propensities_and_the_truth(log, tiny_world):
    n, k = log.n_pages, log.slate_size
    assert n == 300 and k == 5 and log.rewards.shape == (n, k)
    assert (log.page >= 1).all() and np.unique(log.session).size > 8
    assert (log.behaviour_inclusion > 0).all() and (log.behaviour_inclusion <= 1).all()
    assert np.isfinite(log.behaviour_logp).all()
    same = log.targets["pl:0.5*pop+affinity"]
    np.testing.assert_allclose(same.logp, log.behaviour_logp)
    np.testing.assert_allclose(same.inclusion, log.behaviour_inclusion, rtol=1e-12)
    greedy = log.targets["greedy:affinity"]
    assert greedy.slates.shape == (n, 1, k) and greedy.truth_var.tolist() == [0.0] * n and greedy.truth_se == 0.0
    assert set(np.unique(greedy.inclusion)) <= {0.0, 1.0}
    assert (greedy.kl_first > 0).all()
    # the logged rewards average to the simulator's expectation of the logged items (within 4 standard errors)
    page = log.rewards.sum(axis=1)
    assert abs(page.mean() - log.expected.sum(axis=1).mean()) < 4 * page.std() / np.sqrt(n)
    assert (log.expected[log.rewards > 0] > 0).all()


def test_log_round_trips_and_refuses_a_changed_file(log, tmp_path):
    out = log.save(tmp_path / "log")
    back = OPELog.load(out)
    assert back.behaviour == log.behaviour and list(back.targets) == list(log.targets)
    np.testing.assert_array_equal(back.slates, log.slates)
    np.testing.assert_array_equal(back.targets["pl:affinity@0.5"].slates, log.targets["pl:affinity@0.5"].slates)
    (out / "log.npz").write_bytes(b"not an npz")
    with pytest.raises(ArtifactError, match=r"log\.npz"):
        OPELog.load(out)


def test_logging_is_seeded(tiny_world, bank):
    args = {"bank": bank, "pages": 40, "num_envs": 4, "slate_size": 5, "progress": False}
    a = log_sessions(tiny_world, BEHAVIOUR, ["greedy:pop"], seed=5, **args)
    b = log_sessions(tiny_world, BEHAVIOUR, ["greedy:pop"], seed=5, **args)
    c = log_sessions(tiny_world, BEHAVIOUR, ["greedy:pop"], seed=6, **args)
    np.testing.assert_array_equal(a.slates, b.slates)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    assert not np.array_equal(a.slates, c.slates)


def test_log_sessions_refuses_a_deterministic_behaviour(tiny_world, bank):
    with pytest.raises(ConfigError, match="must be stochastic"):
        log_sessions(tiny_world, "greedy:pop", ["pl:pop"], bank=bank, pages=5, seed=0, num_envs=2, slate_size=5)


def _config(**kw):
    base = {
        "behaviour": BEHAVIOUR,
        "targets": TARGETS,
        "seeds": (0, 1),
        "pages": 200,
        "num_envs": 8,
        "slate_size": 5,
        "factor_dim": 8,
        "mc_samples": 4,
    }
    return OPEConfig(**(base | kw))


def test_evaluate_offpolicy_reports_and_resumes(tiny_world, tmp_path, monkeypatch):
    report = evaluate_offpolicy(tiny_world, config=_config(), out=tmp_path, save_logs=True, progress=False)
    s = report.summary
    assert s["seeds"] == 2 and set(s["targets"]) == set(TARGETS)
    same = s["targets"]["pl:0.5*pop+affinity"]
    # the behaviour as its own target: IPS weights are 1, its estimate is the logged mean
    logged = np.mean([r["behaviour_value"] for r in report.per_seed])
    assert same["estimators"]["ips"]["estimate"] == pytest.approx(logged, abs=1e-9)
    assert same["distance"]["kl_first"] == pytest.approx(0.0, abs=1e-12) and same["distance"]["ess_slate"] == 1.0
    assert same["estimators"]["pi"]["seeds"] == 0 and "uniform" in same["estimators"]["pi"]["reason"]
    greedy = s["targets"]["greedy:affinity"]
    assert greedy["estimators"]["snips"]["seeds"] <= 2 and greedy["on_policy"] > 0
    for t in s["targets"].values():
        dr = t["estimators"]["dr"]
        assert dr["seeds"] == 2 and 0 <= dr["coverage"] <= 1 and np.isfinite(dr["rmse"])
    paths = report.save(tmp_path)
    assert {p.name for p in paths.values()} == {"report.json", "report.md", "report.png"}
    text = paths["markdown"].read_text(encoding="utf-8")
    assert "## Findings" in text and "IIPS is within 10% relative RMSE" in text and "PI was not computed" in text
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["summary"]["seeds"] == 2
    assert (tmp_path / "logs" / "seed-1" / "log.npz").is_file()

    # a second run reuses the per-seed results (no seed is recomputed) ...
    monkeypatch.setattr(evaluate_module, "evaluate_seed", lambda *a, **k: pytest.fail("recomputed a seed"))
    again = evaluate_offpolicy(tiny_world, config=_config(), out=tmp_path, progress=False)
    assert again.per_seed == report.per_seed and again.reused == (0, 1)
    # ... and refuses results computed with other settings
    with pytest.raises(ArtifactError, match=r"pages 200 \(recorded\) vs 100 \(this run\)"):
        evaluate_offpolicy(tiny_world, config=_config(pages=100), out=tmp_path, progress=False)


def test_uniform_behaviour_gets_the_pseudo_inverse(tiny_world):
    config = _config(behaviour="pl:uniform", targets=("pl:uniform", "greedy:pop"), seeds=(3,), on_policy=False)
    report = evaluate_offpolicy(tiny_world, config=config, progress=False)
    t = report.summary["targets"]
    uniform = t["pl:uniform"]["estimators"]
    # target == behaviour: the closed form's weight is exactly 1 (Σ_j k/m = k·k/m)
    assert uniform["pi"]["estimate"] == pytest.approx(uniform["ips"]["estimate"], abs=1e-9)
    assert t["greedy:pop"]["estimators"]["pi"]["seeds"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"behaviour": "greedy:pop"}, "must be a stochastic policy"),
        ({"targets": ("greedy:pop", "greedy:pop@2")}, "names a policy twice"),
        ({"seeds": (1, 1)}, "seeds must be distinct"),
        ({"estimators": ("dr", "drr")}, "unknown OPEConfig.estimators entry 'drr'. Did you mean 'dr'"),
        ({"mc_samples": 1}, "mc_samples must be at least 2"),
        ({"reward": "like"}, "unknown OPEConfig.reward 'like'"),
    ],
)
def test_config_refuses_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _config(**kwargs)


def test_config_round_trips():
    config = _config()
    assert OPEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
