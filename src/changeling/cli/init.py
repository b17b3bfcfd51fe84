"""``changeling init FOLDER``."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common
from changeling.project import init_project


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create a project folder", description=(
        "Create a project folder with faces/, alignments/, model/, previews/, logs/, output/ and a commented "
        "changeling.toml for this swap's settings."))
    p.add_argument("folder", type=Path, help="the project folder to create")
    add_common(p, project=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = init_project(args.folder)
    print(f"project ready: {project.root}")
    print(f"next: changeling extract --project {project.root} --side A VIDEO_OF_A")
    return 0
