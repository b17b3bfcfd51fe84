"""``changeling demo``: the whole pipeline on the bundled public-domain portraits."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common, not_built


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on built-in sample data", description=(
        "Make a project, generate sample clips from two public-domain portraits, extract, train the tiny "
        "preset, convert, verify the provenance marks and evaluate. Rerunning resumes."))
    p.add_argument("--project", "-p", type=Path, default=Path("demo"), help="project folder (default: demo)")
    p.add_argument("--minutes", type=float, default=10.0, help="training time in minutes (default: 10)")
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
    add_common(p, project=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return not_built("demo")
