"""``changeling evaluate``: the paired benchmark's scores and plot."""

from __future__ import annotations

import argparse

from changeling.cli.common import add_common, not_built


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score the swap on the paired benchmark (SSIM, PSNR, landmarks)",
                       description="Score the project's model on a held-out synthetic motion sequence whose "
                       "ideal swap is known; write a table, JSON, and a quality-versus-time plot.")
    p.add_argument("--frames", type=int, default=48, help="held-out frames to score (default: 48)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return not_built("evaluate")
