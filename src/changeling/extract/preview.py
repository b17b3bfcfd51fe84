"""The extraction preview: a few sample frames per source with the boxes and landmarks found, in one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from changeling.faces.store import FaceRecord
from changeling.types import Frame
from changeling.video import TimedFrame
from changeling.video.images import write_image_atomic

PREVIEW_SAMPLES = 4  # sample frames per source in the preview
PREVIEW_MAX_SAMPLES = 8  # in all
PREVIEW_SIDE = 480  # longest side of one preview tile


@dataclass
class Sample:
    index: int
    image: Frame  # downscaled
    scale: float  # tile pixels per frame pixel
    title: str


def samples_per_source(sources: int) -> int:
    """How many sample frames each of ``sources`` sources shows."""
    return PREVIEW_SAMPLES if sources * PREVIEW_SAMPLES <= PREVIEW_MAX_SAMPLES else max(
        1, PREVIEW_MAX_SAMPLES // sources)


def pick_samples(n: int, every_nth: int, frame_count: int) -> set[int]:
    """The frame indices of ``n`` samples spread over a source of ``frame_count`` frames (0: unknown), among the
    frames extraction selects (every ``every_nth``)."""
    if n <= 0:
        return set()
    if frame_count > 0:
        selected = np.arange(0, frame_count, every_nth)
        picks = selected[np.linspace(0, len(selected) - 1, min(n, len(selected))).round().astype(int)]
        return {int(i) for i in picks}
    return {i * every_nth for i in range(n)}


def make_sample(tf: TimedFrame, title: str) -> Sample:
    """A frame kept for the preview, downscaled to the tile size."""
    h, w = tf.image.shape[:2]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    small = np.asarray(cv2.resize(tf.image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                  interpolation=cv2.INTER_AREA), dtype=np.uint8) if scale < 1 else tf.image.copy()
    return Sample(tf.index, small, scale, title)


def draw_sample(sample: Sample, faces: Sequence[FaceRecord]) -> Frame:
    img = np.ascontiguousarray(sample.image.copy())
    s = sample.scale
    for f in faces:
        x0, y0, x1, y1 = (float(v) * s for v in f.box)
        colour = (0, 255, 0) if f.file else (255, 160, 0)
        cv2.rectangle(img, (round(x0), round(y0)), (round(x1), round(y1)), colour, 1, cv2.LINE_AA)
        for x, y in f.landmarks[:, :2] * s:
            cv2.circle(img, (round(float(x)), round(float(y))), 1, (255, 0, 0), -1)
        cv2.putText(img, f"{f.face} {f.score:.2f}", (round(x0), max(10, round(y0) - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, colour, 1, cv2.LINE_AA)
    cv2.putText(img, sample.title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return img


def write_preview(path: Path, tiles: list[Frame]) -> None:
    if not tiles:
        tiles = [np.zeros((64, 64, 3), np.uint8)]
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    cols = min(len(tiles), 2)
    rows = (len(tiles) + cols - 1) // cols
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th: r * th + t.shape[0], c * tw: c * tw + t.shape[1]] = t
    write_image_atomic(path, grid)

