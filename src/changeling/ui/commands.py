"""The command lines of the UI's jobs: the same ``changeling`` commands a user would type, their settings
flags written by :func:`changeling.config.schema.settings_to_argv` for the fields the tab shows (the rest
come from the project's ``changeling.toml``, as for a typed command). Pure functions; no Gradio."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from changeling.config import ConvertSettings, ExtractSettings, MasksSettings, TrainSettings
from changeling.config.schema import settings_to_argv
from changeling.errors import UserError
from changeling.project import Project
from changeling.vocab import SIDES


def extract_args(project: Project, side: str, inputs: Sequence[Path], settings: ExtractSettings,
                 fields: Sequence[str]) -> list[str]:
    """``changeling extract`` of ``inputs`` for ``side``, with ``fields`` of ``settings``."""
    if side not in SIDES:
        raise UserError(f"side must be A or B, got {side!r}")
    if not inputs:
        raise UserError(f"choose or upload videos or images of {side} first")
    return ["extract", "-p", str(project.root), "--side", side, *map(str, inputs),
            *settings_to_argv(settings, fields)]


def train_args(project: Project, settings: TrainSettings, fields: Sequence[str], current_step: int, steps: int,
               minutes: float) -> list[str]:
    """``changeling train`` for this run: ``steps`` more steps and/or ``minutes`` of training (0: no limit)."""
    if steps < 0 or minutes < 0:
        raise UserError("steps and minutes must not be negative")
    # the trainer's --max-steps counts all steps; 0 in the form means "no limit this run"
    run = dataclasses.replace(settings, max_steps=current_step + int(steps) if steps else 0,
                              max_time=float(minutes) * 60 if minutes else 0.0)
    return ["train", "-p", str(project.root), *settings_to_argv(run, dict.fromkeys([*fields, "max_steps",
                                                                                      "max_time"]))]


def convert_args(project: Project, source: Path, output: Path, settings: ConvertSettings,
                 fields: Sequence[str]) -> list[str]:
    """``changeling convert`` of ``source`` into ``output``, with ``fields`` of ``settings``."""
    return ["convert", "-p", str(project.root), str(source), "-o", str(output), *settings_to_argv(settings, fields)]


def masks_train_args(project: Project, settings: MasksSettings, fields: Sequence[str]) -> list[str]:
    """``changeling masks train``: a first segmenter, or fine-tuning the project's on its hand corrections."""
    return ["masks", "train", "-p", str(project.root), *settings_to_argv(settings, fields)]
