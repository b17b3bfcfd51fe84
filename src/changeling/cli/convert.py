"""``changeling convert``: render the swap into a video."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common, add_settings_flags, not_built, project_and_settings
from changeling.config import ConvertSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="render the swap into a video or images", description=(
        "Swap the faces in a video of A with B's (or the reverse), keep A's audio, and mark the output as "
        "synthetic (watermark and metadata). Written under a temporary name until complete."))
    p.add_argument("input", type=Path, help="the video (or images) to convert")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output file (.mp4, .mkv) or folder for images (default: PROJECT/output/NAME_swap.mp4)")
    p.add_argument("--preview", type=int, default=None, metavar="FRAME",
                   help="write a side-by-side PNG (original | swapped | mask) of this frame for each colour mode")
    p.add_argument("--writer", choices=["video", "images", "patches"], default="video",
                   help="what to write: a video, an image sequence, or swapped patches with their transforms")
    p.add_argument("--reference", type=Path, nargs="*", default=None,
                   help="images of the person to replace (with --which reference)")
    p.add_argument("--swap-direction", action="store_true", help="swap B's faces to A instead (same as "
                   "--direction b2a)")
    add_common(p)
    add_settings_flags(p, ConvertSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project_and_settings(args, "convert")
    return not_built("convert")
