"""The ``recsim-personas agents`` subcommands: ``train`` persona-LoRA adapters, ``eval`` their fidelity, ``export``
them for a serving engine (vLLM).

Registered by :mod:`recsim_personas.cli` with :func:`register_agents`. ``agents train``'s options are generated
from :class:`~recsim_personas.agents.backbone_config.BackboneConfig` and
:class:`~recsim_personas.agents.train_config.LoraTrainConfig` (light modules), so each default is stated once, in
the dataclass; ``recsim-personas --help`` does not import torch (the handlers import what they need).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsim_personas.agents.agent_artifact import load_world
from recsim_personas.agents.backbone_config import BackboneConfig
from recsim_personas.agents.precision import INFERENCE_DTYPES
from recsim_personas.agents.train_config import ANCHORS, LoraTrainConfig
from recsim_personas.cli._argtypes import non_negative_int, positive_int
from recsim_personas.cli._options import ConfigOptions, add_config_options

if TYPE_CHECKING:
    from recsim_personas.agents.agent_report import ReportEntry


def register_agents(
    subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add ``agents train``, ``eval`` and ``export`` to ``subparsers`` (``common_parent``: --json, -v, ...)."""
    agents = subparsers.add_parser("agents", help="train persona-LoRA SLM agents and evaluate their fidelity")
    sub = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")

    world = argparse.ArgumentParser(add_help=False)
    world.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    world.add_argument(
        "--personas", required=True, help="personas directory with clusters/ and memory/ (from `personas ...`)"
    )
    world.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")

    tr = sub.add_parser(
        "train",
        parents=[common_parent, world],
        help="train one LoRA adapter per persona cluster (or one for all users) on RAFT data",
        description="Fine-tune LoRA adapters of a small model on the split's train ratings (RAFT: the user's Ms,"
        " the --memories most similar other train memories, the movie -> the real rating). Early stopping on the"
        " latest 10% of each user's train ratings. Resumable: rerun the same command after an interruption.",
    )
    backbone = tr.add_argument_group("backbone (BackboneConfig)")
    tr.set_defaults(
        backbone_options=add_config_options(
            backbone, BackboneConfig, fields=("kind", "model", "max_length"), rename={"kind": "backbone"}
        )
    )
    training = tr.add_argument_group("training (LoraTrainConfig)")
    tr.set_defaults(train_options=add_config_options(training, LoraTrainConfig))
    tr.add_argument("--out", default=None, help="artifact directory (default: PERSONAS/agents/<backbone>-<variant>-…)")
    tr.add_argument("--overwrite", action="store_true", help="replace an artifact of another configuration in --out")
    tr.set_defaults(func=cmd_agents_train)

    ev = sub.add_parser(
        "eval",
        parents=[common_parent, world],
        help="score trained agents (and the prompt-only SLM) beside classical raters on the test ratings",
        description="Score each --agents directory (persona agents as trained, and with --memories K also with K"
        " memories; a USER-LLM agent from `userllm train` as trained), the prompt-only causal SLM (--prompt-only)"
        " and classical raters on the same test ratings: RMSE, MAE, URR, rating-histogram distances, overall and"
        " per persona cluster.",
    )
    ev.add_argument(
        "--agents",
        nargs="*",
        default=[],
        help="trained agent directories (from `agents train`, or USER-LLM agents from `userllm train`)",
    )
    ev.add_argument(
        "--memories",
        type=non_negative_int,
        default=None,
        help="also score each persona-agent directory with K memories (e.g. 0)",
    )
    ev.add_argument("--prompt-only", action="store_true", help="also score the base causal LM without adapters")
    ev.add_argument("--model", default=None, help="causal model of --prompt-only (default: smollm2)")
    ev.add_argument("--anchor", choices=ANCHORS, default="none", help="anchoring of --prompt-only (default: none)")
    ev.add_argument("--urr-sample", type=non_negative_int, default=100, help="free-generation answers for the URR")
    ev.add_argument("--raters", default="bias,mf", help="classical raters beside the agents (default: bias,mf)")
    ev.add_argument("--max-test", type=positive_int, default=None, help="score a seeded sample of N test ratings")
    ev.add_argument("--batch-size", type=positive_int, default=32, help="prompts per forward pass (default: 32)")
    ev.add_argument(
        "--dtype",
        choices=INFERENCE_DTYPES,
        default="auto",
        help="inference precision of the agents' weights (default: auto = measured once per machine on the"
        " agents' own forward: bfloat16 only where it is faster and moves expected ratings by < 0.01; cached)",
    )
    ev.add_argument("--seed", type=non_negative_int, default=0, help="seed of the test sample (default: 0)")
    ev.add_argument("--out", default=None, help="directory for agents_fidelity.md/.json/.png")
    ev.set_defaults(func=cmd_agents_eval)
    ex = sub.add_parser(
        "export",
        parents=[common_parent],
        help="write trained causal persona adapters for a serving engine (vLLM) and print the serve command",
        description="Write each persona adapter of --agents as a PEFT folder a serving engine loads (vLLM:"
        " `--enable-lora --lora-modules persona-0=DIR/persona_0 ...`), with served_names.json (adapter -> served"
        " model name and persona cluster) and a manifest, then print the `vllm serve` command. Rate through the"
        " server with recsim_personas.agents.remote.RemoteRater.",
    )
    ex.add_argument("--format", choices=("vllm",), default="vllm", help="serving layout (default: vllm)")
    ex.add_argument("--agents", required=True, help="trained causal agents directory (from `agents train`)")
    ex.add_argument("--out", required=True, help="export directory")
    ex.add_argument(
        "--base", default=None, help="base model id/directory the server loads (default: the agents' base model)"
    )
    ex.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    ex.set_defaults(func=cmd_agents_export)
    return agents


def cmd_agents_export(args: argparse.Namespace) -> int:
    import shlex

    from recsim_personas.agents.remote import export_vllm
    from recsim_personas.cli._output import emit

    result = export_vllm(args.agents, args.out, base=args.base, overwrite=args.overwrite)
    served = ", ".join(f"{n} -> {a['served_name']}" for n, a in result.adapters.items())
    text = f"exported {len(result.adapters)} adapters to {result.out} ({served}); serve them with:\n"
    emit(args, result.to_dict(), text + shlex.join(result.command))
    return 0


def _threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def cmd_agents_train(args: argparse.Namespace) -> int:
    from recsim_personas.agents.training import train_agents
    from recsim_personas.cli._output import emit

    _threads(args)
    backbone_options: ConfigOptions = args.backbone_options
    train_options: ConfigOptions = args.train_options
    backbone = backbone_options.build(args)
    config = train_options.build(args)
    split, pset, clusters, index = load_world(
        args.split, args.personas, need_clusters=config.variant == "persona", need_index=config.memories > 0
    )
    out = args.out or str(
        Path(pset.path) / "agents" / f"{backbone.kind}-{config.variant}-mem{config.memories}-{config.anchor}"
    )
    result = train_agents(
        split,
        pset,
        clusters,
        index,
        backbone,
        config,
        out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    payload = result.to_dict()
    lines = [f"persona agents in {result.out} ({payload['variant']}, memories {payload['memories']},"]
    lines[0] += f" anchor {payload['anchor']}; {result.seconds:.0f}s)"
    lines.append("| adapter | status | train | valid | epochs | valid NLL before → best |")
    lines.append("|---|---|---|---|---|---|")
    for a in result.adapters:
        lines.append(
            f"| {a.name} | {a.status} | {a.n_train} | {a.n_valid} | {a.epochs} |"
            f" {a.initial_valid_nll:.4f} → {a.best_valid_nll:.4f} |"
        )
    emit(args, payload, "\n".join(lines))
    return 0


def cmd_agents_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from recsim_personas.agents.agent_report import new_report, score_entry
    from recsim_personas.agents.classical import make_rater
    from recsim_personas.agents.persona_agents import PersonaAgents, measure_urr
    from recsim_personas.cli._output import emit_report
    from recsim_personas.envs.world import agents_kind
    from recsim_personas.errors import ConfigError

    _threads(args)
    names = [n.strip() for n in args.raters.split(",") if n.strip()]
    classical = [make_rater(n) for n in names]
    if not args.agents and not args.prompt_only and not classical:
        raise ConfigError("nothing to evaluate: pass --agents DIR ..., --prompt-only and/or --raters.")
    split, pset, clusters, index = load_world(
        args.split, args.personas, need_clusters=(Path(args.personas) / "clusters").is_dir(), need_index=True
    )
    test = split.test
    if args.max_test is not None and args.max_test < len(test):
        rng = np.random.default_rng(args.seed)
        test = test.iloc[np.sort(rng.choice(len(test), size=args.max_test, replace=False))]
    persona_of = dict(clusters.labels) if clusters is not None else None
    report = new_report(test, persona_of, split.split_id)
    progress = not args.no_progress
    history = split.history()
    for rater in classical:
        rater.fit(history)
        report.entries.append(score_entry(rater, test, persona_of, family="classical", variant=rater.name))
    for directory in args.agents:
        if agents_kind(directory) == "userllm":
            entry, note = _score_userllm(directory, split, test, persona_of, args)
            report.entries.append(entry)
            report.notes.append(note)
            continue
        agents = PersonaAgents.load(directory, split, pset, index, batch_size=args.batch_size, dtype=args.dtype)
        report.notes.append(f"{directory}: weights in {agents.dtype} (--dtype {args.dtype}).")
        runs = [agents.memories]
        if args.memories is not None and args.memories != agents.memories:
            runs.append(args.memories)
        for k in runs:
            agents.memories = k
            agents.name = agents.default_name()
            if len(args.agents) > 1:  # several artifacts may share a label: name the directory
                agents.name += f" [{Path(directory).name}]"
            report.entries.append(
                score_entry(
                    agents,
                    test,
                    persona_of,
                    family="agent",
                    variant=agents.variant,
                    memories=k,
                    anchor=agents.prior.name if agents.prior is not None else "none",
                    progress=progress,
                )
            )
    if args.prompt_only:
        k = 1 if args.memories is None else args.memories
        agents = PersonaAgents.prompt_only(
            split,
            pset,
            index,
            backbone=BackboneConfig(kind="causal", model=args.model),
            memories=k,
            anchor=args.anchor,
            batch_size=min(args.batch_size, 16),
            dtype=args.dtype,
        )
        report.notes.append(f"prompt-only {agents.kind} LM: weights in {agents.dtype} (--dtype {args.dtype}).")
        urr = (0.0, "token scoring")
        if args.urr_sample:
            sample = test.iloc[: args.urr_sample]
            value, _ = measure_urr(agents, sample["user_id"].to_numpy(), sample["item_id"].to_numpy())
            urr = (value, f"free greedy generation on {len(sample)} test requests (token scoring itself: 0)")
        report.entries.append(
            score_entry(
                agents,
                test,
                persona_of,
                family="agent",
                variant="prompt",
                memories=k,
                anchor=args.anchor,
                urr=urr,
                progress=progress,
            )
        )
    emit_report(args, report)
    return 0


def _score_userllm(
    directory: str, split: Any, test: Any, persona_of: dict[int, int] | None, args: argparse.Namespace
) -> tuple[ReportEntry, str]:
    """Load the USER-LLM agent in ``directory`` (checked against ``split``) and score it as trained.

    Returns:
        its report entry (family ``"userllm"``, variant = its integration, anchor = its training's anchor) and a
        note for the report naming the directory and how the agent was built.
    """
    from recsim_personas.agents.agent_report import score_entry
    from recsim_personas.agents.userllm.agent import UserLLMAgent

    agent = UserLLMAgent.load(directory, split_id=split.split_id)
    if len(args.agents) > 1:  # several artifacts may share a label: name the directory
        agent.name += f" [{Path(directory).name}]"
    config = agent.model.config
    where = f" after layers {', '.join(map(str, agent.model.cross_layers))}" if agent.model.cross_layers else ""
    note = f"{directory}: USER-LLM agent, {config.integration}{where}, strategy {agent.train_config.strategy}."
    entry = score_entry(
        agent,
        test,
        persona_of,
        family="userllm",
        variant=config.integration,
        anchor=agent.train_config.anchor,
        progress=not args.no_progress,
    )
    return entry, note
