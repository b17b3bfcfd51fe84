"""The trainer's full-frame preview: A's footage with the current model's swap pasted in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from changeling.config import ExtractSettings
from changeling.convert.train_preview import make_frame_preview
from changeling.extract import extract
from changeling.models.registry import create_model
from changeling.project import init_project
from changeling.synth import make_clip, make_motion


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
