"""The trainer's previews: A's footage with the current model's swap pasted in (``frames.png``) and the grid of
sample faces (``preview.png``, ``timelapse/``), each marked as synthetic media as convert marks its output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from changeling.config import ExtractSettings
from changeling.extract import extract
from changeling.models.registry import create_model
from changeling.project import init_project
from changeling.provenance import verify_file
from changeling.synth import make_clip, make_motion
from changeling.train.frame_preview import make_frame_preview
from changeling.train.preview import PREVIEW, TIMELAPSE, write_preview
from changeling.train.testfaces import portrait


def _assert_marked(path: Path) -> None:
    """``verify`` finds every mark convert's images carry: the watermark and the metadata (and C2PA where
    c2pa-python is installed)."""
    report = verify_file(path)
    assert report.verdict == "marked" and report.watermark and report.metadata.present, report.summary()
    assert report.watermark_geometry == "as written"


def test_frame_preview_pastes_the_swap_into_a_frames(tmp_path: Path) -> None:
    project = init_project(tmp_path / "p")
    assert make_frame_preview(project, "whole") is None  # no footage of A yet: no hook
    clip = make_clip("astronaut", make_motion(seed=3, duration=0.5), 128, 12, tmp_path / "a.mp4", audio=False)
    extract(project, "A", [clip.path], ExtractSettings(device="cpu"), progress=False)
    hook = make_frame_preview(project, "whole", count=2)
    assert hook is not None
    model = create_model("tiny").eval()
    hook(model, 7, project.previews_dir)
    strip = np.asarray(Image.open(project.previews_dir / "frames.png").convert("RGB")).astype(int)
    assert strip.shape == (2 * 128, 2 * 128, 3)  # two frames, each as original | swapped
    original, swapped = strip[:, :128], strip[:, 128:]
    changed = np.abs(original - swapped).sum(axis=2) > 30
    assert changed.mean() > 0.05  # the face region is replaced...
    assert not changed[:, :8].any() and not changed[:, -8:].any()  # ...and the frame's edges are not
    _assert_marked(project.previews_dir / "frames.png")  # a full-frame swap the UI offers for download


def test_preview_grid_and_timelapse_are_marked(tmp_path: Path) -> None:
    """The grid's 64 px tiles are too small to hold the watermark each; the whole grid, the picture a user
    downloads, holds it."""
    model = create_model("tiny").eval()
    r = int(model.config.resolution)

    def faces(side: str) -> torch.Tensor:
        img = cv2.resize(portrait(side), (r, r), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.stack([np.roll(img, 3 * i, axis=1) for i in range(4)])).permute(0, 3, 1, 2)

    with torch.inference_mode():
        path = write_preview(model, faces("A"), faces("B"), tmp_path, step=12)
    assert path == tmp_path / PREVIEW
    for written in (path, tmp_path / TIMELAPSE / "step-00000012.png"):
        assert Image.open(written).size == (6 * r, 16 + 4 * r)
        _assert_marked(written)
