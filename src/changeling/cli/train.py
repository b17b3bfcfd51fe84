"""``changeling train``: learn one model for the pair A, B."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from changeling.cli.common import add_common, add_settings_flags, project_and_settings
from changeling.config import TrainSettings
from changeling.errors import InterruptedRun

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the model for A and B (resumes where it stopped)", description=(
        "Train one model for the pair: a shared encoder and a decoder per person. Stops at --max-steps or "
        "--max-time or on Ctrl+C, saving first; run it again to resume. Settings other than the model shape "
        "(preset, resolution, dims) may change on resume."))
    p.add_argument("--init-from", type=Path, default=None,
                   help="start a new model from another project's model folder (encoder weights)")
    p.add_argument("--gpus", type=int, default=None,
                   help="train with N processes on this machine (DistributedDataParallel via torchrun: N GPUs, "
                        "or N CPU processes with --device cpu)")
    add_common(p)
    add_settings_flags(p, TrainSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project, settings = project_and_settings(args, "train")
    from changeling.train import distributed

    if args.gpus is not None and not distributed.launched_by_torchrun():
        return distributed.launch(args.gpus, sys.argv[1:])
    from changeling.train.frame_preview import frame_preview_for
    from changeling.train.loop import train  # torch and the models load only when training

    result = train(project, settings, init_from=args.init_from, progress=not args.quiet,
                   frame_preview=frame_preview_for(project) if settings.preview_every else None)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports for the whole job
    if result.stopped == "interrupted":
        raise InterruptedRun(f"stopped at step {result.step}; saved {result.checkpoint}; run again to resume")
    print(f"step {result.step}: loss A {result.loss_a:.4f}, loss B {result.loss_b:.4f}, "
          f"{result.examples_per_s:.1f} examples/s; model saved in {result.checkpoint}")
    return 0
