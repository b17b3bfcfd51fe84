"""What the web UI shows about a project, read from its folder: faces per side, inputs, outputs, the model's
step, the training metrics and a loss curve. Pure reads; nothing here writes into the project."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from changeling.faces.facefile import list_faces
from changeling.project import CONFIG_NAME, Project
from changeling.video.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v"})
INPUTS = "inputs"  # PROJECT/inputs: uploads and sample clips
PREVIEW_GRID = ("previews", "preview.png")  # written by the trainer (changeling.train.preview)
METRICS = ("logs", "metrics.jsonl")  # written by the trainer (changeling.train.logs)


def inputs_dir(project: Project) -> Path:
    return project.root / INPUTS


def media_files(folder: Path, *, videos: bool = True, images: bool = True) -> list[Path]:
    """Videos and/or images directly in ``folder``, sorted by name (hidden and temporary files left out)."""
    if not folder.is_dir():
        return []
    wanted = (VIDEO_SUFFIXES if videos else frozenset()) | (IMAGE_SUFFIXES if images else frozenset())
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in wanted and not p.name.startswith("."))


def find_projects(home: Path) -> list[str]:
    """Project folders in ``home`` (and ``home`` itself, as "."), as names relative to it."""
    home = Path(home)
    found = ["."] if (home / CONFIG_NAME).is_file() else []
    if home.is_dir():
        found += sorted(p.name for p in home.iterdir()
                        if p.is_dir() and not p.name.startswith(".") and (p / CONFIG_NAME).is_file())
    return found


@dataclass(frozen=True)
class ModelState:
    step: int
    preset: str
    resolution: int
    elapsed: float  # training seconds of all runs, as of the newest checkpoint
    path: Path


def model_state(project: Project) -> ModelState | None:
    """The newest checkpoint's step, preset and training time, or ``None`` when there is no model yet."""
    from changeling.errors import UserError
    from changeling.models.checkpoint import latest_checkpoint, read_state

    latest = latest_checkpoint(project.model_dir)
    if latest is None:
        return None
    try:
        info, state = read_state(latest)
    except (UserError, OSError, ValueError, KeyError) as exc:
        log.warning("cannot read %s: %s", latest, exc)
        return None
    trainer = state.get("trainer") or {}
    return ModelState(step=int(info.step), preset=info.preset, resolution=info.resolution,
                      elapsed=float(trainer.get("elapsed", 0.0)), path=latest)


@dataclass(frozen=True)
class ProjectSummary:
    root: Path
    faces: dict[str, int]
    inputs: list[Path]
    outputs: list[Path]
    model: ModelState | None

    def markdown(self) -> str:
        lines = [f"**Project** `{self.root}`", "",
                 f"- faces: **{self.faces['A']}** of A, **{self.faces['B']}** of B"]
        if self.model is None:
            lines.append("- model: none yet (train one on the Train tab)")
        else:
            lines.append(f"- model: {self.model.preset}, {self.model.resolution} px, step **{self.model.step}**, "
                         f"trained {format_seconds(self.model.elapsed)}")
        lines.append("- inputs: " + (", ".join(f"`{p.name}`" for p in self.inputs) or "none yet"))
        lines.append("- outputs: " + (", ".join(f"`{p.name}`" for p in self.outputs) or "none yet"))
        return "\n".join(lines)


def summarize(project: Project) -> ProjectSummary:
    return ProjectSummary(root=project.root,
                          faces={s: len(list_faces(project.faces_dir(s))) for s in ("A", "B")},
                          inputs=media_files(inputs_dir(project)),
                          outputs=media_files(project.output_dir), model=model_state(project))


def format_seconds(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@dataclass
class MetricsTail:
    """Reads ``metrics.jsonl`` incrementally: only the bytes appended since the last call are parsed; a
    truncated or replaced file is read again from the start."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0
    _inode: int = -1

    def read(self) -> list[dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.records, self._offset, self._inode = [], 0, -1
            return self.records
        if st.st_ino != self._inode or st.st_size < self._offset:
            self.records, self._offset, self._inode = [], 0, st.st_ino
        if st.st_size == self._offset:
            return self.records
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a torn last line waits for its newline
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int):
                self.records.append(rec)
        self._offset += end
        return self.records


@dataclass(frozen=True)
class TrainStats:
    step: int
    loss_a: float | None
    loss_b: float | None
    examples_per_s: float | None
    lr: float | None
    batch_size: int | None
    elapsed: float  # training seconds: the newest checkpoint's total, plus the running job's time since then

    def markdown(self) -> str:
        def num(v: float | None, fmt: str) -> str:
            return "–" if v is None else format(v, fmt)

        return (f"**step** {self.step} · **loss** A {num(self.loss_a, '.4f')} / B {num(self.loss_b, '.4f')} · "
                f"**examples/s** {num(self.examples_per_s, '.1f')} · **elapsed** {format_seconds(self.elapsed)} · "
                f"**lr** {num(self.lr, '.2e')} · **batch** {self.batch_size or '–'}")


def train_stats(records: list[dict[str, Any]], model: ModelState | None, running_since: float | None,
                now: float) -> TrainStats:
    """Numbers for the Train tab from the metrics records, the newest checkpoint and the training job (its
    start time when it runs): elapsed counts checkpointed time plus what the running job added since."""
    last = records[-1] if records else {}
    elapsed = model.elapsed if model is not None else 0.0
    if running_since is not None:
        saved_at = model.path.stat().st_mtime if model is not None else running_since
        elapsed += max(0.0, now - max(saved_at, running_since))

    def f(key: str) -> float | None:
        v = last.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    step = max(int(last.get("step", 0)), model.step if model is not None else 0)
    bs = last.get("batch_size")
    return TrainStats(step=step, loss_a=f("loss_a"), loss_b=f("loss_b"), examples_per_s=f("examples_per_s"),
                      lr=f("lr"), batch_size=int(bs) if isinstance(bs, int) else None, elapsed=elapsed)


def loss_curve(records: list[dict[str, Any]], width: int = 640, height: int = 320) -> np.ndarray | None:
    """Loss A and loss B against the step, as an (H, W, 3) uint8 RGB image; ``None`` below two records.
    A resumed run that went back in steps (a rollback) simply draws over the same steps."""
    pts = [(r["step"], r.get("loss_a"), r.get("loss_b")) for r in records
           if isinstance(r.get("loss_a"), (int, float)) and isinstance(r.get("loss_b"), (int, float))]
    if len(pts) < 2:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arr = np.asarray(pts, dtype=np.float64)  # (N, 3): step, loss A, loss B
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(arr[:, 0], arr[:, 1], label="loss A", lw=1.2)
    ax.plot(arr[:, 0], arr[:, 2], label="loss B", lw=1.2)
    if np.all(arr[:, 1:] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")  # losses fall from the top left: this corner stays free
    fig.tight_layout()
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def frame_count(path: Path) -> int:
    """Frames in a video (decoded when the container does not say), 1 for an image."""
    from changeling.video.images import is_image_path
    from changeling.video.probe import probe
    from changeling.video.reader import open_frames

    if is_image_path(path):
        return 1
    n = probe(path).frames
    if n > 0:
        return n
    return sum(1 for _ in open_frames(path))
