"""``recsim-personas userllm pretrain`` (the user encoder, pretrained on a split's history) and ``userllm train``
(a USER-LLM agent: the encoder's user tokens read by a frozen text backbone)."""

from __future__ import annotations

import argparse
from typing import Any

from recsim_personas.cli._argtypes import positive_int
from recsim_personas.cli._options import add_config_options
from recsim_personas.cli._output import emit
from recsim_personas.cli.agents import _threads


def register_userllm(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``userllm pretrain`` (``common`` brings --json, -v, --no-progress)."""
    from recsim_personas.agents.userllm.config import (
        PretrainConfig,
        UserEncoderConfig,
        UserLLMConfig,
        UserLLMTrainConfig,
    )

    group = sub.add_parser("userllm", help="USER-LLM embedding agents: the user encoder")
    userllm_sub = group.add_subparsers(dest="userllm_command", required=True, metavar="COMMAND")
    pre = userllm_sub.add_parser(
        "pretrain",
        parents=[common],
        help="pretrain the user encoder on next-event prediction over a split's history",
        description="Pretrain the user encoder (per-event fusion of movie id, genres, rating, release year and"
        " time gap; a small causal Transformer) to predict each next event — its movie, genres and rating —"
        " over the split's history (train part + background users; never a test rating), and save it with a"
        " manifest. Rerun the same command to resume an interrupted run. Reports next-item Recall@10 /"
        " NDCG@10 on the test part.",
    )
    pre.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    pre.add_argument("--out", required=True, help="the encoder directory to create (or resume)")
    pre.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished encoder, or an unfinished run with other settings, at --out",
    )
    pre.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    encoder = add_config_options(pre.add_argument_group("encoder (UserEncoderConfig)"), UserEncoderConfig)
    training = add_config_options(pre.add_argument_group("pretraining (PretrainConfig)"), PretrainConfig)
    pre.set_defaults(func=cmd_userllm_pretrain, encoder_options=encoder, pretrain_options=training)

    tr = userllm_sub.add_parser(
        "train",
        parents=[common],
        help="train a USER-LLM agent (user tokens + frozen text backbone) on a split's history ratings",
        description="Train a USER-LLM agent: the pretrained encoder's user tokens (Perceiver-compressed and"
        " projected) enter a frozen text backbone reading the movie's description, by gated cross-attention"
        " after chosen layers or as a soft prompt; a rating head, anchored on a classical prior, gives the"
        " rating distribution. Strategies full / enc / lora / proj choose what trains. Rerun the same command to"
        " resume an interrupted run. Use the result as a rater: userllm:DIR (or agents:DIR).",
    )
    tr.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    tr.add_argument("--encoder", required=True, help="the user encoder (from `userllm pretrain`) of this split")
    tr.add_argument("--out", required=True, help="the agent directory to create (or resume)")
    tr.add_argument(
        "--overwrite", action="store_true", help="replace a finished agent, or an unfinished run with other settings"
    )
    tr.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    tr.add_argument(
        "--personas",
        default=None,
        help="the split's personas, clustered (`personas distill` + `personas cluster`): their clusters choose the"
        " adapters of --lora-per-persona",
    )
    arch = add_config_options(tr.add_argument_group("architecture (UserLLMConfig)"), UserLLMConfig)
    fit = add_config_options(tr.add_argument_group("training (UserLLMTrainConfig)"), UserLLMTrainConfig)
    tr.set_defaults(func=cmd_userllm_train, arch_options=arch, train_options=fit)


def cmd_userllm_pretrain(args: argparse.Namespace) -> int:
    from recsim_personas.agents.userllm.pretrain import pretrain_encoder
    from recsim_personas.data import load_split

    _threads(args)
    split = load_split(args.split)
    result = pretrain_encoder(
        split,
        args.out,
        encoder_config=args.encoder_options.build(args),
        config=args.pretrain_options.build(args),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    r = result.report
    test = r["test"]
    payload: dict[str, Any] = {"out": args.out, "split_id": result.split_id, "report": r}
    text = "\n".join(
        [
            f"user encoder ({r['parameters']:,} parameters) pretrained on {r['events']:,} events of"
            f" {r['train_users']} users in {r['seconds']:.0f} s; best epoch {r['best_epoch']} of {r['epochs_run']}"
            f" (validation loss {r['best_valid_loss']:.3f}); saved to {args.out}",
            f"next item on the test part ({test['users']} users, full ranking): Recall@10 {test['recall@10']:.4f},"
            f" NDCG@10 {test['ndcg@10']:.4f}, MRR@10 {test['mrr@10']:.4f}",
        ]
    )
    emit(args, payload, text)
    return 0


def cmd_userllm_train(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from recsim_personas.agents.fidelity import evaluate_rater
    from recsim_personas.agents.userllm.train import train_userllm
    from recsim_personas.data import load_split

    _threads(args)
    split = load_split(args.split)
    train = args.train_options.build(args)
    clusters = None
    if train.lora_per_persona and args.personas:
        from pathlib import Path

        from recsim_personas.agents.adapters import cluster_map
        from recsim_personas.personas.clustering import load_clusters
        from recsim_personas.personas.store import load_persona_set

        pset = load_persona_set(args.personas, split_id=split.split_id)
        clusters = cluster_map(load_clusters(Path(args.personas) / "clusters", pset), split.user_ids, "persona")
    agent = train_userllm(
        split,
        args.encoder,
        args.out,
        config=args.arch_options.build(args),
        train=train,
        clusters=clusters,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    r = agent.report
    row = evaluate_rater(agent, split.test)
    payload: dict[str, Any] = {"out": args.out, "split_id": agent.split_id, "report": r, "test": asdict(row)}
    text = "\n".join(
        [
            f"USER-LLM agent ({agent.train_config.strategy}, {agent.model.config.integration},"
            f" {r['trainable_parameters']:,} of {r['parameters']:,} parameters trained) on {r['train_ratings']:,}"
            f" history ratings in {r['seconds']:.0f} s; best epoch {r['best_epoch']} of {r['epochs_run']}"
            f" (validation NLL {r['best_valid_nll']:.4f}, untrained {r['initial_valid_nll']:.4f}); saved to {args.out}",
            f"test part ({row.n:,} ratings): RMSE {row.rmse_expected:.4f}, MAE {row.mae_expected:.4f} at the mean;"
            f" NLL {row.nll:.4f}; rating-histogram W1 {row.w1:.4f}",
        ]
    )
    emit(args, payload, text)
    return 0
