"""The ``recsim-personas view`` subcommand: one self-contained HTML page of a run (see :mod:`recsim_personas.view`).

Registered by :mod:`recsim_personas.cli` with :func:`register_view`; registering imports nothing heavy.
"""

from __future__ import annotations

import argparse
import contextlib


def register_view(
    subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``view`` subcommand to ``subparsers`` (``common_parent`` brings --json, -v, --no-progress)."""
    p = subparsers.add_parser(
        "view",
        parents=[common_parent],
        help="a browser page of a run: the gap report, who the simulated users are, their sessions",
        description="Write RUN_DIR/view.html, one self-contained page (plotly.js and the data inlined: it opens"
        " offline in any browser, from disk, with nothing running): the gap report's offline vs simulated figures"
        " with their intervals and the fidelity suite's beside them; the traced users (persona, traits, cluster,"
        " real history vs simulated watches, rating histograms); each session replayed page by page (the slates,"
        " the rater's distribution and the chance to watch for each shown movie, what was watched and rated, the"
        " exit); two policies side by side on the same user and seed. RUN_DIR is a `benchmark --out` (with"
        " --trace-users N for sessions) or a `simulate --trace` directory. --port N also serves it on"
        " http://127.0.0.1:N until interrupted.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="a `benchmark --out` or `simulate --trace` directory")
    p.add_argument("--split", default=None, help="the traced users' split (default: the one the traces record)")
    p.add_argument("--personas", default=None, help="a personas directory: persona texts and clusters of the users")
    p.add_argument("--fidelity", default=None, help="a fidelity suite (`fidelity --out`) to show beside the report")
    p.add_argument("--out", default=None, help="the HTML file to write (default: RUN_DIR/view.html)")
    p.add_argument("--port", type=int, default=None, help="also serve the page on http://127.0.0.1:PORT")
    p.set_defaults(func=cmd_view)
    return p


def cmd_view(args: argparse.Namespace) -> int:
    """Write the page; print its path and how to open it (serve it with ``--port``)."""
    from pathlib import Path

    from recsim_personas.cli._output import emit
    from recsim_personas.errors import ConfigError
    from recsim_personas.view import write_view

    if args.port is not None and not 0 < args.port < 65536:
        raise ConfigError(f"--port must be a TCP port (1..65535), got {args.port}.")
    path = write_view(args.run, args.out, split=args.split, personas=args.personas, fidelity=args.fidelity).resolve()
    url = path.as_uri()
    payload = {"file": str(path), "url": url, "bytes": path.stat().st_size}
    text = f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, self-contained)\nopen it: {url}"
    if args.port is not None:
        payload["served"] = f"http://127.0.0.1:{args.port}/{path.name}"
        text += f"\nserving {payload['served']} (Ctrl-C stops it)"
    emit(args, payload, text)
    if args.port is not None:
        import functools
        import http.server

        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(Path(path).parent))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
        with server, contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0
