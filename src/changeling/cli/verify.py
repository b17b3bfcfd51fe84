"""``changeling verify FILE``: are the provenance marks there?"""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common, not_built


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a video or image for changeling's provenance marks", description=(
        "Report whether a file carries changeling's invisible watermark (in how many sampled frames), its "
        "synthetic-media metadata and a C2PA manifest, and give a verdict."))
    p.add_argument("files", nargs="+", type=Path, help="videos or images to check")
    p.add_argument("--frames", type=int, default=16, help="frames to sample from a video (default: 16)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_common(p, project=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return not_built("verify")
