"""Settings machinery: dataclass defaults, then the project's ``changeling.toml``, then command-line flags.

Each stage owns one settings dataclass (``extract.py``, ``train.py``, ``convert.py``, ``masks.py`` beside this
file). A field's allowed values come from its type (``Literal`` choices, ``int``, ``float``, ``bool``, ``str``)
and from the range :func:`settings_field` records. Unknown keys and bad values raise :class:`UserError` naming
the key, the source (file or flag) and what is allowed. :mod:`changeling.config.schema` turns the same fields
into command-line flags, job command lines and UI widgets.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from changeling.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

S = TypeVar("S")


def _allowed(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_allowed(a) for a in get_args(tp))
    if tp is type(None):
        return "none"
    return f"a {getattr(tp, '__name__', str(tp))}"


def _coerce(tp: Any, value: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise ``ValueError``; strings from flags are parsed."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ValueError
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value)
            except ValueError:
                continue
        raise ValueError
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value)
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise ValueError
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError
    if origin is tuple or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError
        (inner, *_rest) = get_args(tp) or (Any,)
        return tuple(_coerce(inner, v) for v in value) if origin is tuple else [_coerce(inner, v) for v in value]
    if tp is Any:
        return value
    raise ValueError


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply(settings: S, values: Mapping[str, Any], source: str) -> S:
    """Return a copy of ``settings`` with ``values`` applied; reject unknown keys and bad values.

    ``source`` names where the values came from (a file path and section, or "command line") for the message.
    """
    if not dataclasses.is_dataclass(settings):
        raise TypeError("settings must be a dataclass instance")
    hints = _field_types(type(settings))
    fields = {f.name: f for f in dataclasses.fields(settings)}
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise UserError(f"unknown setting {key!r}; known settings are: {known}", source)
        tp = hints[name]
        meta = fields[name].metadata
        try:
            if meta.get("duration") and isinstance(raw, str):
                raw = parse_duration(raw)
            value = _coerce(tp, raw)
        except (ValueError, TypeError):
            raise UserError(f"bad value {raw!r} for {key!r}: expected {_allowed(tp)}", source) from None
        if isinstance(value, float) and not math.isfinite(value):  # nan passes every range check
            raise UserError(f"bad value {raw!r} for {key!r}: must be a finite number", source)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta.get("min"), meta.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                rng = f"from {lo} to {hi}" if lo is not None and hi is not None else (
                    f"at least {lo}" if lo is not None else f"at most {hi}")
                raise UserError(f"bad value {raw!r} for {key!r}: must be {rng}", source)
        check = meta.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                raise UserError(f"bad value {raw!r} for {key!r}: {problem}", source)
        changes[name] = value
    return dataclasses.replace(settings, **changes)  # type: ignore[type-var]


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error becomes a :class:`UserError` naming the file and line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"not valid TOML: {exc}", path) from None
    except UnicodeDecodeError:
        raise UserError("not valid TOML: not UTF-8 text", path) from None
    except RecursionError:
        raise UserError("not valid TOML: nested too deeply", path) from None
    except OSError as exc:  # a folder, or unreadable
        raise UserError(f"cannot be read ({exc.strerror or type(exc).__name__})", path) from None


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1h30m' -> seconds. Raises ``ValueError`` on anything else."""
    m = _DURATION.match(text)
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r}")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + se


def settings_field(default: Any, *, label: str = "", help: str = "",  # noqa: A002
                   min: float | None = None, max: float | None = None,  # noqa: A002
                   step: float | None = None, duration: bool = False) -> Any:
    """A dataclass field with what every surface shows of it (:mod:`changeling.config.schema`): a short
    ``label`` (the UI's widget title), a ``help`` text (the CLI's help, the UI's info line), an allowed range
    ``min``..``max`` (checked by :func:`apply`), a ``step`` (a float with one is a UI slider) and whether a
    float is a ``duration`` in seconds that also takes text such as ``1h30m``."""
    meta: dict[str, Any] = {"help": help, "label": label}
    if duration:
        meta["duration"] = True
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if step is not None:
        meta["step"] = step
    return dataclasses.field(default=default, metadata=meta)
