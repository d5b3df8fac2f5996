"""One exception hierarchy for the whole library.

Every error the library raises on bad input derives from :class:`RecsimPersonasError`, so callers can
catch one type; the CLI turns these into a one-line message and exit code 2 instead of a traceback.
Messages say what was expected, what was received, where (file and line for data), and how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any


class RecsimPersonasError(Exception):
    """Base class of every error raised by recsim-personas on bad input or state."""


class ConfigError(RecsimPersonasError, ValueError):
    """A configuration value is invalid (names the field and the bad value)."""


class DataNotFoundError(RecsimPersonasError, FileNotFoundError):
    """A dataset or one of its files could not be found locally or downloaded."""


class DataFormatError(RecsimPersonasError, ValueError):
    """A data file is malformed (names the file, line, field and value)."""


class DownloadError(RecsimPersonasError):
    """A download failed or produced a file that does not match its checksum."""


class ArtifactError(RecsimPersonasError):
    """An artifact (split, report, ...) is missing, incomplete, tampered with, or from other data."""


class UnknownUserError(RecsimPersonasError, KeyError):
    """A user id is not part of the population / split."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownItemError(RecsimPersonasError, KeyError):
    """An item id is not in the catalog of the split."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RaterOutputError(RecsimPersonasError, ValueError):
    """A rater returned something that is not a valid batch of rating distributions."""


class RaterInputError(RecsimPersonasError, ValueError):
    """A batch of rating requests is malformed (shapes, dtypes); names the array and what it holds."""


class InvalidActionError(RecsimPersonasError, ValueError):
    """A slate (an environment action or a policy's output) is malformed: shape, dtype, range or a repeated item.

    A ``ValueError`` too, as Gymnasium users expect of an invalid action.
    """


class PolicyError(RecsimPersonasError):
    """A recommender policy failed to train, load or act (names the policy, what failed and the fix)."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a ' Did you mean ...?' hint for ``name`` among ``choices`` (empty if nothing is close)."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """Build the error for an unknown name among ``choices``, suggesting the closest ones."""
    choices = sorted(choices)
    return ConfigError(f"unknown {kind} {name!r}.{suggest(name, choices)} Choose one of: {', '.join(choices)}.")


def config_from_dict(cls: Any, d: Mapping[str, Any], what: str) -> Any:
    """``cls(**d)`` for a config dataclass, refusing keys that are not its fields.

    ``what`` names them in the message, e.g. ``"protocol config fields"``; the message lists the unknown
    keys, the closest field to the first one and every known field.
    """
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {what} {', '.join(repr(u) for u in unknown)}.{suggest(unknown[0], known)}"
            f" Known: {', '.join(known)}."
        )
    return cls(**d)
