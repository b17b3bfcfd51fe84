"""``changeling bench``: the benchmark cases."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.bench.runner import (
    CASES,
    CPU_DEFAULT,
    command_line,
    format_table,
    record,
    run_cases,
    write_json,
)
from changeling.cli.common import add_common
from changeling.vocab import DEVICES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run benchmark cases and record them", description=(
        "Run named benchmark cases and print a table; --json-out writes the full results and --record appends "
        "a dated row per case to a RESULTS.md. Cases: " + ", ".join(CASES)))
    p.add_argument("cases", nargs="*", help="cases to run (default on CPU: " + ", ".join(CPU_DEFAULT) +
                   "; on CUDA: all)")
    p.add_argument("--device", choices=[d for d in DEVICES if d != "auto"], default=None, help="device (default: cuda if present)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    p.add_argument("--json-out", type=Path, default=None, help="write the full results as JSON here")
    p.add_argument("--record", type=Path, default=None, metavar="RESULTS_MD", help="append rows to this file")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--quick", action="store_true",
                   help="short windows, no torch.compile, fewer frames (for scarce GPU time; recorded as quick)")
    add_common(p, project=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for c in CASES.values():
            print(f"{c.name:<22} {c.description}")
        return 0
    import torch  # imported here: every other command starts faster without it

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    names = args.cases or (list(CASES) if device == "cuda" else list(CPU_DEFAULT))
    results = run_cases(names, device, args.repeats, quick=args.quick)
    if args.json_out:
        write_json(results, args.json_out)
    if args.record:
        record(results, args.record, command_line())
    print(format_table(results))
    return 0
