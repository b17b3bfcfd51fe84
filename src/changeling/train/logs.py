"""Training logs: one JSON object per line in ``logs/metrics.jsonl`` and a loss plot ``logs/loss.png``, always
written; TensorBoard event files beside them when a writer is installed (:mod:`changeling.train.events`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from changeling.video.images import write_image_atomic

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
PLOT = "loss.png"


class MetricsLog:
    """Appends metric records to ``metrics.jsonl`` (flushed per write, so a crash loses at most one line)."""

    def __init__(self, logs_dir: Path) -> None:
        self.dir = Path(logs_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / METRICS
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._failed = False

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; a write error (disk full) is logged once and does not stop training."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        try:
            self._fh.write(json.dumps(clean, separators=(",", ":")) + "\n")
            self._fh.flush()
        except OSError as exc:
            if not self._failed:
                log.warning("could not write %s (%s)", self.path, exc.strerror or exc)
            self._failed = True

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl``; a torn last line (crash mid-write) is ignored."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def plot_losses(history: list[tuple[int, float, float]], path: Path) -> None:
    """Write a PNG of loss A and loss B against the step (atomically)."""
    if len(history) < 2:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.array([h[0] for h in history])
    fig = Figure(figsize=(6, 3.2), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, [h[1] for h in history], label="loss A", lw=1)
    ax.plot(steps, [h[2] for h in history], label="loss B", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    write_image_atomic(Path(path), np.ascontiguousarray(rgba[..., :3]))
