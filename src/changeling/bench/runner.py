"""The benchmark registry and runner. Cases are functions ``(device, repeats) -> dict`` returning at least
``value`` (the headline figure), ``unit`` and ``target``; they live in the stage modules and are imported
lazily so that ``changeling bench --help`` stays fast."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import logging
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from changeling import __version__
from changeling.bench.machine import describe
from changeling.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    name: str
    target: str  # module:function
    description: str


CASES: dict[str, Case] = {c.name: c for c in (
    Case("train-tiny", "changeling.bench.cases:train_tiny", "tiny preset full training step, examples/s"),
    Case("train-lite", "changeling.bench.cases:train_lite", "lite preset (128 px for a CPU) full step, examples/s"),
    Case("train-lite-liae", "changeling.bench.cases:train_lite_liae",
         "lite-liae preset (lite's shape as LIAE) full step, examples/s"),
    Case("train-original", "changeling.bench.cases:train_original", "original (64 px) full step, examples/s"),
    Case("train-df128", "changeling.bench.cases:train_df128", "df preset at 128 px, examples/s"),
    Case("train-df256", "changeling.bench.cases:train_df256", "df preset at 256 px, examples/s"),
    Case("train-liae128", "changeling.bench.cases:train_liae128", "liae preset at 128 px, examples/s"),
    Case("train-ddp", "changeling.bench.cases:train_ddp",
         "one-device DDP overhead: the same preset plain and through DistributedDataParallel"),
    Case("extract-720p", "changeling.bench.cases:extract_720p", "extraction end to end on a 720p clip, frames/s"),
    Case("decode-720p", "changeling.bench.cases:decode_720p",
         "decoding alone to RGB, software and (on CUDA) NVDEC, frames/s"),
    Case("convert-720p", "changeling.bench.cases:convert_720p", "convert end to end at 720p, frames/s"),
    Case("convert-1080p", "changeling.bench.cases:convert_1080p", "convert end to end at 1080p, frames/s"),
    Case("time-to-recognisable", "changeling.bench.cases:time_to_recognisable",
         "seconds of training until the paired benchmark's swap is recognisable; view-size scores at the end"),
    Case("quality-ab", "changeling.bench.quality:quality_ab",
         "swap quality at view size after the demo's budget, for each training variant (same seed and budget)"),
    Case("occlusion", "changeling.bench.cases:occlusion",
         "occlusion segmenter: IoU on held-out occluders, occluder pixels kept by convert, training time"),
    Case("convert-720p-occlusion", "changeling.bench.cases:convert_720p_occlusion",
         "convert end to end at 720p with the occlusion mask on, frames/s"),
    Case("live", "changeling.bench.cases:live_640",
         "live mode on a 640x480 clip played at 30 frames/s (tiny): output frames/s, p50/p95 latency, drops"),
    Case("live-720p", "changeling.bench.cases:live_720p", "live mode at 1280x720, 30 frames/s (tiny)"),
    Case("live-1080p-df128", "changeling.bench.cases:live_1080p_df128",
         "live mode at 1920x1080, 60 frames/s, df 128 px (the GPU target)"),
)}

CPU_DEFAULT = ("train-tiny", "extract-720p", "convert-720p")


def resolve(case: Case) -> Callable[..., dict[str, Any]]:
    module, func = case.target.split(":")
    target = importlib.import_module(module)  # scan-ok: a module named in the CASES table above, not by the user
    return getattr(target, func)  # type: ignore[no-any-return]


def median_rate(fn: Callable[[], float], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Run ``fn`` (returns a rate) ``warmup`` times untimed, then ``repeats`` times; the median and all."""
    for _ in range(warmup):
        fn()
    values = [fn() for _ in range(max(1, repeats))]
    return statistics.median(values), values


def run_cases(names: list[str], device: str, repeats: int, quick: bool = False) -> list[dict[str, Any]]:
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise UserError(f"unknown benchmark case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    results = []
    for name in names:
        case = CASES[name]
        log.info("bench %s on %s ...", name, device)
        t0 = time.perf_counter()
        out = resolve(case)(device=device, repeats=repeats, quick=quick)
        out = {"case": name, "device": device, "machine": describe(device), "torch": torch.__version__,
               "changeling": __version__, "date": _dt.date.today().isoformat(),
               "wall_s": round(time.perf_counter() - t0, 2), "quick": quick, **out}
        results.append(out)
        log.info("%s: %s %s (target %s)", name, out.get("value"), out.get("unit", ""), out.get("target", ""))
    return results


def command_line() -> str:
    return "changeling " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'case':<22} {'device':<6} {'value':>10} {'unit':<12} target"]
    for r in results:
        v = r.get("value")
        vs = f"{v:.1f}" if isinstance(v, (int, float)) else str(v)
        lines.append(f"{r['case']:<22} {r['device']:<6} {vs:>10} {r.get('unit', ''):<12} {r.get('target', '')}")
    return "\n".join(lines)


def _short(v: Any) -> Any:
    """A detail value as the table shows it: floats to 3 decimals (one above 1,000)."""
    if isinstance(v, float):
        return round(v, 1) if abs(v) >= 1000 else round(v, 3)
    return v


def record(results: list[dict[str, Any]], results_md: Path, command: str) -> None:
    """Append one table row per result to RESULTS.md (created with a header if missing)."""
    results_md = Path(results_md)
    header = ("| date | case | machine | torch | value | unit | target | details | command |\n"
              "|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        details = ", ".join(f"{k}={_short(v)}" for k, v in r.items() if k in r.get("detail_keys", ()))
        v = r.get("value")
        vs = f"{v:.1f}" if isinstance(v, float) else str(v)
        rows.append(f"| {r['date']} | {r['case']} | {r['machine']} | {r['torch']} | {vs} | {r.get('unit', '')} | "
                    f"{r.get('target', '')} | {details} | `{command}` |\n")
    # the new rows go right after the results table's last row, so notes (and other tables) written below it
    # stay below it; a file without that table (or no file) gets one at the end
    text = results_md.read_text(encoding="utf-8") if results_md.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if line.startswith(header.splitlines()[0])), None)
    if start is None:
        lines += ["\n", header]
        start = len(lines) - 1
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[end:end] = rows
    tmp = results_md.with_name(results_md.name + ".part")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, results_md)


def write_json(results: list[dict[str, Any]], path: Path) -> None:
    tmp = Path(str(path) + ".part")
    tmp.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
