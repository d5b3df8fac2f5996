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
