"""``changeling evaluate``: the paired benchmark's scores and plot."""

from __future__ import annotations

import argparse
import json

from changeling.cli.common import add_common
from changeling.project import open_project


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score the swap on the paired benchmark (SSIM, PSNR, recognisable)",
                       description="Score the project's checkpoints on a held-out synthetic motion sequence whose "
                       "ideal swap is known (the same motion applied to B); write output/scores.json and a "
                       "quality-versus-training-time plot output/quality.png.")
    p.add_argument("--latest", action="store_true", help="score only the newest checkpoint")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the held-out sequence (default: 4)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changeling.evaluate.paired import PairedSpec
    from changeling.evaluate.project import evaluate_project, format_identity, format_scores

    project = open_project(args.project)
    result = evaluate_project(project, spec=PairedSpec(seconds=args.seconds), device=args.device,
                              latest_only=args.latest, progress=not args.quiet)
    if args.json:
        print(json.dumps(result.rows, indent=2))
    else:
        print(format_scores(result.rows))
        last = result.latest
        verdict = "recognisable" if last["is_recognisable"] else "not yet recognisable"
        print(f"newest model: {verdict} ({last['recognisable']:.0%} of frames closer to B than to A; "
              f"SSIM to B {last['ssim']:.3f} vs A-unchanged baseline {last['baseline_ssim']:.3f})")
        print(format_identity(last.get("identity")))
        print(f"scores: {result.json_path}\nplot:   {result.plot_path}")
    return 0
