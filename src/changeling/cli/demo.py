"""``changeling demo``: the whole pipeline on the bundled public-domain portraits."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common
from changeling.config.demo import DEMO_PRESET
from changeling.errors import UserError
from changeling.vocab import DEVICES, PRESET_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on built-in sample data", description=(
        "Make a project, generate sample clips from two public-domain portraits, extract, train (the "
        f"{DEMO_PRESET} preset by default), convert, verify the provenance marks and evaluate. Rerunning resumes."))
    p.add_argument("--project", "-p", type=Path, default=Path("demo"), help="project folder (default: demo)")
    p.add_argument("--minutes", type=float, default=10.0, help="total training time in minutes (default: 10)")
    p.add_argument("--preset", default=DEMO_PRESET, choices=PRESET_NAMES,
                   help=f"model preset for a new demo project (default: {DEMO_PRESET})")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to run")
    add_common(p, project=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changeling.demo import run_demo

    if args.minutes <= 0:
        raise UserError(f"--minutes must be positive, got {args.minutes}")
    r = run_demo(args.project, minutes=args.minutes, preset=args.preset, device=args.device,
                 progress=not args.quiet)
    from changeling.evaluate.project import format_identity

    last = r.latest
    print(f"""
changeling demo finished: {r.step} training steps in {r.train_seconds / 60:.1f} minutes
  the swap is {r.verdict_line}
  swapped video:  {r.output}   (provenance: {r.verdict})
  preview grid:   {r.preview_grid or '(none yet)'}
  frame preview:  {r.frame_preview or '(none yet)'}
  quality plot:   {r.plot}
  scores:         {r.scores_json}
  at the model's resolution: masked SSIM to the ideal swap {r.ssim:.3f} (A unchanged would score
                    {r.baseline_ssim:.3f}); landmark error {_num(last.get('view_landmark_error')):.3f} inter-ocular
  {format_identity(last.get('identity'))}
Run `changeling demo --project {r.project} --minutes {args.minutes * 2:g}` to train longer (it resumes).""")
    return 0


def _num(v: object) -> float:
    return float(v) if isinstance(v, (int, float)) else float("nan")
