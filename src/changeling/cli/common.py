"""Pieces shared by the subcommands: common options and settings flags generated from the dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from changeling.config import with_flags
from changeling.project import Project, open_project


def add_common(parser: argparse.ArgumentParser, *, project: bool = True) -> None:
    if project:
        parser.add_argument("--project", "-p", type=Path, default=Path("."),
                            help="project folder (default: the current folder)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def add_settings_flags(parser: argparse.ArgumentParser, cls: type, only: tuple[str, ...] | None = None,
                       title: str = "settings (override changeling.toml)") -> None:
    """One flag per dataclass field, named ``--field-name``; the default ``None`` means 'not given'."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        helptext = f.metadata.get("help", "")
        default = f.default
        kw: dict[str, Any] = {"dest": f.name, "default": None}
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction,
                               help=f"{helptext} (default: {default})", **kw)
            continue
        if get_origin(tp) is Literal:
            kw["choices"] = list(get_args(tp))
        elif f.metadata.get("duration"):
            kw["metavar"] = "DURATION"
        elif tp in (int, float):
            kw["type"] = tp
        group.add_argument(flag, help=f"{helptext} (default: {default})", **kw)


def flags_of(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}


def project_and_settings(args: argparse.Namespace, section: str, *, create: bool = False) -> tuple[Project, Any]:
    """Open the project and resolve one section's settings: defaults, then TOML, then flags."""
    project = open_project(args.project, create=create)
    base = getattr(project.settings(), section)
    return project, with_flags(base, flags_of(args, type(base)))


def not_built(name: str) -> int:
    print(f"changeling {name}: not built yet")
    return 2
