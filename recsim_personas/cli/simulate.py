"""The ``recsim-personas simulate`` subcommand: run the population for some days under a policy.

Registered by :mod:`recsim_personas.cli` with :func:`register_simulate`. Only ``argparse`` is imported at
module level, so registering the subcommand keeps ``recsim-personas --help`` fast; the handler imports
the simulation when it runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from recsim_personas.cli._argtypes import positive_int
from recsim_personas.cli._options import add_config_options, load_config_file

RATER_HELP = (
    "bias (default), another classical rater (global, user, item, mf), agents:DIR (persona agents from"
    " `agents train --out DIR`, or a USER-LLM agent), userllm:DIR (a USER-LLM agent from `userllm train"
    " --out DIR`), or remote:FILE.json (causal persona agents served by an OpenAI-compatible server:"
    ' {"agents": DIR, "base_url": URL, "served_names": EXPORT_DIR})'
)


def add_session_options(parser: argparse.ArgumentParser) -> None:
    """``--session-config FILE`` and one ``--session-<field>`` flag per :class:`SessionConfig` field.

    The behaviour coefficients come from the file (JSON or TOML, any subset of the fields), then the single
    flags, then the dataclass defaults; :func:`session_config_from` builds the config.
    """
    from recsim_personas.envs.session import SessionConfig

    group = parser.add_argument_group(
        "simulated users' behaviour (SessionConfig; defaults from the dataclass, see envs/session.py)"
    )
    group.add_argument(
        "--session-config",
        default=None,
        metavar="FILE",
        help="SessionConfig fields as a JSON object or a TOML table; --session-* flags override single fields",
    )
    parser.set_defaults(session_options=add_config_options(group, SessionConfig, prefix="session-"))


def add_trace_options(parser: argparse.ArgumentParser) -> None:
    """``--trace DIR`` and ``--trace-users N``: record the sessions of a sample of users (envs.trace)."""
    from recsim_personas.envs.trace import TraceConfig

    defaults = TraceConfig()
    parser.add_argument(
        "--trace",
        default=None,
        metavar="DIR",
        help="record every page of a seeded sample of users' sessions (slates, rating distributions, watch"
        " chances and decisions, ratings, satisfaction, exits) into DIR; `recsim-personas view DIR` shows them",
    )
    parser.add_argument(
        "--trace-users",
        type=positive_int,
        default=defaults.users,
        metavar="N",
        help=f"users traced (a seeded sample; default {defaults.users}); at most {defaults.max_pages:,} pages are"
        " stored",
    )


def session_config_from(args: argparse.Namespace, base: Any = None) -> Any:
    """The :class:`~recsim_personas.envs.session.SessionConfig` of the parsed ``--session-*`` options.

    The file's fields and the single flags apply on top of ``base`` (the sessions that go with the choice
    model, e.g. ``world.session_config``; the dataclass defaults when ``None``). Without any session option
    the result is ``base`` itself (``None`` included: the world's own sessions then apply).
    """
    file = load_config_file(args.session_config, "session config") if args.session_config else None
    if file is None and not args.session_options.given(args):
        return base
    start = base.to_dict() if base is not None else {}
    return args.session_options.build(args, {**start, **(file or {})})


def register_simulate(
    subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to ``subparsers`` (``common_parent`` brings --json, -v, --no-progress)."""
    p = subparsers.add_parser(
        "simulate",
        parents=[common_parent],
        help="simulate days of the user population under a recommender policy",
        description="Build the simulated population of a split (traits, train histories, a rater fitted on the"
        " split's history), then simulate --days days: each day users start sessions (more often when active,"
        " less after unsatisfying sessions) and the policy serves them page by page until they leave. Prints"
        " the per-day metrics (sessions, pages, items shown and watched, mean rating, likes, early exits,"
        " users who stopped returning) and their totals.",
    )
    p.add_argument("--split", required=True, help="split directory (from `data prepare`)")
    p.add_argument("--rater", default="bias", help=RATER_HELP)
    p.add_argument("--policy", default="random", help="random or pop (most popular unseen items); default random")
    p.add_argument("--days", type=positive_int, default=30, help="days to simulate (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="root seed of the run (default: 0)")
    p.add_argument("--slate-size", type=positive_int, default=10, help="items per page (default: 10)")
    p.add_argument(
        "--choice",
        default="fitted",
        help="how users choose: fitted (default; fitted on the split's history), handset, or a `choice fit` directory",
    )
    p.add_argument(
        "--synthetic-users",
        type=positive_int,
        default=None,
        metavar="N",
        help="simulate N synthetic users drawn from the split's users instead of the split's own users"
        " (envs.synthetic.synthetic_world; seeded by --seed)",
    )
    p.add_argument(
        "--clusters",
        default=None,
        metavar="DIR",
        help="with --synthetic-users: draw each synthetic user's template by persona cluster (a clusters directory"
        " from `personas cluster`, e.g. PERSONAS/clusters), in the clusters' real shares",
    )
    add_trace_options(p)
    add_session_options(p)
    p.set_defaults(func=cmd_simulate)
    return p


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the simulation and print the DataCollector summary (JSON with ``--json``)."""
    import time

    import numpy as np

    from recsim_personas.cli._output import emit
    from recsim_personas.data import load_split
    from recsim_personas.envs.model import Population
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.world import make_world
    from recsim_personas.errors import ConfigError, unknown_choice
    from recsim_personas.recommenders.policies import POLICIES, make_policy

    if args.policy not in POLICIES:
        raise unknown_choice("policy", args.policy, POLICIES)
    if args.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {args.seed!r}.")
    if args.clusters is not None and args.synthetic_users is None:
        raise ConfigError("--clusters draws synthetic users' templates; it needs --synthetic-users N.")
    split = load_split(args.split)
    world = make_world(split, args.rater, choice=args.choice)
    if args.synthetic_users is not None:
        from recsim_personas.envs.synthetic import synthetic_world

        labels = None
        if args.clusters is not None:
            from recsim_personas.personas.clustering import load_clusters

            labels = load_clusters(args.clusters).labels
        world = synthetic_world(world, args.synthetic_users, seed=args.seed, clusters=labels)
    if args.slate_size > world.n_items:
        raise ConfigError(f"--slate-size {args.slate_size} exceeds the split's {world.n_items} items.")
    config = session_config_from(args, world.session_config) or SessionConfig()
    population_seed, policy_seed = np.random.SeedSequence(args.seed).spawn(2)
    population = Population(world, config, rng=np.random.default_rng(population_seed))
    policy = make_policy(
        args.policy,
        n_items=world.n_items,
        slate_size=args.slate_size,
        popularity=world.item_popularity,
        seed=policy_seed,
    )
    if args.trace is not None:
        from recsim_personas.envs.trace import TraceConfig, Tracer

        population.tracer = Tracer(world, TraceConfig(users=args.trace_users, seed=args.seed))
    t0 = time.perf_counter()
    summary = population.run_days(args.days, policy, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    payload: dict[str, Any] = {
        "split": str(split.path) if split.path is not None else None,
        "split_id": world.split_id,
        "users": world.n_users,
        "synthetic": args.synthetic_users is not None,
        "clusters": args.clusters,
        "items": world.n_items,
        "rater": world.rater_name,
        "choice": getattr(world.choice, "name", "handset"),
        "policy": policy.name,
        "days": args.days,
        "seed": args.seed,
        "slate_size": args.slate_size,
        "session_config": config.to_dict(),
        "seconds": seconds,
        "per_day": summary["days"],
        "totals": summary["totals"],
    }
    if population.tracer is not None:
        from recsim_personas.envs.trace import write_trace

        keys = ("split", "split_id", "rater", "choice", "policy", "days", "seed", "slate_size", "synthetic")
        about = {k: payload[k] for k in keys}
        payload["trace"] = str(write_trace(population.tracer.result(), args.trace, about))
    emit(args, payload, _render(payload))
    return 0


COLUMNS = (
    ("day", "day"),
    ("sessions", "sessions"),
    ("pages", "pages"),
    ("items_shown", "shown"),
    ("items_watched", "watched"),
    ("mean_rating", "mean rating"),
    ("likes", "likes"),
    ("early_exits", "early exits"),
    ("page_limit", "page limit"),
    ("unsatisfied", "unsatisfied"),
    ("churned_users", "stopped returning"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _render(p: dict[str, Any]) -> str:
    split_id = (p["split_id"] or "")[:12]
    lines = [
        f"simulated {p['days']} days of {p['users']} users (split {split_id}, rater {p['rater']}, policy"
        f" {p['policy']}, seed {p['seed']}, slate {p['slate_size']}) in {p['seconds']:.1f} s",
        "",
        "| " + " | ".join(label for _, label in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in p["per_day"]:
        lines.append("| " + " | ".join(_cell(row[key]) for key, _ in COLUMNS) + " |")
    t = p["totals"]
    total = {**t, "day": "total"}
    lines.append("| " + " | ".join(_cell(total[key]) for key, _ in COLUMNS) + " |")
    lines += [
        "",
        f"watch rate {_cell(t['watch_rate'])}, pages per session {_cell(t['pages_per_session'])},"
        f" {t['churned_users']} of {p['users']} users stopped returning",
    ]
    if p.get("trace"):
        lines.append(f"trace: {p['trace']} (open it with `recsim-personas view {p['trace']}`)")
    return "\n".join(lines)
