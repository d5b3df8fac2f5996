"""The Ray backend of the simulated metrics and the gap benchmark: the same figures as the local backend.

One Ray session (2 CPUs, no dashboard) serves the whole module; it is shut down at the end.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from reckit import rec_split_dir_fixture, rec_world_fixture  # noqa: F401  (fixtures)

from recsim_personas.cli import main
from recsim_personas.data import load_split
from recsim_personas.errors import ConfigError
from recsim_personas.recommenders import PopularPolicy, RandomPolicy
from recsim_personas.recommenders.gap import ENV_ID, GapConfig, run_gap_benchmark
from recsim_personas.recommenders.simulated import evaluate_policies, evaluate_policy

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the workers cannot import this test module: ship its classes (UnseededRandom) by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


class UnseededRandom:
    """A random policy without ``seed()``: its stream runs on from one seed's run to the next."""

    name = "unseeded"

    def __init__(self, n_items: int, slate_size: int) -> None:
        self.inner = RandomPolicy(n_items, slate_size, seed=7)
        self.slate_size = slate_size

    def act_batch(self, obs):
        return self.inner.act_batch(obs)


def _figures(sim) -> dict:
    d = sim.to_dict()
    d.pop("seconds")
    d["watched"] = [{k: v.tolist() for k, v in w.items()} for w in sim.watched]
    d["sessions"] = [{k: np.asarray(v).tolist() for k, v in s.items()} for s in sim.sessions]
    d["shown"] = (sim.shown_test, sim.shown_total)
    return d


def _policies(world, split_dir):
    from recsim_personas.recommenders import RecBoleConfig, train_recbole

    bpr = train_recbole(split_dir, RecBoleConfig(model="BPR", epochs=1, embedding_size=8), slate_size=5, progress=False)
    return [
        RandomPolicy(world.n_items, 5, seed=0),
        PopularPolicy(world.item_popularity, 5, seed=0),
        bpr,  # a torch model, shipped to the workers by cloudpickle
        UnseededRandom(world.n_items, 5),
    ]


def test_ray_backend_gives_exactly_the_local_figures(rec_world, rec_split_dir):
    test = load_split(rec_split_dir).test
    common = {"days": 3, "world": rec_world, "test": test, "progress": False}
    local = evaluate_policies(ENV_ID, _policies(rec_world, rec_split_dir), (0, 1), **common)
    remote = evaluate_policies(
        ENV_ID, _policies(rec_world, rec_split_dir), (0, 1), backend="ray", num_workers=2, **common
    )
    assert [s.policy for s in remote] == ["random", "pop", "recbole:BPR", "unseeded"]
    for a, b in zip(local, remote, strict=True):
        assert _figures(a) == _figures(b), a.policy
    # the runs differ between seeds (a comparison of two identical runs would prove nothing)
    assert local[0].totals[0] != local[0].totals[1] and local[3].totals[0] != local[3].totals[1]
    # a single policy, one worker: the same again
    from recsim_personas.envs.trace import TraceConfig

    trace = TraceConfig(users=4)
    one = evaluate_policy(
        ENV_ID, RandomPolicy(rec_world.n_items, 5, seed=0), (0, 1), backend="ray", num_workers=1, trace=trace, **common
    )
    assert _figures(one) == _figures(local[0])
    # traces come back from the workers equal to the local backend's
    here = evaluate_policy(ENV_ID, RandomPolicy(rec_world.n_items, 5, seed=0), (0, 1), trace=trace, **common)
    assert len(one.traces) == 2 and len(one.traces[0].pages) > 0
    for a, b in zip(one.traces, here.traces, strict=True):
        assert a.shown.equals(b.shown) and a.pages.equals(b.pages) and a.users == b.users


def test_a_policy_failing_on_a_worker_raises_its_own_error(rec_world):
    class Repeats:
        name, slate_size = "repeats", 3

        def act_batch(self, obs):
            return np.zeros((len(obs["seen"]), 3), dtype=np.int64)

    with pytest.raises(ConfigError, match="repeats"):
        evaluate_policy(ENV_ID, Repeats(), (0,), days=1, world=rec_world, progress=False, backend="ray")


def test_benchmark_cli_on_ray_records_the_backend_and_matches_local(rec_split_dir, capsys):
    args = ["--split", str(rec_split_dir), "--policies", "random,pop", "--seeds", "0,1", "--days", "2"]
    assert main(["benchmark", *args, "--backend", "ray", "--workers", "2", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["backend"] == "ray" and report["config"]["workers"] == 2
    assert report["versions"]["ray"] == ray.__version__
    local = run_gap_benchmark(
        rec_split_dir, GapConfig(policies=("random", "pop"), seeds=(0, 1), days=2), progress=False
    )
    assert local.config.backend == "local"
    by_name = {r["policy"]: r["simulated"] for r in report["results"]}
    assert by_name == {r.name: r.simulated for r in local.results}


def test_a_clear_error_without_ray(rec_world, rec_split_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'recsim-personas\[ray\]'"):
        evaluate_policy(ENV_ID, RandomPolicy(rec_world.n_items, 5), (0,), days=1, world=rec_world, backend="ray")
    with pytest.raises(ConfigError, match=r"pip install 'recsim-personas\[ray\]'"):
        run_gap_benchmark(rec_split_dir, GapConfig(policies=("random",), seeds=(0,), days=1, backend="ray"))
    args = ["benchmark", "--split", str(rec_split_dir), "--policies", "random", "--days", "1", "--backend", "ray"]
    assert main(args) == 2
    assert "pip install 'recsim-personas[ray]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "rey"}, "Did you mean 'ray'"),
        ({"backend": "ray", "workers": 0}, "GapConfig.workers must be a positive integer"),
        ({"workers": 2}, "applies to the Ray backend only"),
        ({"backend": "ray", "ray_address": ""}, "GapConfig.ray_address"),
    ],
)
def test_backend_settings_are_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GapConfig(**kwargs)
