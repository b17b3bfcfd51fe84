"""Pieces shared by the subcommands: common options, and the settings flags generated from the dataclasses
(:mod:`changeling.config.schema`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from changeling.config import with_flags
from changeling.config.schema import add_settings_flags, flags_of
from changeling.project import Project, open_project


def add_common(parser: argparse.ArgumentParser, *, project: bool = True) -> None:
    if project:
        parser.add_argument("--project", "-p", type=Path, default=Path("."),
                            help="project folder (default: the current folder)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def project_and_settings(args: argparse.Namespace, section: str, *, create: bool = False) -> tuple[Project, Any]:
    """Open the project and resolve one section's settings: defaults, then TOML, then flags."""
    project = open_project(args.project, create=create)
    base = getattr(project.settings(), section)
    return project, with_flags(base, flags_of(args, type(base)))


def not_built(name: str) -> int:
    print(f"changeling {name}: not built yet")
    return 2


__all__ = ["add_common", "add_settings_flags", "flags_of", "not_built", "project_and_settings"]
