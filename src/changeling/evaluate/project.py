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
from changeling.models import checkpoint as ck
from changeling.models.load import load_for_inference
from changeling.progress import iterate
from changeling.project import Project

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
    face_smooth = project.settings().convert.face_smooth  # score what convert renders
    data: dict[tuple[int, str], PairedData] = {}
    rows = []
    for k, (step, path) in enumerate(iterate(found, desc="evaluating checkpoints", unit="ckpt",
                                             enabled=progress)):
        model, info = load_for_inference(path, dev)
        key = (info.resolution, info.face_type)
        if key not in data:
            data[key] = make_paired_data(spec, info.resolution, info.face_type)
        with torch.inference_mode():
            scores, ident = evaluate_model(model, data[key], identity=k == len(found) - 1,
                                           face_smooth=face_smooth)
        rows.append({"step": step, "train_seconds": train_seconds(path), "preset": info.preset,
                     "checkpoint": str(path), **scores.as_dict(), "identity": ident,
                     "is_convincing": scores.is_convincing(ident)})
        log.debug("step %d: %s", step, rows[-1])
    _events(project, rows)
    project.output_dir.mkdir(parents=True, exist_ok=True)
    json_path = project.output_dir / "scores.json"
    plot_path = project.output_dir / "quality.png"
    write_report(rows, json_path, plot_path)
    return EvaluateResult(rows=rows, json_path=json_path, plot_path=plot_path)


def _events(project: Project, rows: list[dict[str, Any]]) -> None:
    """The scores as TensorBoard scalars at each checkpoint's step (when a writer is installed)."""
    from changeling.train.events import EventLog

    events = EventLog(project.logs_dir)
    if not events.active:
        return
    keys = ("view_ssim", "view_psnr", "view_detail", "view_landmark_error", "view_jitter", "ssim", "psnr",
            "recognisable", "landmark_error")
    for row in rows:
        events.scalars(row["step"], {k: row.get(k) for k in keys}, "eval/")
        ident = row.get("identity")
        if ident:
            events.scalars(row["step"], {k: ident.get(k) for k in ("to_B", "to_A", "closer_to_B")}, "eval/identity_")
    events.close()


def format_identity(ident: dict[str, Any] | None) -> str:
    if ident is None:
        return "identity: not measured (pip install 'changeling[identity]')"
    return (f"identity (dlib embedding distance, newest model): to B {ident['to_B']:.3f}, to A {ident['to_A']:.3f} "
            f"(A to B {ident['A_to_B']:.3f}); {ident['closer_to_B']:.0%} of outputs nearer to B")


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def format_scores(rows: list[dict[str, Any]]) -> str:
    """A table of the scores: at the view size first (what a viewer sees), then at the model's resolution."""
    size = next((r["view_size"] for r in rows if r.get("view_size")), 0)
    head = (f"{'step':>7} {'minutes':>7} | at {size} px: {'SSIM':>5} {'PSNR':>5} {'detail':>6} {'lmk err':>7} "
            f"| model res: {'SSIM(B)':>7} {'SSIM(A)':>7} {'recog':>5} {'jitter':>7}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['step']:>7} {r['train_seconds'] / 60:>7.1f} | {'':>{len(str(size)) + 7}}"
                     f"{_num(r.get('view_ssim')):>5.3f} {_num(r.get('view_psnr')):>5.1f} "
                     f"{_num(r.get('view_detail')):>6.2f} {_num(r.get('view_landmark_error')):>7.3f} "
                     f"| {'':>11}{r['ssim']:>7.3f} {r['ssim_to_source']:>7.3f} {r['recognisable']:>5.0%} "
                     f"{r['jitter']:>7.4f}")
    return "\n".join(lines)


def verdict_line(row: dict[str, Any]) -> str:
    """The headline verdict of one scored checkpoint: convincing, recognisable only, or neither."""
    from changeling.evaluate.paired import CONVINCING

    size = row.get("view_size") or 0
    figures = (f"at {size} px: SSIM {_num(row.get('view_ssim')):.3f} (convincing from {CONVINCING.ssim:.2f}), "
               f"detail {_num(row.get('view_detail')):.2f} (convincing from {CONVINCING.detail_min:.2f} to "
               f"{CONVINCING.detail_max:.2f}); {row['recognisable']:.0%} of frames closer to B than to A")
    if row.get("is_convincing"):
        return f"convincing: {figures}"
    if row["is_recognisable"]:
        return f"recognisable, not yet convincing: {figures}"
    return f"not yet recognisable: {figures}"
