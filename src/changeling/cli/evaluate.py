"""``changeling evaluate``: the paired benchmark's scores and plot."""

from __future__ import annotations

import argparse
import json

from changeling.cli.common import add_common
from changeling.errors import UserError
from changeling.project import open_project
from changeling.vocab import DEVICES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score the swap on the paired benchmark (SSIM, PSNR, detail at view size)",
                       description="Score the project's checkpoints on a held-out synthetic motion sequence whose "
                       "ideal swap is known (the same motion applied to B), at the view size and at the model's "
                       "resolution; write output/scores.json and a quality-versus-training-time plot "
                       "output/quality.png.")
    p.add_argument("--latest", action="store_true", help="score only the newest checkpoint")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the held-out sequence (default: 4)")
    p.add_argument("--view-size", type=int, default=256, metavar="PX",
                   help="side of the fixed view the swap is scored in (the whole face; default: 256, about a "
                        "face in a 720p frame)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changeling.evaluate.paired import PairedSpec
    from changeling.evaluate.project import evaluate_project, format_identity, format_scores, verdict_line

    if not 64 <= args.view_size <= 1024:
        raise UserError(f"--view-size must be between 64 and 1024 pixels, got {args.view_size}")
    project = open_project(args.project)
    result = evaluate_project(project, spec=PairedSpec(seconds=args.seconds, view_size=args.view_size),
                              device=args.device,
                              latest_only=args.latest, progress=not args.quiet)
    if args.json:
        print(json.dumps(result.rows, indent=2))
    else:
        print(format_scores(result.rows))
        last = result.latest
        print(f"newest model: {verdict_line(last)}")
        print(format_identity(last.get("identity")))
        print(f"scores: {result.json_path}\nplot:   {result.plot_path}")
    return 0
