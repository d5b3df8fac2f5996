from __future__ import annotations

import json

import pytest

from recsim_personas.cli import main
from recsim_personas.data import ProtocolConfig, load_movielens, make_split


@pytest.fixture
def split(tiny_dataset_dir, tmp_path):
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    return make_split(ml, ProtocolConfig(n_users=12, min_ratings=10, max_ratings=40)).save(tmp_path / "split")


def run(capsys, *argv):
    code = main([*argv, "--json", "--no-progress"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def test_distill_cluster_index_with_the_local_embedder(split, tmp_path, capsys):
    p = tmp_path / "personas"
    code, out, _ = run(capsys, "personas", "distill", "--split", str(split.path), "--out", str(p))
    assert code == 0 and out["counts"]["personas"] == 12
    code, out, _ = run(capsys, "personas", "cluster", "--personas", str(p), "--k-max", "5")
    assert code == 0 and 2 <= out["k"] <= 5 and sum(out["sizes"]) == 12
    assert (p / "clusters" / "elbow.png").is_file()
    code, out, _ = run(capsys, "personas", "cluster", "--personas", str(p), "--k", "3")
    assert code == 0 and out["k"] == 3
    code, out, _ = run(capsys, "personas", "index", "--personas", str(p), "--split", str(split.path))
    assert code == 0 and out["memories"] == len(split.train) and out["dim"] == 384
    from recsim_personas.personas.memory import MemoryIndex

    index = MemoryIndex.load(p / "memory")
    uid = int(split.train.user_id.iloc[0])
    item = int(split.test[split.test.user_id == uid].item_id.iloc[0])
    assert len(index.retrieve(uid, item, k=2)) == 2


def test_cluster_and_index_refuse_bad_input(split, tmp_path, capsys, tiny_dataset_dir):
    code, _, err = run(capsys, "personas", "cluster", "--personas", str(tmp_path / "nothing"))
    assert code == 2 and "not a finished persona set" in err
    p = tmp_path / "personas"
    run(capsys, "personas", "distill", "--split", str(split.path), "--out", str(p))
    code, _, err = run(capsys, "personas", "cluster", "--personas", str(p), "--k", "zero")
    assert code == 2 and "--k must be 'auto' or a positive integer" in err
    ml = load_movielens("ml-100k", tiny_dataset_dir, download=False)
    other = make_split(ml, ProtocolConfig(n_users=12, min_ratings=10, max_ratings=40, seed=4)).save(tmp_path / "o")
    code, _, err = run(capsys, "personas", "index", "--personas", str(p), "--split", str(other.path))
    assert code == 2 and "was made from another split" in err


def test_distill_cluster_and_embedder_options_come_from_their_config_dataclasses():
    import dataclasses

    from recsim_personas.cli import build_parser
    from recsim_personas.personas.clustering import ClusterConfig
    from recsim_personas.personas.embedders import EmbedderConfig
    from recsim_personas.personas.llm_config import LLMConfig

    parser = build_parser()
    base = ["personas", "distill", "--split", "s", "--out", "o", "--llm", "openai"]
    args = parser.parse_args(base)
    assert args.llm_options.build(args) == LLMConfig()  # every default from the dataclass
    assert set(args.llm_options.flags) == {f.name for f in dataclasses.fields(LLMConfig)}
    given = ["--model", "m", "--base-url", "http://x/v1", "--api-key-env", "K", "--concurrency", "2"]
    given += ["--response-format", "none", "--timeout", "3", "--max-retries", "1", "--price-input", "2.5"]
    given += ["--price-output", "10", "--batch-size", "5", "--max-failed-share", "0.5", "--retry-failed"]
    args = parser.parse_args([*base, *given])
    assert args.llm_options.build(args) == LLMConfig(
        model="m",
        base_url="http://x/v1",
        api_key_env="K",
        concurrency=2,
        response_format="none",
        timeout=3.0,
        max_retries=1,
        price_input_per_mtok=2.5,
        price_output_per_mtok=10.0,
        batch_size=5,
        max_failed_share=0.5,
        retry_failed=True,
    )
    args = parser.parse_args(["personas", "cluster", "--personas", "p"])
    assert args.cluster_options.build(args) == ClusterConfig() and args.embed_options.build(args) == EmbedderConfig()
    argv = ["personas", "cluster", "--personas", "p", "--k-max", "5", "--seed", "3", "--n-init", "2"]
    argv += ["--embedder", "openai", "--embed-model", "e", "--base-url", "http://y/v1", "--embed-cache", "c.sqlite"]
    args = parser.parse_args(argv)
    assert args.cluster_options.build(args) == ClusterConfig(k_max=5, seed=3, n_init=2)
    assert args.embed_options.build(args) == EmbedderConfig(
        kind="openai", model="e", base_url="http://y/v1", cache="c.sqlite"
    )
