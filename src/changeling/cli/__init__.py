"""The ``changeling`` command: a thin shell over the Python API. Each subcommand lives in its own module with
``register(subparsers)``; user mistakes (``UserError``) print one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from changeling import __version__
from changeling.cli import (
    bench,
    convert,
    demo,
    evaluate,
    extract,
    faces,
    init,
    live,
    masks,
    train,
    ui,
    verify,
)
from changeling.errors import InterruptedRun, UserError
from changeling.threads import allow_worker_processes

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_COMMANDS = (init, extract, train, convert, live, verify, evaluate, demo, ui, bench, faces, masks)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="changeling", description=(
        "Face-swap toolkit: extract faces, train a model for a pair of people, render the swap. Every output is "
        "marked as synthetic. Swapping a person's face without their consent is not what this tool is for."))
    parser.add_argument("--version", action="version", version=f"changeling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _COMMANDS:
        module.register(sub)
    return parser


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    # library warnings (Pillow on a damaged image, ...) become one log line, not a source listing
    warnings.showwarning = _warning_to_log


def _warning_to_log(message: Warning | str, category: type[Warning], *_args: object, **_kw: object) -> None:
    logging.getLogger("changeling").warning("%s: %s", category.__name__, message)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    allow_worker_processes()  # our entry points are guarded: spawned workers do not rerun the command
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"changeling {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InterruptedRun as exc:
        print(f"changeling {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"changeling {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        logging.getLogger("changeling").exception(
            "changeling %s: unexpected failure (a bug; please report it with the lines above)", args.command)
        return EXIT_FAILURE
