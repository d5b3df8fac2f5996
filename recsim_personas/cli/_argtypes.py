"""``argparse`` types shared by the subcommands (argparse turns their errors into a usage message)."""

from __future__ import annotations

import argparse


def non_negative_int(value: str) -> int:
    """``int(value)`` if it is ≥ 0, else an ``argparse.ArgumentTypeError`` naming the value."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return n


def positive_int(value: str) -> int:
    """``int(value)`` if it is ≥ 1, else an ``argparse.ArgumentTypeError`` naming the value."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def users_arg(value: str) -> int | None:
    """A positive integer, or ``"all"`` (→ ``None``)."""
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}")
    return n


def seeds_arg(value: str) -> tuple[int, ...]:
    """Distinct comma-separated non-negative integers, e.g. ``"0,1,2"``."""
    try:
        seeds = tuple(int(s) for s in value.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {value!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated non-negative integers, got {value!r}")
    return seeds
