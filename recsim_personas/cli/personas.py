"""The ``recsim-personas personas`` subcommands: ``distill`` Ms/Ml, ``cluster`` the personas, ``index`` memories."""

from __future__ import annotations

import argparse

from recsim_personas.cli._output import emit


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
    emit(args, payload, text)
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
    emit(args, payload, result.to_markdown() + "\n\nreport: " + ", ".join(str(p) for p in paths.values()))
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
    emit(
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


def register_personas(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``personas distill``, ``personas cluster`` and ``personas index``."""
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
