"""Everything convert writes that shows a swapped face carries the watermark, not only its frames: the patches
of ``--writer patches`` and the images of ``--preview``. (The trainer's previews: tests/test_train_preview.py.)"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from changeling.convert.blend import paste_back
from changeling.convert.previews import write_previews
from changeling.convert.writers import Patch, RenderedFrame, provenance_writer_factory
from changeling.provenance import embed_watermark, synthetic_metadata, verify_file
from changeling.train.testfaces import portrait
from changeling.video.reader import FrameSource
from changeling.video.testclip import pattern_frame, write_clip


def _assert_marked(path: Path) -> None:
    report = verify_file(path)
    assert report.verdict == "marked" and report.watermark and report.metadata.present, report.summary()


def test_patches_are_watermarked_and_small_ones_enlarged_to_hold_it(tmp_path: Path) -> None:
    w, h, s = 320, 240, 64  # a 64 px model: too small a patch for the watermark, so it is stored at 128 px
    frame = pattern_frame(0, w, h)
    face = cv2.resize(portrait("B"), (s, s), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:s, 0:s]
    mask = np.clip(1.5 - np.hypot(xx - s / 2, yy - s / 2) / (s / 3), 0, 1).astype(np.float32)
    affine = np.array([[0.5, 0.1, -20.0], [-0.1, 0.5, 4.0]])  # frame -> crop: a face about 120 px wide, turned
    rendered = RenderedFrame(index=5, time=0.2, image=frame, swapped=True, patches=[Patch(0, face, mask, affine)])
    source = FrameSource(path=tmp_path / "in.mp4", kind="video", width=w, height=h, fps=Fraction(25),
                         time_base=Fraction(1, 25), frame_count=6)
    writer = provenance_writer_factory("patches")(tmp_path / "patches", source)
    writer.write(rendered, writer.prepare(rendered))
    out = writer.close()

    _assert_marked(out / "000005_0.png")
    meta = json.loads((out / "000005_0.json").read_text())
    assert meta["size"] == 2 * s and meta["model_size"] == s
    a = np.array(meta["affine_frame_to_patch"])
    np.testing.assert_allclose(cv2.invertAffineTransform(a), meta["affine_patch_to_frame"], atol=1e-9)
    # composited through its own affine, the enlarged patch lands where the model's face would have
    rgba = cv2.cvtColor(cv2.imread(str(out / "000005_0.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    theirs = paste_back(frame, rgba[..., :3], rgba[..., 3].astype(np.float32) / 255, a)
    ours = paste_back(frame, face, mask, affine)
    diff = np.abs(theirs.astype(int) - ours)
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 20, (diff.mean(), np.percentile(diff, 99))


def test_convert_previews_are_watermarked(tmp_path: Path) -> None:
    from test_convert import N, _converter  # the converter with fake faces (near the top-left) and model

    video = write_clip(tmp_path / "in.mp4", frames=N, width=320, height=240, fps=24, audio=None)
    paths = write_previews(_converter(marker=embed_watermark), video, 3, tmp_path / "previews",
                           metadata=synthetic_metadata())
    assert len(paths) > 1
    for p in paths:
        _assert_marked(p)


def test_convert_refuses_frames_too_small_to_carry_the_watermark(tmp_path: Path) -> None:
    from changeling.models.registry import Dims, create_model, preset_config
    from changeling.project import init_project
    from changeling.train import checkpoint as ck
    from conftest import run_cli

    project = init_project(tmp_path / "p")
    config = preset_config("tiny", Dims(resolution=32, e_dims=4, ae_dims=16, d_dims=8))
    model = create_model("tiny", config)
    ck.save_checkpoint(project.model_dir, "tiny", config, "whole", ck.SaveRequest(step=1, weights=model.state_dict()))
    small = write_clip(tmp_path / "small.mp4", frames=4, width=112, height=96, fps=24, audio=None)  # 42 blocks
    out = tmp_path / "out.mp4"
    r = run_cli("convert", "-q", "-p", str(project.root), str(small), "-o", str(out), "--device", "cpu")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "112x96" in lines[0] and "128x128" in lines[0], r.stderr
    assert not out.exists() and list(tmp_path.glob(".out*")) == []
