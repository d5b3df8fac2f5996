"""What every subcommand prints: human-readable text, or exactly one JSON object with ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """Print ``payload`` as one JSON line (``--json``) or ``text``."""
    if args.json:
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def emit_report(args: argparse.Namespace, report: Any) -> None:
    """Save ``report`` into ``args.out`` (when given) and emit it: its dict (+ ``files``) or its markdown."""
    paths = report.save(args.out) if args.out else {}
    payload = report.to_dict()
    payload["files"] = {k: str(v) for k, v in paths.items()}
    text = report.to_markdown()
    if paths:
        text += "\n\nreport: " + ", ".join(str(p) for p in paths.values())
    emit(args, payload, text)
