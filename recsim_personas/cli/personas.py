"""The ``recsim-personas personas`` subcommands: ``distill`` Ms/Ml, ``cluster`` the personas, ``index`` memories.

The options of the LLM distiller, the clustering and the embedder are generated from their config dataclasses
(:class:`~recsim_personas.personas.llm_config.LLMConfig`,
:class:`~recsim_personas.personas.clustering.ClusterConfig`,
:class:`~recsim_personas.personas.embedders.EmbedderConfig`), so each default is stated once, in the dataclass.
"""

from __future__ import annotations

import argparse

from recsim_personas.cli._argtypes import positive_int
from recsim_personas.cli._options import add_config_options
from recsim_personas.cli._output import emit


def cmd_personas_distill(args: argparse.Namespace) -> int:
    from recsim_personas.data.protocol import Split
    from recsim_personas.personas.distill import distill_personas

    split = Split.load(args.split)
    if args.llm == "stats":
        from recsim_personas.personas.stats_distiller import StatsDistiller

        distiller = StatsDistiller()
    else:
        from recsim_personas.personas.llm_distiller import LLMDistiller

        distiller = LLMDistiller(args.llm_options.build(args))
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
        failed, total = usage.get("failed_batches", 0), usage.get("calls_batches", 0)
        tokens += f"; {failed} of {total} batches failed" + (f" ({failed / total:.1%})" if total else "")
    text = (
        f"{'wrote' if created else 'already up to date:'} {pset.path}: {m['counts']['personas']} personas,"
        f" {m['counts']['memories']} memories{tokens}"
    )
    emit(args, payload, text)
    return 0


def _embedder_from(args: argparse.Namespace):
    from recsim_personas.personas.embedders import make_embedder

    config = args.embed_options.build(args, **({"cached": False} if args.no_embed_cache else {}))
    return make_embedder(config, progress=not args.no_progress)


def cmd_personas_cluster(args: argparse.Namespace) -> int:
    from recsim_personas.personas.clustering import cluster_personas, save_clusters
    from recsim_personas.personas.store import load_persona_set

    pset = load_persona_set(args.personas)
    fixed = {} if not hasattr(args, "cluster_k") else {"k": _k_arg(args.cluster_k)}
    config = args.cluster_options.build(args, **fixed)
    result = cluster_personas(pset, _embedder_from(args), config)
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

    from recsim_personas.artifacts import manifest_digest
    from recsim_personas.data.protocol import Split
    from recsim_personas.personas.memory import MemoryIndex
    from recsim_personas.personas.store import load_persona_set

    split = Split.load(args.split)
    pset = load_persona_set(args.personas, split_id=split.split_id)
    start = time.perf_counter()
    index = MemoryIndex.build(pset, split.catalog(), _embedder_from(args))
    out = pset.path / "memory"
    index.save(out, personas_manifest=manifest_digest(pset.path))
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


def _k_arg(value: str) -> int | None:
    """``--k``: ``auto`` (the knee rule, ``None``) or a positive integer."""
    from recsim_personas.errors import ConfigError

    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--k must be 'auto' or a positive integer, got {value!r}. Fix: pass e.g. --k 5.")
    return n


def register_personas(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``personas distill``, ``personas cluster`` and ``personas index``."""
    from recsim_personas.personas.clustering import ClusterConfig
    from recsim_personas.personas.embedders import EmbedderConfig
    from recsim_personas.personas.llm_config import LLMConfig

    personas = sub.add_parser("personas", help="distill personas (Ms/Ml), cluster them, index memories")
    p_sub = personas.add_subparsers(dest="personas_command", required=True, metavar="ACTION")
    dist = p_sub.add_parser(
        "distill",
        parents=[common],
        help="write Ms and Ml for every user of a split (offline, or with an OpenAI-compatible LLM)",
        description="Distil each user's train ratings into a profile (Ms) and one reason per rating (Ml)."
        " --llm stats works offline from the data; --llm openai calls any OpenAI-compatible endpoint and is"
        " resumable: rerun the same command after an interruption, or with a larger --max-users.",
    )
    dist.add_argument("--split", required=True, help="split directory")
    dist.add_argument("--out", required=True, help="personas directory to write")
    dist.add_argument("--llm", choices=["stats", "openai"], default="stats", help="distiller (default: stats)")
    dist.add_argument(
        "--max-users", type=positive_int, default=None, help="only the first N users (trials; a rerun may grow it)"
    )
    dist.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the personas in --out, even of another split or config (a journal of another run is"
        " discarded; one of this run is reused)",
    )
    group = dist.add_argument_group("LLM distiller (--llm openai; LLMConfig, defaults from the dataclass)")
    dist.set_defaults(
        func=cmd_personas_distill,
        llm_options=add_config_options(
            group, LLMConfig, rename={"price_input_per_mtok": "price-input", "price_output_per_mtok": "price-output"}
        ),
    )

    embed = argparse.ArgumentParser(add_help=False)
    embed_group = embed.add_argument_group("embedder (EmbedderConfig, defaults from the dataclass)")
    embed.set_defaults(
        embed_options=add_config_options(
            embed_group,
            EmbedderConfig,
            rename={"kind": "embedder", "model": "embed-model", "cache": "embed-cache"},
            exclude=("cached",),
        )
    )
    embed_group.add_argument("--no-embed-cache", action="store_true", help="do not cache embeddings")

    clu = p_sub.add_parser(
        "cluster",
        parents=[common, embed],
        help="embed the Ms texts and cluster users into personas (KMeans++, K by the elbow method)",
    )
    clu.add_argument("--personas", required=True, help="personas directory (from `personas distill`)")
    cluster_group = clu.add_argument_group("clustering (ClusterConfig, defaults from the dataclass)")
    cluster_group.add_argument(
        "--k",
        dest="cluster_k",
        default=argparse.SUPPRESS,
        metavar="N|auto",
        help="a fixed number of clusters, or 'auto' for the knee rule over --k-min..--k-max (default: auto)",
    )
    clu.set_defaults(
        func=cmd_personas_cluster, cluster_options=add_config_options(cluster_group, ClusterConfig, exclude=("k",))
    )

    idx = p_sub.add_parser(
        "index", parents=[common, embed], help="build the FAISS memory index (Ml + item descriptions)"
    )
    idx.add_argument("--personas", required=True, help="personas directory")
    idx.add_argument("--split", required=True, help="the split the personas were made from (for item descriptions)")
    idx.set_defaults(func=cmd_personas_index)
