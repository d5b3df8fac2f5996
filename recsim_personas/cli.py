"""The ``recsim-personas`` command line.

The only place that parses argv and configures logging. Every subcommand prints human-readable output
by default; with ``--json`` it prints exactly one JSON object on stdout (logs and progress bars go to
stderr). Errors on bad input print one ``error: ...`` line on stderr and exit with status 2.

Heavy libraries are imported inside the subcommand handlers, so ``recsim-personas --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from recsim_personas import __version__
from recsim_personas.errors import RecsimPersonasError

logger = logging.getLogger("recsim_personas.cli")


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if args.json:
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def _emit_report(args: argparse.Namespace, report: Any) -> None:
    """Save ``report`` into ``args.out`` (when given) and emit it: its dict (+ ``files``) or its markdown."""
    paths = report.save(args.out) if args.out else {}
    payload = report.to_dict()
    payload["files"] = {k: str(v) for k, v in paths.items()}
    text = report.to_markdown()
    if paths:
        text += "\n\nreport: " + ", ".join(str(p) for p in paths.values())
    _emit(args, payload, text)


def _users_arg(value: str) -> int | None:
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}")
    return n


# ------------------------------------------------------------------------------------------- data
def cmd_data_prepare(args: argparse.Namespace) -> int:
    from recsim_personas.data.protocol import ProtocolConfig, prepare_split

    config = ProtocolConfig(
        dataset=args.dataset,
        n_users=args.users,
        min_ratings=args.min_ratings,
        max_ratings=args.max_ratings,
        train_ratio=args.train_ratio,
        seed=args.seed,
    )
    split, created = prepare_split(
        config, args.out, data_dir=args.data_dir, download=not args.no_download, overwrite=args.overwrite
    )
    counts = split.manifest["counts"]
    payload = {
        "out": str(split.path),
        "created": created,
        "split_id": split.split_id,
        "counts": counts,
        "config": config.to_dict(),
    }
    verb = "wrote" if created else "already up to date:"
    text = (
        f"{verb} {split.path} (split {split.split_id[:12]})\n"
        f"  {counts['users']} of {counts['eligible_users']} eligible users, {counts['train']} train /"
        f" {counts['test']} test ratings, {counts['background']} background ratings, {counts['items']} items"
    )
    _emit(args, payload, text)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from recsim_personas.data.protocol import Split

    split = Split.load(args.dir)
    m = split.manifest
    train, test = split.train, split.test
    per_user = split.users["n_ratings"]
    info = {
        "path": str(split.path),
        "split_id": split.split_id,
        "config": m["config"],
        "source": {"dataset": m["source"]["dataset"], "hash": m["source"]["hash"]},
        "counts": m["counts"],
        "ratings_per_user": {
            "min": int(per_user.min()),
            "median": float(per_user.median()),
            "max": int(per_user.max()),
        },
        "train_rating_mean": float(train["rating"].mean()),
        "test_rating_mean": float(test["rating"].mean()),
        "created_at": m.get("created_at"),
        "versions": m.get("versions", {}),
    }
    c = m["counts"]
    text = "\n".join(
        [
            f"split {split.split_id[:12]} at {split.path}",
            f"  dataset      {m['source']['dataset']} (source hash {m['source']['hash'][:12]})",
            f"  protocol     {json.dumps(m['config'])}",
            f"  users        {c['users']} of {c['eligible_users']} eligible; ratings per user"
            f" {info['ratings_per_user']['min']}–{info['ratings_per_user']['max']}"
            f" (median {info['ratings_per_user']['median']:g})",
            f"  ratings      {c['train']} train (mean {info['train_rating_mean']:.3f}), {c['test']} test"
            f" (mean {info['test_rating_mean']:.3f}), {c['background']} background",
            f"  items        {c['items']} ({c['items_in_train']} in train; {c['test_items_unseen_in_train']} test"
            f" ratings are of items the sample never rated in train); summary for {c['items_with_summary']},"
            f" cast for {c['items_with_cast']}",
            f"  created      {m.get('created_at')}",
        ]
    )
    _emit(args, info, text)
    return 0


# ------------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from recsim_personas.agents.classical import make_rater
    from recsim_personas.agents.fidelity import evaluate_fidelity
    from recsim_personas.data.protocol import Split

    names = [n.strip() for n in args.raters.split(",") if n.strip()]
    raters = [make_rater(n) for n in names]  # validates every name before any work
    split = Split.load(args.split)
    report = evaluate_fidelity(
        raters, split.test, fit_on=split.history(), split_id=split.split_id, progress=not args.no_progress
    )
    _emit_report(args, report)
    return 0


# --------------------------------------------------------------------------------------- personas
def cmd_personas_distill(args: argparse.Namespace) -> int:
    from recsim_personas.data.protocol import Split
    from recsim_personas.personas.distill import distill_personas

    split = Split.load(args.split)
    if args.llm == "stats":
        from recsim_personas.personas.stats_distiller import StatsDistiller

        distiller = StatsDistiller()
    else:
        from recsim_personas.personas.llm_distiller import LLMConfig, LLMDistiller

        distiller = LLMDistiller(
            LLMConfig(
                model=args.model,
                base_url=args.base_url,
                api_key_env=args.api_key_env,
                concurrency=args.concurrency,
                response_format=args.response_format,
                timeout=args.timeout,
                max_retries=args.max_retries,
                price_input_per_mtok=args.price_input,
                price_output_per_mtok=args.price_output,
            )
        )
    users = None
    if args.max_users is not None:
        users = [int(u) for u in split.user_ids[: args.max_users]]
    pset, created = distill_personas(
        split, args.out, distiller, user_ids=users, overwrite=args.overwrite, progress=not args.no_progress
    )
    m = pset.manifest
    payload = {
        "out": str(pset.path),
        "created": created,
        "split_id": pset.split_id,
        "counts": m["counts"],
        "usage": m["usage"],
    }
    usage = m["usage"]
    tokens = ""
    if usage.get("prompt_tokens") is not None and args.llm != "stats":
        tokens = f"; {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens"
        if "cost" in usage:
            tokens += f" (cost {usage['cost']:.4f})"
        tokens += f"; {usage.get('failed_batches', 0)} failed batches"
    text = (
        f"{'wrote' if created else 'already up to date:'} {pset.path}: {m['counts']['personas']} personas,"
        f" {m['counts']['memories']} memories{tokens}"
    )
    _emit(args, payload, text)
    return 0


def _embedder_from(args: argparse.Namespace):
    from recsim_personas.personas.embedders import make_embedder

    return make_embedder(
        args.embedder,
        model=args.embed_model,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        cache=False if args.no_embed_cache else args.embed_cache,
        progress=not args.no_progress,
    )


def cmd_personas_cluster(args: argparse.Namespace) -> int:
    from recsim_personas.personas.clustering import ClusterConfig, cluster_personas, save_clusters
    from recsim_personas.personas.store import load_persona_set

    pset = load_persona_set(args.personas)
    k = None if args.k == "auto" else _positive_int(args.k, "--k")
    result = cluster_personas(pset, _embedder_from(args), ClusterConfig(k=k, k_max=args.k_max, seed=args.seed))
    paths = save_clusters(result, pset.path / "clusters")
    payload = {
        "k": result.k,
        "chosen_by": result.chosen_by,
        "sizes": result.sizes,
        "ks": result.ks,
        "inertias": result.inertias,
        "silhouettes": result.silhouettes,
        "files": {k: str(v) for k, v in paths.items()},
    }
    _emit(args, payload, result.to_markdown() + "\n\nreport: " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_personas_index(args: argparse.Namespace) -> int:
    import time

    from recsim_personas._io import sha256_file
    from recsim_personas.data.protocol import Split
    from recsim_personas.personas.memory import MemoryIndex
    from recsim_personas.personas.store import load_persona_set

    split = Split.load(args.split)
    pset = load_persona_set(args.personas, split_id=split.split_id)
    start = time.perf_counter()
    index = MemoryIndex.build(pset, split.catalog(), _embedder_from(args))
    out = pset.path / "memory"
    index.save(out, personas_manifest=sha256_file(pset.path / "manifest.json"))
    seconds = time.perf_counter() - start
    payload = {
        "out": str(out),
        "memories": len(index.memories),
        "items": len(index.item_ids),
        "dim": index.dim,
        "embedder": index.embedder_id,
        "seconds": seconds,
    }
    _emit(
        args,
        payload,
        f"indexed {len(index.memories)} memories and {len(index.item_ids)} item descriptions"
        f" ({index.embedder_id}, d={index.dim}) in {seconds:.1f}s -> {out}",
    )
    return 0


def _positive_int(value: str, flag: str) -> int:
    from recsim_personas.errors import ConfigError

    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{flag} must be 'auto' or a positive integer, got {value!r}.") from None
    if n < 1:
        raise ConfigError(f"{flag} must be 'auto' or a positive integer, got {value!r}.")
    return n


# ----------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs go to stderr)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")

    parser = argparse.ArgumentParser(
        prog="recsim-personas",
        description="Simulated MovieLens users as small-language-model persona agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="prepare and inspect protocol splits")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = data_sub.add_parser(
        "prepare",
        parents=[common],
        help="select users and split their ratings (the paper's protocol)",
        description="Load MovieLens (from --data-dir, $RECSIM_PERSONAS_DATA_DIR, the cache, or a download),"
        " select users with min..max ratings, sample --users of them and split each user's ratings by time.",
    )
    prep.add_argument("--dataset", default="ml-100k", help="ml-100k or ml-1m (default: ml-100k)")
    prep.add_argument("--out", required=True, help="directory to write the split into")
    prep.add_argument("--data-dir", default=None, help="directory holding the GroupLens files")
    prep.add_argument("--users", type=_users_arg, default=200, help="users to sample, or 'all' (default: 200)")
    prep.add_argument("--min-ratings", type=int, default=100, help="fewest ratings of an eligible user (default: 100)")
    prep.add_argument("--max-ratings", type=int, default=200, help="most ratings of an eligible user (default: 200)")
    prep.add_argument(
        "--train-ratio", type=float, default=0.6, help="share of each user's ratings for train (default: 0.6)"
    )
    prep.add_argument("--seed", type=int, default=0, help="seed of the user sample (default: 0)")
    prep.add_argument("--overwrite", action="store_true", help="replace a different split already in --out")
    prep.add_argument("--no-download", action="store_true", help="never download; fail if no local copy")
    prep.set_defaults(func=cmd_data_prepare)

    info = data_sub.add_parser("info", parents=[common], help="summarise a split directory")
    info.add_argument("dir", help="split directory")
    info.set_defaults(func=cmd_data_info)

    ev = sub.add_parser(
        "eval",
        parents=[common],
        help="fit raters on a split's history and score them on its test ratings",
        description="Fit each rater on the split's history (train + background ratings; no test rating) and"
        " report RMSE/MAE of the expected and the most likely rating, and rating-histogram distances.",
    )
    ev.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    ev.add_argument(
        "--raters", default="global,user,item,bias,mf", help="comma-separated: global,user,item,bias,mf,knn,blend"
    )
    ev.add_argument("--out", default=None, help="directory for fidelity.md/.json/.png")
    ev.set_defaults(func=cmd_eval)

    personas = sub.add_parser("personas", help="distill personas (Ms/Ml), cluster them, index memories")
    p_sub = personas.add_subparsers(dest="personas_command", required=True, metavar="ACTION")
    dist = p_sub.add_parser(
        "distill",
        parents=[common],
        help="write Ms and Ml for every user of a split (offline, or with an OpenAI-compatible LLM)",
        description="Distil each user's train ratings into a profile (Ms) and one reason per rating (Ml)."
        " --llm stats works offline from the data; --llm openai calls any OpenAI-compatible endpoint and is"
        " resumable: rerun the same command after an interruption.",
    )
    dist.add_argument("--split", required=True, help="split directory")
    dist.add_argument("--out", required=True, help="personas directory to write")
    dist.add_argument("--llm", choices=["stats", "openai"], default="stats", help="distiller (default: stats)")
    dist.add_argument("--model", default="gpt-4o", help="model name at the endpoint (default: gpt-4o)")
    dist.add_argument("--base-url", default=None, help="endpoint, e.g. http://localhost:8000/v1 (default: OpenAI)")
    dist.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var with the API key")
    dist.add_argument("--concurrency", type=int, default=4, help="users distilled in parallel (default: 4)")
    dist.add_argument(
        "--response-format",
        choices=["json_object", "json_schema", "none"],
        default="json_object",
        help="JSON mode to request (default: json_object)",
    )
    dist.add_argument("--timeout", type=float, default=120.0, help="seconds per call before a retry")
    dist.add_argument("--max-retries", type=int, default=5, help="retries on 429/5xx/timeouts")
    dist.add_argument("--price-input", type=float, default=None, help="price per million prompt tokens")
    dist.add_argument("--price-output", type=float, default=None, help="price per million completion tokens")
    dist.add_argument("--max-users", type=int, default=None, help="only the first N users (trials)")
    dist.add_argument("--overwrite", action="store_true", help="replace personas of another split/config in --out")
    dist.set_defaults(func=cmd_personas_distill)

    embed = argparse.ArgumentParser(add_help=False)
    embed.add_argument("--embedder", choices=["local", "openai"], default="local", help="local MiniLM or an endpoint")
    embed.add_argument("--embed-model", default=None, help="embedding model (openai: default text-embedding-3-small)")
    embed.add_argument("--base-url", default=None, help="embedding endpoint for --embedder openai")
    embed.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var with the API key")
    embed.add_argument("--embed-cache", default=None, help="SQLite embedding cache (default: user cache dir)")
    embed.add_argument("--no-embed-cache", action="store_true", help="do not cache embeddings")

    clu = p_sub.add_parser(
        "cluster",
        parents=[common, embed],
        help="embed the Ms texts and cluster users into personas (KMeans++, K by the elbow method)",
    )
    clu.add_argument("--personas", required=True, help="personas directory (from `personas distill`)")
    clu.add_argument("--k", default="auto", help="number of clusters, or 'auto' for the elbow rule (default)")
    clu.add_argument("--k-max", type=int, default=10, help="largest K tried by the elbow rule (default: 10)")
    clu.add_argument("--seed", type=int, default=0, help="KMeans seed")
    clu.set_defaults(func=cmd_personas_cluster)

    idx = p_sub.add_parser(
        "index", parents=[common, embed], help="build the FAISS memory index (Ml + item descriptions)"
    )
    idx.add_argument("--personas", required=True, help="personas directory")
    idx.add_argument("--split", required=True, help="the split the personas were made from (for item descriptions)")
    idx.set_defaults(func=cmd_personas_index)

    from recsim_personas.envs._cli import register_simulate

    register_simulate(sub, common)
    from recsim_personas.recommenders._cli import register_benchmark

    register_benchmark(sub, common)
    from recsim_personas.agents._cli import register_agents

    register_agents(sub, common)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(getattr(args, "verbose", 0))
    try:
        return int(args.func(args) or 0)
    except RecsimPersonasError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
