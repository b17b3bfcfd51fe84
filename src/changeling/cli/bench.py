"""``changeling bench``: the benchmark cases."""

from __future__ import annotations

import argparse

from changeling.cli.common import add_common, not_built


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run benchmark cases and record them", description=(
        "Run named benchmark cases (train-<preset>, extract-720p, convert-720p, convert-1080p, "
        "time-to-recognisable) and print JSON; --record appends a dated row to bench/RESULTS.md."))
    p.add_argument("cases", nargs="*", help="cases to run (default: all for this device)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="device (default: cuda if present)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    p.add_argument("--json-out", default=None, help="write the full results as JSON here")
    p.add_argument("--record", default=None, metavar="RESULTS_MD", help="append rows to this RESULTS.md")
    add_common(p, project=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return not_built("bench")
