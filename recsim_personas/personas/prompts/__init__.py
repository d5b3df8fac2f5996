"""Versioned prompt templates (``string.Template`` files: ``$name`` placeholders).

A template is addressed as ``<name>_v<version>.<part>.txt``; the version is recorded in every artifact
made with it, so a change of wording is a new file and a new version, never an edit in place.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template


@cache
def load_template(name: str, version: int, part: str) -> Template:
    """Load ``<name>_v<version>.<part>.txt`` from this package."""
    filename = f"{name}_v{version}.{part}.txt"
    try:
        text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt template {filename!r} is not in {__name__}") from None
    return Template(text)
