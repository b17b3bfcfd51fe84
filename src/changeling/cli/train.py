"""``changeling train``: learn one model for the pair A, B."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common, add_settings_flags, not_built, project_and_settings
from changeling.config import TrainSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the model for A and B (resumes where it stopped)", description=(
        "Train one model for the pair: a shared encoder and a decoder per person. Stops at --max-steps or "
        "--max-time or on Ctrl+C, saving first; run it again to resume. Settings other than the preset may "
        "change on resume."))
    p.add_argument("--init-from", type=Path, default=None,
                   help="start a new model from another project's model folder (encoder weights)")
    p.add_argument("--gpus", type=int, default=None, help="train on N GPUs of this machine (DDP via torchrun)")
    add_common(p)
    add_settings_flags(p, TrainSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project_and_settings(args, "train")
    return not_built("train")
