"""``changeling evaluate``: score every saved checkpoint of a project on the paired benchmark."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from changeling.device import resolve_device
from changeling.errors import UserError
from changeling.evaluate.paired import PairedData, PairedSpec, evaluate_model, make_paired_data, write_report
from changeling.progress import iterate
from changeling.project import Project
from changeling.train import checkpoint as ck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateResult:
    rows: list[dict[str, Any]]  # one per checkpoint, oldest first
    json_path: Path
    plot_path: Path

    @property
    def latest(self) -> dict[str, Any]:
        return self.rows[-1]


def checkpoints_over_time(model_dir: Path) -> list[tuple[int, Path]]:
    """Snapshots and kept checkpoints, one per step, oldest first."""
    by_step = dict(ck.list_checkpoints(model_dir, snapshots=True))
    by_step.update(dict(ck.list_checkpoints(model_dir)))
    return sorted(by_step.items())


def train_seconds(checkpoint: Path) -> float:
    _, state = ck.read_state(checkpoint)
    return float(state.get("trainer", {}).get("elapsed", 0.0))


def evaluate_project(project: Project, *, spec: PairedSpec | None = None, device: str = "auto",
                     latest_only: bool = False, progress: bool = True) -> EvaluateResult:
    """Score the project's checkpoints (or only the newest) and write ``output/scores.json`` and
    ``output/quality.png``."""
    spec = spec or PairedSpec()
    found = checkpoints_over_time(project.model_dir)
    if not found:
        raise UserError("no trained model here; run `changeling train` first", project.model_dir)
    if latest_only:
        found = found[-1:]
    dev = resolve_device(device)
    data: dict[tuple[int, str], PairedData] = {}
    rows = []
    for k, (step, path) in enumerate(iterate(found, desc="evaluating checkpoints", unit="ckpt",
                                             enabled=progress)):
        model, info = ck.load_for_inference(path, dev)
        key = (info.resolution, info.face_type)
        if key not in data:
            data[key] = make_paired_data(spec, info.resolution, info.face_type)
        with torch.inference_mode():
            scores, ident = evaluate_model(model, data[key], identity=k == len(found) - 1)
        rows.append({"step": step, "train_seconds": train_seconds(path), "preset": info.preset,
                     "checkpoint": str(path), **scores.as_dict(), "identity": ident})
        log.debug("step %d: %s", step, rows[-1])
    project.output_dir.mkdir(parents=True, exist_ok=True)
    json_path = project.output_dir / "scores.json"
    plot_path = project.output_dir / "quality.png"
    write_report(rows, json_path, plot_path)
    return EvaluateResult(rows=rows, json_path=json_path, plot_path=plot_path)


def format_identity(ident: dict[str, Any] | None) -> str:
    if ident is None:
        return "identity: not measured (pip install 'changeling[identity]')"
    return (f"identity (dlib embedding distance, newest model): to B {ident['to_B']:.3f}, to A {ident['to_A']:.3f} "
            f"(A to B {ident['A_to_B']:.3f}); {ident['closer_to_B']:.0%} of outputs nearer to B")


def format_scores(rows: list[dict[str, Any]]) -> str:
    head = (f"{'step':>7} {'minutes':>7} {'SSIM(B)':>8} {'SSIM(A)':>8} {'PSNR':>6} {'recog':>6} {'jitter':>7} "
            f"{'lmk err':>7}")
    lines = [head]
    for r in rows:
        psnr = r["psnr"] if r["psnr"] is not None else float("inf")
        lines.append(f"{r['step']:>7} {r['train_seconds'] / 60:>7.1f} {r['ssim']:>8.3f} {r['ssim_to_source']:>8.3f} "
                     f"{psnr:>6.1f} {r['recognisable']:>6.0%} {r['jitter']:>7.4f} "
                     f"{r['landmark_error'] if r['landmark_error'] is not None else float('nan'):>7.3f}")
    return "\n".join(lines)
