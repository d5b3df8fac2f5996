"""Command-line options generated from the config dataclasses, so a default is stated once: in the dataclass.

:func:`add_config_options` adds one ``--flag`` per dataclass field (``lr`` → ``--lr``, ``batch_size`` →
``--batch-size``), with the field's type (``int``, ``float``, ``str``, ``bool`` as ``--x/--no-x``, a
``Literal`` as choices, ``X | None`` as ``X``), the help text of the class docstring's ``Attributes:`` entry
and the dataclass default shown in the help. A flag that is not given is absent from the parsed namespace, so
:meth:`ConfigOptions.build` passes only what the user set and the dataclass supplies every other default.
A config file (JSON or TOML, :func:`load_config_file`) may give a base the single flags override.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from recsim_personas.errors import ConfigError, config_from_dict

_ATTR_LINE = re.compile(r"^(\s+)([A-Za-z_][\w, ]*):\s*(.*)$")


def field_help(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a Google-style class docstring, as ``{field: one-line help}``.

    An entry naming several fields (``a, b, c: text``) gives each the same text; continuation lines are joined.
    """
    doc = cls.__doc__ or ""
    lines = doc.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    indent: int | None = None
    current: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            if indent is not None:
                break
            continue
        m = _ATTR_LINE.match(line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            current = [n.strip() for n in m.group(2).split(",")]
            for name in current:
                out[name] = m.group(3).strip()
        elif indent is not None and len(line) - len(line.lstrip()) > indent:
            for name in current:
                out[name] = f"{out[name]} {line.strip()}".strip()
        else:
            break
    return {k: _plain(v) for k, v in out.items()}


def _plain(text: str) -> str:
    """Docstring markup → plain help text (argparse also needs ``%`` doubled)."""
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m.group(1).split(".")[-1], text)
    return text.replace("``", "").replace("%", "%%")


def _flag(name: str, prefix: str) -> str:
    return "--" + prefix + name.replace("_", "-")


def _arg_spec(hint: Any) -> dict[str, Any] | None:
    """argparse keyword arguments for a field's type hint, or None when the type has no flag form."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        return _arg_spec(members[0]) if len(members) == 1 else None
    if origin is Literal:
        choices = typing.get_args(hint)
        return {"choices": list(choices), "type": type(choices[0])}
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float, str):
        return {"type": hint}
    if origin is tuple and typing.get_args(hint)[-1:] == (Ellipsis,):
        item = typing.get_args(hint)[0]
        if item in (int, float, str):
            return {"type": lambda v, item=item: tuple(item(x.strip()) for x in v.split(",") if x.strip())}
    return None


@dataclasses.dataclass(frozen=True)
class ConfigOptions:
    """The flags :func:`add_config_options` added for one config dataclass.

    Attributes:
        cls: the config dataclass.
        flags: ``{field name: namespace attribute}`` of every generated flag.
    """

    cls: type
    flags: Mapping[str, str]

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """The fields set on the command line (flags that were not given are absent)."""
        return {name: getattr(args, dest) for name, dest in self.flags.items() if hasattr(args, dest)}

    def build(self, args: argparse.Namespace, base: Mapping[str, Any] | None = None, **fixed: Any) -> Any:
        """The config: ``base`` (e.g. a config file's fields), then the given flags, then ``fixed`` values.

        Raises:
            ConfigError: an unknown field in ``base`` or a value the dataclass refuses (its message names the
                field and the value).
        """
        values = {**(base or {}), **self.given(args), **fixed}
        return config_from_dict(self.cls, values, f"{self.cls.__name__} field")


def add_config_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    prefix: str = "",
    rename: Mapping[str, str] | None = None,
    help: Mapping[str, str] | None = None,
    types: Mapping[str, Callable[[str], Any]] | None = None,
) -> ConfigOptions:
    """Add a ``--flag`` for each field of the config dataclass ``cls``.

    Args:
        parser: the parser (or argument group) to add the flags to.
        cls: a dataclass whose docstring has an ``Attributes:`` section.
        fields: the fields to expose (default: every field whose type has a flag form).
        exclude: fields not to expose.
        prefix: prefix of every flag (``"session-"`` → ``--session-max-pages``).
        rename: ``{field: flag without "--"}`` for flags that read better under another name.
        help: ``{field: text}`` replacing the docstring's help.
        types: ``{field: argparse type}`` replacing the one of the field's type hint (e.g. one that also
            accepts ``all`` for ``None``).

    Returns:
        the :class:`ConfigOptions` to build the config from the parsed arguments with.
    """
    hints = typing.get_type_hints(cls)
    docs = field_help(cls)
    rename, help, types = rename or {}, help or {}, types or {}
    wanted = None if fields is None else list(fields)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for name in wanted or ():
        if name not in by_name:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
    flags: dict[str, str] = {}
    dest_prefix = f"_{cls.__name__}_"
    for name in wanted or list(by_name):
        if name in exclude:
            continue
        spec = _arg_spec(hints[name])
        if spec is None:
            if wanted is not None:
                raise ValueError(f"{cls.__name__}.{name} has no command-line form ({hints[name]!r})")
            continue
        f = by_name[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        text = help.get(name) or docs.get(name) or name.replace("_", " ")
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = text.rstrip(".") + (f" (default: {shown})" if default is not None else "")
        flag = "--" + rename[name] if name in rename else _flag(name, prefix)
        dest = dest_prefix + name
        if "choices" not in spec and "action" not in spec:
            spec["metavar"] = {int: "N", float: "X"}.get(spec["type"], "VALUE")
        if name in types:
            spec["type"] = types[name]
        parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=text, **spec)
        flags[name] = dest
    return ConfigOptions(cls, flags)


def load_config_file(path: str | Path, what: str) -> dict[str, Any]:
    """The fields of a config file: a JSON object (``.json``) or a TOML table (``.toml``).

    Raises:
        ConfigError: the file is missing, unreadable, not JSON/TOML, or not an object (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist. Fix: pass a JSON or TOML file.")
    try:
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {str(p)!r} is not UTF-8 text. Fix: save it as UTF-8 JSON or TOML.") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{what} file {str(p)!r}: not valid JSON ({exc.msg} at line {exc.lineno}). Fix: correct the file (a"
            " .toml file is read as TOML)."
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} file {str(p)!r}: not valid TOML ({exc}). Fix: correct the file.") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{what} file {str(p)!r} holds a JSON {type(data).__name__}, not an object of fields. Fix: write"
            ' {"field": value, ...}.'
        )
    return data
