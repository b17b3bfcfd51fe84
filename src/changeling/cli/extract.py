"""``changeling extract``: faces of one person from videos, images or folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common, add_settings_flags, not_built, project_and_settings
from changeling.config import ExtractSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="detect, align and save the faces of one person", description=(
        "Find the faces in videos, images or image folders of one person, align them and save them to the "
        "project's faces/SIDE folder, with a per-video alignments file that makes the run resumable."))
    p.add_argument("inputs", nargs="+", type=Path, help="videos, images, folders of images or patterns")
    p.add_argument("--side", required=True, choices=["A", "B"], help="which person these inputs show")
    p.add_argument("--preview", type=Path, default=None,
                   help="also write a PNG with boxes and landmarks drawn on sample frames")
    add_common(p)
    add_settings_flags(p, ExtractSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project_and_settings(args, "extract")
    return not_built("extract")
