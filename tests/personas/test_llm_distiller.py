"""The LLM distiller against a local OpenAI-compatible server (real HTTP through the real openai client)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from recsim_personas.data import ProtocolConfig, load_movielens, make_split
from recsim_personas.errors import ArtifactError, ConfigError
from recsim_personas.personas.distill import distill_personas
from recsim_personas.personas.llm_distiller import FailedBatchesError, LLMConfig, LLMDistiller
from recsim_personas.personas.llm_journal import JOURNAL
from recsim_personas.personas.llm_prompts import InvalidAnswer, parse_answer
from recsim_personas.personas.openai_endpoint import LLMEndpointError
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
    with FakeOpenAI() as server:
        distill_personas(split, tmp_path / "p", distiller(server.url, concurrency=1))
        calls = list(server.prompts)
    second = [c for c in calls if "BATCH 2 OF" in c]
    assert second and all("profile after batch 1" in c for c in second)
    assert all("(none yet" in c for c in calls if "BATCH 1 OF" in c)


def test_transport_failures_are_retried(split, tmp_path):
    plan = ["429", "500", "timeout", "429"]
    with FakeOpenAI(plan) as server:  # "timeout": no answer until the client gives up and asks again
        pset, _ = distill_personas(split, tmp_path / "p", distiller(server.url, timeout=0.5))
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
    assert pset.manifest["usage"]["failed_share"] == pytest.approx(1 / n_batches(split))  # under the default 10%
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
        refused = r"journal of another run: batch_size 10 \(recorded\) vs 5 \(this run\)\. Fix: .*--overwrite"
        with pytest.raises(ArtifactError, match=refused):
            distill_personas(split, out, distiller(server.url, concurrency=1, model="test-model", batch_size=5))
        server.models.add("other")
        pset, _ = distill_personas(split, out, distiller(server.url, concurrency=1))
    check_complete(pset, split)
    for line in (out / JOURNAL).read_text().splitlines():
        json.loads(line)


def test_a_damaged_journal_line_names_the_file_the_line_and_the_fix(split, tmp_path, capsys):
    out = tmp_path / "p"
    with FakeOpenAI(["ok"] * 3 + ["500"] * 50) as server, pytest.raises(LLMEndpointError):
        distill_personas(split, out, distiller(server.url, concurrency=1, max_retries=0))
    lines = (out / JOURNAL).read_text().splitlines(keepends=True)
    assert len(lines) == 4  # the header and three batches
    (out / JOURNAL).write_text("".join([*lines[:2], '{"user_id": 3, "batch": \n', *lines[3:]]))
    from recsim_personas.cli import main

    with FakeOpenAI() as server:
        with pytest.raises(ArtifactError, match=r"journal\.jsonl:3: expected a journal record, got not JSON"):
            distill_personas(split, out, distiller(server.url))
        argv = ["personas", "distill", "--split", str(split.path), "--out", str(out), "--llm", "openai"]
        code = main([*argv, "--model", "test-model", "--base-url", server.url, "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Fix: delete line 3" in err
        assert server.chat_requests == 0
        # doing what the message says: that batch is asked again, the other two are not
        (out / JOURNAL).write_text("".join([*lines[:2], *lines[3:]]))
        pset, _ = distill_personas(split, out, distiller(server.url))
        assert server.chat_requests == n_batches(split) - 2
    check_complete(pset, split)


def test_kill_9_and_rerun_ask_only_the_batches_in_flight_again(split, tmp_path, monkeypatch):
    out = tmp_path / "p"
    total, concurrency = n_batches(split), 2
    with FakeOpenAI(delay=0.15) as server:
        argv = ["personas", "distill", "--split", str(split.path), "--out", str(out), "--llm", "openai"]
        argv += ["--model", "test-model", "--base-url", server.url, "--api-key-env", "RSP_RUN_KEY"]
        argv += ["--concurrency", str(concurrency), "--no-progress"]
        env = {**os.environ, "RSP_RUN_KEY": "killed-run"}  # the server counts each run's answers by its key
        proc = subprocess.Popen([sys.executable, "-m", "recsim_personas", *argv], env=env, stderr=subprocess.PIPE)
        assert server.wait_for(lambda: server.ok_by_key["killed-run"] >= max(3, total // 3))
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / "manifest.json").exists()
        journaled = len((out / JOURNAL).read_text().splitlines()) - 1
        assert 0 < journaled < total
        monkeypatch.setenv("RSP_RUN_KEY", "rerun")
        pset, created = distill_personas(split, out, distiller(server.url, api_key_env="RSP_RUN_KEY"))
        assert created
        assert server.wait_idle()  # the killed run's last requests are answered too (the server accepts in order)
        assert server.ok_by_key["rerun"] == total - journaled  # every batch without a record once, no other
        asked_twice = server.ok_by_key["killed-run"] - journaled  # answered to the killed run, never journaled
        assert 0 <= asked_twice <= concurrency  # the bound the README states: the batches in flight at the kill
    check_complete(pset, split)
    assert (pset.memories["source"] == "llm").all()
    assert len((out / JOURNAL).read_text().splitlines()) - 1 == total  # one record per batch, no duplicate


def test_an_http_200_that_is_not_json_is_retried_then_a_clear_error(split, tmp_path, capsys):
    from recsim_personas.cli import main

    with FakeOpenAI(["html", "not_json", "html"]) as server:
        pset, _ = distill_personas(split, tmp_path / "p", distiller(server.url, concurrency=1, max_retries=3))
        assert server.chat_requests == n_batches(split) + 3  # each bad body was asked again
    check_complete(pset, split)
    assert (pset.memories["source"] == "llm").all()
    for kind, shown in (("html", "text/html"), ("not_json", "application/json")):
        with FakeOpenAI(default=kind) as server:
            argv = ["personas", "distill", "--split", str(split.path), "--out", str(tmp_path / kind)]
            argv += ["--llm", "openai", "--model", "test-model", "--base-url", server.url, "--max-retries", "1"]
            code = main([*argv, "--no-progress"])
            assert server.chat_requests >= 2  # one retry
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
        assert "answered HTTP 200 with a body that is not JSON" in err and shown in err and "Fix: " in err
        assert not (tmp_path / kind / "manifest.json").exists()


def test_the_api_key_is_redacted_from_every_message(split, tmp_path, capsys, monkeypatch):
    from recsim_personas.cli import main

    secret = "sk-test-Zq81mXvA0b4c5d6e7f8g9h"
    monkeypatch.setenv("RSP_SECRET_KEY", secret)
    with FakeOpenAI(default="echo_400") as server:
        argv = ["personas", "distill", "--split", str(split.path), "--out", str(tmp_path / "p"), "--llm", "openai"]
        argv += ["--model", "test-model", "--base-url", server.url, "--api-key-env", "RSP_SECRET_KEY", "-v"]
        code = main([*argv, "--no-progress"])
        assert server.chat_requests >= 1
    err = capsys.readouterr().err
    assert code == 2 and "rejected the request (400: " in err and "invalid request from key <redacted key>" in err
    assert secret not in err and secret[-12:] not in err and secret[4:16] not in err


def test_a_model_that_never_answers_validly_fails_the_run_and_a_rerun_retries(split, tmp_path, capsys):
    from recsim_personas.cli import main

    out, total = tmp_path / "p", n_batches(split)
    with FakeOpenAI(default="bad_ids") as server:
        with pytest.raises(FailedBatchesError, match=rf"{total} of {total} batches \(100%\) failed validation"):
            distill_personas(split, out, distiller(server.url))
        assert server.chat_requests == 2 * total  # the answer and one repair per batch
        assert not (out / "manifest.json").exists()
        argv = ["personas", "distill", "--split", str(split.path), "--out", str(out), "--llm", "openai"]
        argv += ["--model", "test-model", "--base-url", server.url, "--no-progress"]
        assert main(argv) == 2  # a rerun without --retry-failed asks nothing and fails the same way
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "--max-failed-share 0.1" in err and "--retry-failed" in err
        assert server.chat_requests == 2 * total
        assert main([*argv, "--max-failed-share", "1", "--json"]) == 0  # accepting them: offline reasons
        accepted = json.loads(capsys.readouterr().out)
        assert accepted["usage"]["failed_share"] == 1.0
        assert set(accepted["counts"]["memories_by_source"]) == {"stats-fallback"}
    with FakeOpenAI() as server:
        argv[argv.index("--base-url") + 1] = server.url
        assert main([*argv, "--retry-failed", "--json"]) == 0
        assert server.chat_requests == total  # the failed batches, asked once more
        assert main([*argv, "--retry-failed", "--json"]) == 0
        assert server.chat_requests == total  # nothing failed any more: nothing to do
    pset = load_persona_set(out)
    check_complete(pset, split)
    assert (pset.memories["source"] == "llm").all() and pset.manifest["usage"]["failed_batches"] == 0


def test_a_larger_run_reuses_the_journal_of_a_smaller_one(split, tmp_path, capsys):
    from recsim_personas.cli import main

    out, users = tmp_path / "p", split.user_ids.tolist()
    per_user = split.train.groupby("user_id").size()
    batches = {int(u): (int(per_user[u]) + 9) // 10 for u in users}
    with FakeOpenAI() as server:
        argv = ["personas", "distill", "--split", str(split.path), "--out", str(out), "--llm", "openai"]
        argv += ["--model", "test-model", "--base-url", server.url, "--no-progress", "--json"]
        assert main([*argv, "--max-users", "2"]) == 0
        assert server.chat_requests == batches[users[0]] + batches[users[1]]
        assert main([*argv, "--max-users", "3"]) == 0  # grows: only the third user is asked
        grown = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert grown["created"] and grown["counts"]["personas"] == 3
        assert server.chat_requests == sum(batches[u] for u in users[:3])
        assert main(argv) == 0  # every user
        assert server.chat_requests == sum(batches.values())
        assert main([*argv, "--overwrite"]) == 0  # the journal of this run is kept: nothing is paid twice
        assert server.chat_requests == sum(batches.values())
        capsys.readouterr()
        assert main([*argv, "--batch-size", "5"]) == 2
        err = capsys.readouterr().err
        assert "holds personas of another run: batch_size 10 (recorded) vs 5 (this run)" in err
        assert main([*argv, "--batch-size", "5", "--overwrite"]) == 0  # another config: its own journal
        assert server.chat_requests == sum(batches.values()) + sum((int(n) + 4) // 5 for n in per_user)
    check_complete(load_persona_set(out), split)


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
