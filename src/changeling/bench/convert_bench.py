"""Convert benchmark: frames per second end to end (decode, crop, model, colour, mask, paste, watermark,
H.264 encode with audio, C2PA on the finished file) on a synthetic clip with one face per frame.

The clip is generated here: a public-domain portrait (scikit-image's astronaut, shipped with the test extra; a
drawn stand-in face otherwise) moving over a colourful background, with a tone as audio. The face positions are
known, so faces come from a fixed face source, as when convert reuses extraction's alignments (detection is
extraction's benchmark). The model is a randomly initialised ``tiny`` preset (64 px) behind a 4x detail stage,
what training gives by default (``detail=1`` leaves the stage out): its speed does not depend on its weights.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from changeling.convert.color import color_matcher
from changeling.convert.maskops import MaskBuilder
from changeling.convert.pipeline import Converter, DetectedFace
from changeling.convert.sources import ModelSwapper
from changeling.convert.writers import provenance_writer_factory
from changeling.detect.align import template_points
from changeling.threads import torch_threads
from changeling.types import Frame
from changeling.video.reader import FrameSource, TimedFrame
from changeling.video.testclip import pattern_frame, write_clip

log = logging.getLogger(__name__)

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
FACE_SHARE = 0.4  # side of the face's 'whole' crop as a share of the frame height


def _portrait(size: int) -> Frame:
    try:
        from skimage import data

        img = data.astronaut()[0:300, 110:410]
    except ImportError:  # the test extra is missing: a drawn face
        img = np.full((300, 300, 3), 90, np.uint8)
        cv2.ellipse(img, (150, 160), (95, 125), 0, 0, 360, (205, 160, 140), -1)
        for x in (110, 190):
            cv2.circle(img, (x, 130), 12, (40, 30, 30), -1)
        cv2.ellipse(img, (150, 230), (35, 12), 0, 0, 360, (150, 60, 60), -1)
    return np.asarray(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA), np.uint8)


def _face_origin(index: int, width: int, height: int, side: int) -> tuple[int, int]:
    """Top-left of the face square in frame ``index``: a slow horizontal sweep and a small bob."""
    span = max(width - side - 40, 1)
    x = 20 + int((index * 6) % (2 * span))
    x = x if x - 20 < span else 20 + 2 * span - (x - 20)
    y = (height - side) // 2 + int(10 * np.sin(index / 7))
    return x, y


class _KnownFaces:
    """Face source that knows where the clip's face is (the alignments of the synthetic clip)."""

    def __init__(self, width: int, height: int, side: int) -> None:
        self.width, self.height, self.side = width, height, side
        self._template = template_points("whole", side)  # (468, 2) in the face square's pixels

    def open(self, source: FrameSource) -> None:
        pass

    def landmarks(self, index: int) -> np.ndarray:
        x, y = _face_origin(index, self.width, self.height, self.side)
        p = self._template + np.array([x, y], np.float64)
        return np.column_stack([p, np.zeros(len(p))]).astype(np.float32)

    def faces(self, frames: Sequence[TimedFrame]) -> list[list[DetectedFace]]:
        out = []
        for tf in frames:
            lm = self.landmarks(tf.index)
            box = np.array([*lm[:, :2].min(0), *lm[:, :2].max(0)], np.float32)
            out.append([DetectedFace(lm, box)])
        return out


def make_clip(path: Path, width: int, height: int, frames: int, fps: float = 30.0) -> Path:
    """The benchmark's clip: the portrait over a moving pattern, one face per frame, AAC audio."""
    side = int(height * FACE_SHARE)
    face = _portrait(side)
    background = pattern_frame(0, width, height)
    images = []
    for i in range(frames):
        img = np.roll(background, 3 * i, axis=1)
        x, y = _face_origin(i, width, height, side)
        img[y:y + side, x:x + side] = face
        images.append(img)
    return write_clip(path, width=width, height=height, fps=fps, audio="aac", images=images, crf=20)


def bench_convert(resolution: str = "720p", device: str = "cpu", frames: int = 120, *, color: str = "rct",
                  mask: str = "combined", batch_size: int = 8, workers: int = 0,
                  work_dir: Path | None = None, cpu_marker_too: bool = False,
                  cpu_marker_first: bool = False, occlusion: bool = False, detail: int = 4,
                  face_smooth: float | None = None) -> dict[str, Any]:
    """Convert a synthetic ``resolution`` clip of ``frames`` frames with a random ``tiny`` model on ``device``.

    Returns ``fps`` (frames per second of the whole run, encoding included), ``seconds``, and ``stages_ms``:
    milliseconds per frame of work in each stage (summed over the threads that do it, so they overlap and
    add up to more than the wall time per frame). With ``cpu_marker_too`` on a GPU, the same clip is
    converted again with the NumPy watermark in the render threads instead of the batched GPU marker:
    ``cpu_marker_fps`` and ``cpu_marker_stages_ms`` (before the main run with ``cpu_marker_first``, so repeats
    can alternate the order). With ``occlusion``, an (untrained) occlusion segmenter runs on every face and the
    mask includes it; ``stages_ms['occlusion']`` is its own time per frame. ``face_smooth``: the temporal face
    blending (None: convert's default setting, as a user's run has it); its time is in ``stages_ms['model']``.
    """
    from changeling.config import ConvertSettings
    from changeling.models.registry import create_model
    from changeling.provenance.batch_marker import watermark_marker
    from changeling.provenance.watermark import embed_watermark

    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}")
    width, height = RESOLUTIONS[resolution]
    blend = ConvertSettings().face_smooth if face_smooth is None else face_smooth
    dev = torch.device(device)
    pair = create_model("tiny")
    model: torch.nn.Module = pair
    if detail > 1:  # what training gives by default: tiny behind a 4x detail stage, faces rendered at 256 px
        from changeling.models.detail import DetailConfig, DetailedModel, DetailStage

        model = DetailedModel(pair, DetailStage(DetailConfig(pair.resolution, detail)))
    model = model.to(dev).eval()
    swapper = ModelSwapper(model, resolution=pair.resolution, face_type="whole", to="B", device=dev,
                           output_resolution=pair.resolution * max(detail, 1))
    swapper(np.zeros((batch_size, pair.resolution, pair.resolution, 3), np.uint8))  # warm-up
    n_workers = workers or min(8, os.cpu_count() or 1)
    segmenter = None
    if occlusion:
        from changeling.config import MasksSettings
        from changeling.occlusion.net import SegmenterConfig
        from changeling.occlusion.predict import Segmenter

        shape = MasksSettings()  # the default segmenter's shape, as `changeling masks train` makes it
        segmenter = Segmenter.untrained(SegmenterConfig(resolution=shape.resolution, width=shape.width), dev)
        segmenter(np.zeros((batch_size, pair.resolution, pair.resolution, 3), np.uint8))  # warm-up
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        clip = make_clip(Path(tmp) / f"bench_{resolution}.mp4", width, height, frames)
        side = int(height * FACE_SHARE)

        def run(marker: Any, name: str) -> tuple[float, Any]:
            conv = Converter(faces=_KnownFaces(width, height, side), swapper=swapper, color=color_matcher(color),
                             masks=MaskBuilder(mask, 0, 8),  # type: ignore[arg-type]
                             writer_factory=provenance_writer_factory("video", crf=18), marker=marker,
                             batch_size=batch_size, workers=n_workers, progress=False, occlusion=segmenter,
                             face_smooth=blend)
            with torch_threads(1 if dev.type == "cpu" else None):
                t0 = time.perf_counter()
                report = conv.run(clip, Path(tmp) / name)
                return time.perf_counter() - t0, report

        marker = watermark_marker(dev)
        plan = {"out.mp4": marker}
        if cpu_marker_too and marker is not embed_watermark:  # (on the CPU it is the NumPy one already)
            plan["out_cpu_marker.mp4"] = embed_watermark
        order = list(plan)[::-1] if cpu_marker_first else list(plan)
        done = {name: run(plan[name], name) for name in order}
    wall, report = done["out.mp4"]
    extra: dict[str, Any] = {}
    if "out_cpu_marker.mp4" in done:
        cpu_wall, cpu_report = done["out_cpu_marker.mp4"]
        extra = {"cpu_marker_fps": round(cpu_report.frames / cpu_wall, 2),
                 "cpu_marker_stages_ms": _per_frame(cpu_report.stages, cpu_report.frames)}
    spent = dict(report.stages)
    # the GPU watermark's own thread (a BatchMarker): where its time per frame goes
    spent.update({f"marker_{k}": v for k, v in getattr(marker, "seconds", {}).items()})
    return {"value": round(report.frames / wall, 2), "unit": "frames/s", "fps": round(report.frames / wall, 2),
            "seconds": round(wall, 2), "frames": report.frames, "faces": report.faces_swapped,
            "resolution": resolution, "device": str(dev), "color": color, "mask": mask, "batch_size": batch_size,
            "workers": n_workers, "face_px": pair.resolution * max(detail, 1), "face_smooth": blend,
            "stages_ms": _per_frame(spent, report.frames), **extra,
            "target": ">= 20 frames/s on a 2-core CPU (720p); >= 150 on an H100 (1080p)",
            "detail_keys": ["face_px", "face_smooth", "stages_ms", "workers", "batch_size", *extra]}


def _per_frame(seconds: dict[str, float], frames: int) -> dict[str, float]:
    """Milliseconds per frame of each stage."""
    return {k: round(1000 * v / max(frames, 1), 2) for k, v in sorted(seconds.items())}


def io_ceiling(resolution: str = "720p", frames: int = 120, work_dir: Path | None = None) -> dict[str, float]:
    """Frames per second of decoding alone and of encoding alone (the video writer, veryfast, with audio) on
    the benchmark's clip: the ceilings the converter cannot beat on this machine."""
    from changeling.video.reader import open_frames
    from changeling.video.writer import VideoWriter

    width, height = RESOLUTIONS[resolution]
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", width, height, frames)
        t0 = time.perf_counter()
        decoded = [tf.image for tf in open_frames(clip)]
        t1 = time.perf_counter()
        with VideoWriter(Path(tmp) / "out.mp4", width=width, height=height, fps=30, audio_from=clip) as w:
            for img in decoded:
                w.write(img)
        t2 = time.perf_counter()
    return {"decode_fps": round(len(decoded) / (t1 - t0), 1), "encode_fps": round(len(decoded) / (t2 - t1), 1)}


if __name__ == "__main__":  # python -m changeling.bench.convert_bench [720p|1080p] [cpu|cuda] [frames]
    import json
    import sys

    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:]
    res = bench_convert(args[0] if args else "720p", args[1] if len(args) > 1 else "cpu",
                        int(args[2]) if len(args) > 2 else 120)
    print(json.dumps(res, indent=1))
