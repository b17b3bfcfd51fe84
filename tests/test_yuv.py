"""Decoded frames to RGB: OpenCV's conversion where the frame is BT.601 video range, swscale elsewhere."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from changeling.video import VideoWriter, open_frames
from changeling.video.testclip import pattern_frame, write_clip
from changeling.video.yuv import frame_to_rgb, opencv_converts


def _flat_i420(y: int, u: int, v: int, h: int = 8, w: int = 8) -> np.ndarray:
    planes = np.empty((h * 3 // 2, w), np.uint8)
    planes[:h] = y
    planes[h:h + h // 4] = u
    planes[h + h // 4:] = v
    return planes


@pytest.mark.parametrize(("yuv", "rgb"), [
    ((81, 90, 240), (255, 0, 0)),  # BT.601 video-range red, green and blue (Rec. 601 table values)
    ((145, 54, 34), (0, 255, 0)),
    ((41, 240, 110), (0, 0, 255)),
    ((16, 128, 128), (0, 0, 0)),
    ((235, 128, 128), (255, 255, 255)),
    ((126, 128, 128), (128, 128, 128)),
])
def test_bt601_primaries_come_out_as_the_standard_says(yuv: tuple[int, int, int], rgb: tuple[int, int, int]) -> None:
    frame = av.VideoFrame.from_ndarray(_flat_i420(*yuv), format="yuv420p")
    assert opencv_converts(frame)
    out = frame_to_rgb(frame)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out.astype(int) - np.array(rgb)).max() <= 2


def test_other_colour_tags_go_through_swscale_unchanged() -> None:
    planes = np.random.default_rng(0).integers(16, 236, (48 * 3 // 2, 64)).astype(np.uint8)
    bt709 = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    bt709.colorspace = 1  # BT.709: a different matrix, which only swscale applies here
    assert not opencv_converts(bt709)
    assert np.array_equal(frame_to_rgb(bt709), bt709.to_ndarray(format="rgb24"))
    full = av.VideoFrame.from_ndarray(planes, format="yuvj420p")  # full range
    assert not opencv_converts(full)
    assert np.array_equal(frame_to_rgb(full), full.to_ndarray(format="rgb24"))
    untagged = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    assert opencv_converts(untagged)
    # and the two conversions agree where both apply (nearest against interpolated chroma at edges)
    diff = np.abs(frame_to_rgb(untagged).astype(int) - untagged.to_ndarray(format="rgb24").astype(int))
    assert diff.mean() < 8


def _read_both(clip: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ours = [f.image for f in open_frames(clip)]
    with av.open(str(clip)) as c:
        theirs = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return ours, theirs


@pytest.mark.parametrize("encoder", ["opencv", "swscale"])
def test_the_reader_gets_back_what_was_written(tmp_path: Path, encoder: str) -> None:
    # convert's writer turns RGB into I420 with OpenCV, other tools with swscale; either way the reader's
    # frames are at least as close to the original pixels as swscale's reading of them
    images = [pattern_frame(i, 96, 64) for i in range(6)]
    clip = tmp_path / "c.mp4"
    if encoder == "opencv":
        with VideoWriter(clip, width=96, height=64, fps=Fraction(25), crf=0) as w:
            for img in images:
                w.write_i420(cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420))
    else:
        write_clip(clip, width=96, height=64, fps=25, images=images, audio=None, crf=0)
    ours, theirs = _read_both(clip)
    assert len(ours) == len(theirs) == 6
    for original, a, b in zip(images, ours, theirs, strict=True):
        err_ours = np.abs(a.astype(int) - original).mean()
        err_swscale = np.abs(b.astype(int) - original).mean()
        assert err_ours <= err_swscale and err_ours < 5, (err_ours, err_swscale)  # (the pattern wraps: sharp edges)


def _bt601_reference(frame: av.VideoFrame) -> np.ndarray:
    """RGB from the frame's own planes (read with their row padding), by the Rec. 601 video-range formulas."""
    h, w = frame.height, frame.width
    planes = []
    for i, (ph, pw) in enumerate([(h, w), (h // 2, w // 2), (h // 2, w // 2)]):
        plane = frame.planes[i]
        rows = np.frombuffer(bytes(plane), np.uint8).reshape(-1, plane.line_size)[:ph, :pw]
        planes.append(rows.astype(np.float64))
    y = (planes[0] - 16) * 255 / 219
    u = np.repeat(np.repeat(planes[1] - 128, 2, 0), 2, 1) * 255 / 224
    v = np.repeat(np.repeat(planes[2] - 128, 2, 0), 2, 1) * 255 / 224
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("width", "height"), [(98, 66), (642, 362)])  # rows padded; height % 4 == 2
def test_padded_rows_and_odd_half_heights_convert_like_the_formula(tmp_path: Path, width: int, height: int) -> None:
    images = [pattern_frame(i, width, height) for i in range(2)]
    clip = write_clip(tmp_path / "c.mp4", width=width, height=height, fps=25, images=images, audio=None, crf=0)
    with av.open(str(clip)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 2
    for frame in frames:
        assert opencv_converts(frame) and frame.planes[0].line_size > width  # the planes carry padding
        diff = np.abs(frame_to_rgb(frame).astype(int) - _bt601_reference(frame))
        assert diff.max() <= 2, diff.max()
