"""``changeling verify FILE``: are the provenance marks there?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from changeling.cli.common import add_common
from changeling.errors import UserError

EXIT_MARKED, EXIT_BAD_INPUT, EXIT_NOT_MARKED = 0, 2, 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a video or image for changeling's provenance marks", description=(
        "Report whether a file carries changeling's invisible watermark (in how many sampled frames; also after "
        "crops, scaling, a mirror or re-encoding), its synthetic-media metadata and a C2PA manifest, and give a "
        "verdict. 'Not marked' is no proof that a file is authentic. Exit status: 0 when every file is marked, 3 "
        "when at least one is not, 2 when a file cannot be read (the others are still checked)."))
    p.add_argument("files", nargs="+", type=Path, help="videos or images to check")
    p.add_argument("--frames", type=int, default=16, help="frames to sample from a video (default: 16)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_common(p, project=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changeling.provenance import verify_file

    if args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    reports: list[dict[str, Any]] = []
    status = EXIT_MARKED
    for path in args.files:
        try:
            report = verify_file(path, frames=args.frames)
        except UserError as exc:
            print(f"changeling verify: error: {exc}", file=sys.stderr)
            if args.json:
                reports.append({"path": str(path), "error": str(exc)})
            status = EXIT_BAD_INPUT
            continue
        if report.verdict != "marked" and status == EXIT_MARKED:
            status = EXIT_NOT_MARKED
        if args.json:
            reports.append(report.to_dict())
        else:
            print(report.summary())
    if args.json:
        print(json.dumps(reports if len(args.files) > 1 else reports[0], indent=2, default=str))
    return status
