"""Each setting described once, from its dataclass field, and the surfaces built from that description.

A settings field (:func:`changeling.config.core.settings_field`) carries its type, default, label, help text and
range. :func:`setting_specs` reads them into :class:`SettingSpec` records; :func:`add_settings_flags` makes one
command-line flag per field, and :func:`settings_to_argv` is its inverse: the flags that make the parser give
back exactly these settings (the web UI starts its jobs with them). The UI builds its widgets from the same
records (:mod:`changeling.ui.forms`). This lives in ``config/`` rather than ``cli/`` so that library code (the
UI) never imports the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, get_args, get_origin

Kind = Literal["bool", "choice", "int", "float", "duration", "text"]


@dataclass(frozen=True)
class SettingSpec:
    """One setting as every surface shows it. ``min``/``max`` bound numbers (``None``: open); ``step`` is
    the UI's slider step; ``choices`` are a ``choice``'s names."""

    name: str
    kind: Kind
    default: Any
    label: str
    help: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None

    @property
    def flag(self) -> str:
        """The command-line flag: ``--field-name``."""
        return "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        """The range in words (empty when open), for help texts."""
        if self.min is not None and self.max is not None:
            return f"{_num(self.min)} to {_num(self.max)}"
        if self.min is not None:
            return f"at least {_num(self.min)}"
        return f"at most {_num(self.max)}" if self.max is not None else ""


def _num(v: float) -> str:
    return format(v, "g")


def _kind(tp: Any, meta: typing.Mapping[str, Any]) -> Kind:
    if tp is bool:
        return "bool"
    if get_origin(tp) is Literal:
        return "choice"
    if meta.get("duration"):
        return "duration"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is str:
        return "text"
    raise TypeError(f"a setting of type {tp!r} has no flag or widget; use bool, int, float, str or a Literal")


def setting_specs(cls: type, names: Iterable[str] | None = None) -> list[SettingSpec]:
    """The specs of a settings dataclass's fields: all of them in declaration order, or ``names`` in that
    order (``KeyError`` for a name the class does not have: a programming error)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = []
    for name in (list(fields) if names is None else list(names)):
        f, tp = fields[name], hints[name]
        meta = f.metadata
        out.append(SettingSpec(
            name=name, kind=_kind(tp, meta), default=f.default, label=meta.get("label") or name.replace("_", " "),
            help=meta.get("help", ""), choices=tuple(str(a) for a in get_args(tp)) if get_origin(tp) is Literal
            else (), min=meta.get("min"), max=meta.get("max"), step=meta.get("step")))
    return out


def add_settings_flags(parser: argparse.ArgumentParser, cls: type, only: tuple[str, ...] | None = None,
                       title: str = "settings (override changeling.toml)") -> None:
    """One flag per dataclass field, named ``--field-name``; the default ``None`` means 'not given' (the value
    is checked and converted later, by :func:`changeling.config.with_flags`)."""
    group = parser.add_argument_group(title)
    for spec in setting_specs(cls):
        if only is not None and spec.name not in only:
            continue
        shown = _num(spec.default) if spec.kind in ("float", "duration") else spec.default
        extra = "; " + spec.describe_range() if spec.describe_range() else ""
        # argparse %-formats help texts: a literal % in a field's help must reach it doubled
        text = f"{spec.help} (default: {shown}{extra})".replace("%", "%%")
        kw: dict[str, Any] = {"dest": spec.name, "default": None, "help": text}
        if spec.kind == "bool":
            group.add_argument(spec.flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if spec.kind == "choice":
            kw["choices"] = list(spec.choices)
        elif spec.kind == "duration":
            kw["metavar"] = "DURATION"
        elif spec.kind in ("int", "float"):
            kw["type"] = int if spec.kind == "int" else float
        group.add_argument(spec.flag, **kw)


def flags_of(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings flags of a parsed command line (``None``: not given)."""
    return {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}


def format_value(spec: SettingSpec, value: Any) -> str:
    """``value`` as the flag of ``spec`` takes it, exactly: the parser gives back the same value."""
    if spec.kind == "int":
        return str(int(value))
    if spec.kind == "float":
        return repr(float(value))  # the shortest text that reads back as the same float
    if spec.kind == "duration":  # in seconds, without an exponent (the duration syntax has none)
        fixed = format(Decimal(repr(float(value))), "f")
        return (fixed[:-2] if fixed.endswith(".0") else fixed) + "s"
    return str(value)


def settings_to_argv(settings: Any, fields: Iterable[str] | None = None) -> list[str]:
    """The flags that set ``fields`` (default: all) of ``settings``, the inverse of :func:`add_settings_flags`:
    parsed and applied over any base, they give these values back. Values are joined to their flag with ``=``
    so that a negative number is never taken for an option."""
    argv = []
    for spec in setting_specs(type(settings), fields):
        value = getattr(settings, spec.name)
        if spec.kind == "bool":
            argv.append(spec.flag if value else "--no-" + spec.flag[2:])
        else:
            argv.append(f"{spec.flag}={format_value(spec, value)}")
    return argv


__all__ = ["SettingSpec", "add_settings_flags", "flags_of", "format_value", "setting_specs", "settings_to_argv"]
