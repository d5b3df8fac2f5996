"""The ``recsim-personas`` command line: one package, a module per command group.

The only place that parses argv, configures logging or turns library errors into exit codes; no library
package imports it. Every subcommand prints human-readable output by default; with ``--json`` it prints
exactly one JSON object on stdout (logs and progress bars go to stderr). A library error
(:class:`~recsim_personas.errors.RecsimPersonasError`) prints one ``error: ...`` line on stderr and exits with
status 2.

Modules: :mod:`.data` (``data prepare`` / ``data info``), :mod:`.eval` (``eval``), :mod:`.personas`
(``personas distill`` / ``cluster`` / ``index``), :mod:`.agents` (``agents train`` / ``eval``), :mod:`.simulate`
(``simulate``), :mod:`.benchmark` (``benchmark``), :mod:`.choice` (``choice fit``, ``fidelity``),
:mod:`.userllm` (``userllm pretrain``), :mod:`.ope` (``ope``);
:mod:`._options` generates options from the config dataclasses. Heavy libraries are imported inside the
handlers, so ``recsim-personas --help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from recsim_personas import __version__
from recsim_personas.errors import RecsimPersonasError

logger = logging.getLogger("recsim_personas.cli")


def build_parser() -> argparse.ArgumentParser:
    """The ``recsim-personas`` parser with every subcommand."""
    from recsim_personas.cli.agents import register_agents
    from recsim_personas.cli.benchmark import register_benchmark
    from recsim_personas.cli.choice import register_choice
    from recsim_personas.cli.data import register_data
    from recsim_personas.cli.eval import register_eval
    from recsim_personas.cli.ope import register_ope
    from recsim_personas.cli.personas import register_personas
    from recsim_personas.cli.simulate import register_simulate
    from recsim_personas.cli.userllm import register_userllm
    from recsim_personas.cli.view import register_view

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
    for register in (
        register_data,
        register_eval,
        register_personas,
        register_simulate,
        register_benchmark,
        register_choice,
        register_agents,
        register_userllm,
        register_ope,
        register_view,
    ):
        register(sub, common)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 a library error, 130 interrupted)."""
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
