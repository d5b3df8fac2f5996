"""Simulation traces: what a tracer records equals what the population did, tracing changes nothing, the bound
holds, the files round-trip, and the commands write them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from simkit import tiny_split_dir_fixture, tiny_world_fixture  # noqa: F401  (fixtures)

from recsim_personas.envs import Population
from recsim_personas.envs.trace import EXITS, TraceConfig, Tracer, read_trace, trace_dir_name, write_trace
from recsim_personas.errors import ArtifactError, ConfigError
from recsim_personas.recommenders import RandomPolicy


def run(world, *, trace: TraceConfig | None, days: int = 6, seed: int = 1):
    pop = Population(world, seed=seed)
    if trace is not None:
        pop.tracer = Tracer(world, trace)
    summary = pop.run_days(days, RandomPolicy(world.n_items, 5, seed=seed), progress=False)
    return pop, summary


def test_the_trace_is_what_the_traced_users_did(tiny_world):
    pop, _ = run(tiny_world, trace=TraceConfig(users=8, seed=3))
    shown, pages = pop.tracer.frames()
    traced = set(pop.tracer.user_ids[pop.tracer.rows].tolist())
    assert len(traced) == 8 and set(shown["user_id"]) <= traced and len(pages) > 0
    # the watched rows are the population's watches of those users, in order, with their ratings
    w = pop.watches()
    mine = np.isin(w["user_id"], list(traced))
    got = shown[shown["watched"]]
    for u in traced:
        want = [
            (i, r)
            for uu, i, r in zip(w["user_id"][mine], w["item_id"][mine], w["rating"][mine], strict=True)
            if uu == u
        ]
        rows = got[got["user_id"] == u]
        assert list(zip(rows["item_id"], rows["rating"], strict=True)) == want
    # every page shows k movies; probabilities and distributions are well formed; seen movies are not watched
    assert (shown.groupby(["user_id", "session", "page"]).size() == 5).all()
    fresh = shown[~shown["seen"]]
    assert np.allclose(fresh[["p1", "p2", "p3", "p4", "p5"]].sum(axis=1), 1.0)
    assert fresh["p_watch"].between(0, 1).all() and not shown[shown["seen"]]["watched"].any()
    assert (shown[shown["watched"]]["rating"].between(1, 5)).all() and (shown[~shown["watched"]]["rating"] == 0).all()
    # pages: sessions numbered from 1, pages from 1 without gaps; only the last page of a session ends it
    for (_, _), g in pages.groupby(["user_id", "session"]):
        assert g["page"].tolist() == list(range(1, len(g) + 1))
        assert set(g["exit"].iloc[:-1]) <= {"continued"} and set(g["exit"]) <= set(EXITS)
    ended = pages[pages["exit"] != "continued"]
    sessions = pop.ended_sessions()
    assert len(ended) == int(np.isin(sessions["user_id"], list(traced)).sum())
    per_page = shown.groupby(["user_id", "session", "page"])["watched"].sum()
    assert per_page.tolist() == pages.set_index(["user_id", "session", "page"])["watched"].loc[per_page.index].tolist()


def test_tracing_does_not_change_the_simulation(tiny_world):
    _, with_trace = run(tiny_world, trace=TraceConfig(users=20))
    _, without = run(tiny_world, trace=None)
    assert with_trace == without


def test_the_trace_is_bounded(tiny_world):
    pop, _ = run(tiny_world, trace=TraceConfig(users=20, max_pages=3))
    shown, pages = pop.tracer.frames()
    assert len(pages) == 3 and len(shown) == 15 and pop.tracer.dropped_pages > 0
    assert pop.tracer.result().dropped_pages == pop.tracer.dropped_pages


def test_write_and_read_round_trip_and_refuse_a_foreign_directory(tiny_world, tmp_path):
    pop, _ = run(tiny_world, trace=TraceConfig(users=5))
    record = pop.tracer.result()
    out = write_trace(record, tmp_path / "t", {"policy": "random", "seed": 1})
    manifest, shown, pages = read_trace(out)
    assert manifest["policy"] == "random" and manifest["users"] == record.users
    assert manifest["counts"] == {"pages": len(pages), "shown": len(shown), "dropped_pages": 0}
    assert shown.equals(record.shown) and pages.equals(record.pages)
    write_trace(record, out, {"policy": "random", "seed": 1})  # a trace is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ArtifactError):
        write_trace(record, tmp_path / "mine", {})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    (out / "pages.parquet").write_bytes(b"altered")
    with pytest.raises(ArtifactError):
        read_trace(out)


@pytest.mark.parametrize(("field", "value"), [("users", 0), ("max_pages", -1), ("seed", 1.5), ("users", True)])
def test_trace_config_names_the_bad_field(field, value):
    with pytest.raises(ConfigError, match=f"TraceConfig.{field} must be an integer"):
        TraceConfig(**{field: value})


def test_trace_dir_names():
    assert trace_dir_name("recbole:SASRec") == "recbole-SASRec"
    assert trace_dir_name("rl:runs/x/policy") == "rl-runs_x_policy"
    assert trace_dir_name("pop") == "pop"


def test_evaluate_policy_traces_every_seed_with_the_same_users(tiny_world):
    from recsim_personas.recommenders.simulated import evaluate_policy

    policy = RandomPolicy(tiny_world.n_items, 5, seed=0)
    traced = evaluate_policy("recsim_personas/MovieLens-v1", policy, (0, 1), days=4, world=tiny_world,
                             progress=False, trace=TraceConfig(users=6))  # fmt: skip
    plain = evaluate_policy("recsim_personas/MovieLens-v1", policy, (0, 1), days=4, world=tiny_world, progress=False)
    assert len(traced.traces) == 2 and traced.traces[0].users == traced.traces[1].users
    assert {m: v.to_dict() for m, v in traced.metrics.items()} == {m: v.to_dict() for m, v in plain.metrics.items()}
    assert plain.traces == ()
    with pytest.raises(ConfigError, match="trace must be a TraceConfig"):
        evaluate_policy("recsim_personas/MovieLens-v1", policy, (0,), days=1, world=tiny_world, trace={"users": 3})


def test_simulate_and_benchmark_write_traces(tiny_split_dir, tmp_path, capsys):
    from recsim_personas.cli import build_parser

    parse = build_parser().parse_args
    args = parse(["simulate", "--split", str(tiny_split_dir), "--days", "4", "--trace", str(tmp_path / "sim"),
                  "--trace-users", "7", "--json", "--no-progress"])  # fmt: skip
    assert args.func(args) == 0
    payload = json.loads(capsys.readouterr().out)
    manifest, _, pages = read_trace(payload["trace"])
    assert len(manifest["users"]) == 7 and manifest["split"] == str(tiny_split_dir) and len(pages) > 0
    gap = str(tmp_path / "gap")
    args = parse(["benchmark", "--split", str(tiny_split_dir), "--policies", "random,pop", "--seeds", "0,1",
                  "--days", "3", "--trace-users", "5", "--out", gap, "--json", "--no-progress"])  # fmt: skip
    assert args.func(args) == 0
    capsys.readouterr()
    dirs = sorted(p.relative_to(tmp_path / "gap").as_posix() for p in (tmp_path / "gap" / "traces").glob("*/*"))
    assert dirs == ["traces/pop/seed-0", "traces/pop/seed-1", "traces/random/seed-0", "traces/random/seed-1"]
    users = {tuple(read_trace(tmp_path / "gap" / d)[0]["users"]) for d in dirs}
    assert len(users) == 1  # the same sample for every policy and seed
    args = parse(["benchmark", "--split", str(tiny_split_dir), "--trace-users", "5"])
    with pytest.raises(ConfigError, match="--trace-users writes the traces into OUT/traces; it needs --out"):
        args.func(args)
