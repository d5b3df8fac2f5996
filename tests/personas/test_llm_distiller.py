"""The LLM distiller against a local OpenAI-compatible server (real HTTP through the real openai client)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from recsim_personas.data import ProtocolConfig, load_movielens, make_split
from recsim_personas.errors import ArtifactError, ConfigError
from recsim_personas.personas.distill import distill_personas
from recsim_personas.personas.llm_distiller import (
    JOURNAL,
    InvalidAnswer,
    LLMConfig,
    LLMDistiller,
    LLMEndpointError,
    parse_answer,
)
from recsim_personas.personas.store import load_persona_set


@pytest.fixture
def split(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    return make_split(ml, ProtocolConfig(n_users=6, min_ratings=10, max_ratings=40, seed=3)).save(tmp_path / "split")


def n_batches(split, size=10):
    return int(sum((n + size - 1) // size for n in split.train.groupby("user_id").size()))


def distiller(url, **kw):
    cfg = dict(model="test-model", base_url=url, concurrency=2, max_retries=3, timeout=5.0)
    cfg.update(kw)
    return LLMDistiller(LLMConfig(**cfg))


def check_complete(pset, split):
    assert sorted(pset.personas) == split.user_ids.tolist()
    pairs = pset.memories[["user_id", "item_id"]]
    assert not pairs.duplicated().any()
    assert sorted(map(tuple, pairs.to_numpy().tolist())) == sorted(
        map(tuple, split.train[["user_id", "item_id"]].to_numpy().tolist())
    )
    assert pset.memories["reason"].str.len().gt(0).all()


def test_happy_path_writes_the_common_format(split, tmp_path):
    with FakeOpenAI() as server:
        pset, created = distill_personas(split, tmp_path / "p", distiller(server.url))
        assert created
        assert server.chat_requests == n_batches(split)
    check_complete(pset, split)
    assert (pset.memories["source"] == "llm").all()
    for uid, p in pset.personas.items():
        k = (int((split.train.user_id == uid).sum()) + 9) // 10
        assert p.description == f"profile after batch {k} of {k}"  # the Ms of the last batch
        assert p.traits["activity_level"] in {"low", "medium", "high"}
        assert p.provenance["failed_batches"] == []
    usage = pset.manifest["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    again = load_persona_set(tmp_path / "p", split_id=split.split_id)
    assert again.personas == pset.personas


def test_each_call_carries_the_previous_ms(split, tmp_path):
    calls = []
    with FakeOpenAI() as server:
        d = distiller(server.url, concurrency=1)
        original = d._call

        def spy(messages):
            calls.append(messages[1]["content"])
            return original(messages)

        d._call = spy
        distill_personas(split, tmp_path / "p", d)
    second = [c for c in calls if "BATCH 2 OF" in c]
    assert second and all("profile after batch 1" in c for c in second)
    assert all("(none yet" in c for c in calls if "BATCH 1 OF" in c)


def test_transport_failures_are_retried(split, tmp_path):
    plan = ["429", "500", "timeout", "429"]
    with FakeOpenAI(plan, timeout_sleep=1.2) as server:
        pset, _ = distill_personas(split, tmp_path / "p", distiller(server.url, timeout=0.6))
        assert server.chat_requests >= n_batches(split) + 4
    check_complete(pset, split)
    assert (pset.memories["source"] == "llm").all()


def test_invalid_answers_get_one_repair_then_fail_the_batch(split, tmp_path):
    # first batch served: malformed then fixed; second: bad ids twice -> failed; third: too long then fixed
    plan = ["malformed", "ok", "bad_ids", "bad_ids", "long", "ok"]
    with FakeOpenAI(plan) as server:
        pset, _ = distill_personas(split, tmp_path / "p", distiller(server.url, concurrency=1))
        assert server.chat_requests == n_batches(split) + 3
    check_complete(pset, split)
    failed = {uid: p.provenance["failed_batches"] for uid, p in pset.personas.items() if p.provenance["failed_batches"]}
    assert len(failed) == 1
    (failed_batches,) = failed.values()
    assert len(failed_batches) == 1  # one batch of one user failed; the run went on
    fallback = pset.memories[pset.memories["source"] == "stats-fallback"]
    assert 1 <= len(fallback) <= 10 and set(fallback["user_id"]) == set(failed)
    assert pset.manifest["usage"]["failed_batches"] == 1
    assert all(p.words <= 2000 for p in pset.personas.values())


def test_endpoint_problems_are_clear(split, tmp_path):
    with pytest.raises(LLMEndpointError, match="cannot reach"):
        distill_personas(split, tmp_path / "down", distiller("http://127.0.0.1:9/v1", max_retries=0, timeout=1.0))
    with FakeOpenAI() as server, pytest.raises(LLMEndpointError, match="does not know model 'gpt-nope'"):
        distill_personas(split, tmp_path / "m", distiller(server.url, model="gpt-nope"))
    with FakeOpenAI(api_key="right") as server, pytest.raises(LLMEndpointError, match="refused the API key"):
        os.environ["RSP_TEST_KEY"] = "wrong"
        try:
            distill_personas(split, tmp_path / "k", distiller(server.url, api_key_env="RSP_TEST_KEY"))
        finally:
            del os.environ["RSP_TEST_KEY"]
    with pytest.raises(ConfigError, match="RSP_MISSING_KEY is not set"):
        distill_personas(split, tmp_path / "o", distiller(None, api_key_env="RSP_MISSING_KEY"))
    # nothing is presented as finished
    for d in ("down", "m", "k", "o"):
        assert not (tmp_path / d / "manifest.json").exists()


def test_resume_after_an_endpoint_outage(split, tmp_path):
    out = tmp_path / "p"
    total = n_batches(split)
    with FakeOpenAI(["ok"] * 3 + ["500"] * 50) as server, pytest.raises(LLMEndpointError, match="HTTP 500"):
        distill_personas(split, out, distiller(server.url, concurrency=1, max_retries=1))
    with pytest.raises(ArtifactError, match="not a finished persona set"):
        load_persona_set(out)
    done = len((out / JOURNAL).read_text().splitlines()) - 1
    assert done == 3
    with FakeOpenAI() as server:
        pset, _ = distill_personas(split, out, distiller(server.url, concurrency=1, max_retries=1))
        assert server.chat_requests == total - done  # nothing asked twice
    check_complete(pset, split)


def test_torn_journal_line_and_config_mismatch(split, tmp_path):
    out = tmp_path / "p"
    with FakeOpenAI(["ok"] * 2 + ["500"] * 50) as server, pytest.raises(LLMEndpointError):
        distill_personas(split, out, distiller(server.url, concurrency=1, max_retries=0))
    with open(out / JOURNAL, "a") as f:
        f.write('{"user_id": 1, "batch": 0, "status": "o')  # a crash mid-write
    with FakeOpenAI() as server:
        with pytest.raises(ArtifactError, match="--overwrite"):
            distill_personas(split, out, distiller(server.url, concurrency=1, model="test-model", batch_size=5))
        server.models.add("other")
        pset, _ = distill_personas(split, out, distiller(server.url, concurrency=1))
    check_complete(pset, split)
    for line in (out / JOURNAL).read_text().splitlines():
        json.loads(line)


def test_kill_9_and_rerun_loses_and_duplicates_nothing(split, tmp_path):
    out = tmp_path / "p"
    total = n_batches(split)
    with FakeOpenAI(delay=0.15) as server:
        cmd = [
            sys.executable,
            "-m",
            "recsim_personas",
            "personas",
            "distill",
            "--split",
            str(split.path),
            "--out",
            str(out),
            "--llm",
            "openai",
            "--model",
            "test-model",
            "--base-url",
            server.url,
            "--concurrency",
            "2",
            "--no-progress",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while server.ok_answers < max(3, total // 3) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / "manifest.json").exists()
        journaled = len((out / JOURNAL).read_text().splitlines()) - 1
        assert 0 < journaled < total
        time.sleep(0.5)  # let the server finish the requests the killed process had in flight
        before = server.ok_answers
        pset, created = distill_personas(split, out, distiller(server.url))
        assert created
        asked_again = server.ok_answers - before
        assert asked_again == total - journaled  # each unfinished batch once, finished ones never
    check_complete(pset, split)
    assert (pset.memories["source"] == "llm").all()
    assert len((out / JOURNAL).read_text().splitlines()) - 1 == total  # one record per batch, no duplicate


def test_parse_answer_rules():
    good = {
        "memories": [{"item_id": 1, "reason": "x"}, {"item_id": 2, "reason": "y"}],
        "profile": {"activity": "a", "conformity": "c", "diversity": "d", "description": "e f"},
    }
    assert parse_answer(json.dumps(good), [1, 2], 100).profile.description == "e f"
    assert parse_answer("```json\n" + json.dumps(good) + "\n```", [1, 2], 100)
    with pytest.raises(InvalidAnswer, match="missing \\[2\\]"):
        parse_answer(json.dumps({**good, "memories": good["memories"][:1]}), [1, 2], 100)
    with pytest.raises(InvalidAnswer, match="repeated \\[1\\]"):
        parse_answer(json.dumps({**good, "memories": [good["memories"][0]] * 2 + good["memories"][1:]}), [1, 2], 100)
    with pytest.raises(InvalidAnswer, match=r"profile\.diversity"):
        parse_answer(json.dumps({**good, "profile": {**good["profile"], "diversity": ""}}), [1, 2], 100)
    with pytest.raises(InvalidAnswer, match="limit is 3"):
        parse_answer(json.dumps(good), [1, 2], 3)
    with pytest.raises(InvalidAnswer, match="not valid JSON"):
        parse_answer("nope", [1], 100)
    with pytest.raises(ConfigError, match="batch_size"):
        LLMConfig(batch_size=11)


def test_cli_distill_against_the_server(split, tmp_path, capsys):
    from recsim_personas.cli import main

    with FakeOpenAI() as server:
        code = main(
            [
                "personas",
                "distill",
                "--split",
                str(split.path),
                "--out",
                str(tmp_path / "p"),
                "--llm",
                "openai",
                "--model",
                "test-model",
                "--base-url",
                server.url,
                "--json",
                "--no-progress",
                "--price-input",
                "2.5",
                "--price-output",
                "10",
            ]
        )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["counts"]["personas"] == 6
    assert out["usage"]["cost"] > 0
    assert Path(out["out"], "personas.jsonl").is_file()
