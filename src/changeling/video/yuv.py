"""A decoded frame to RGB: OpenCV's I420 conversion where it is the right one, FFmpeg's swscale elsewhere.

For the frames changeling meets most, 4:2:0 with BT.601 or untagged colour in video range (what its own
writer produces with ``cv2.COLOR_RGB2YUV_I420``), OpenCV's conversion is the exact inverse of the writer's
and, measured on the 2-core machine, decodes plus converts 720p at about 450 frames/s against about 280 with
swscale (bench/RESULTS.md, the decode A/B). swscale's default unscaled path also rounds low by about one
level there. Every other frame (BT.709 or BT.2020 tags, full range, 4:2:2, 4:4:4, 10 bit, odd sides) goes
through swscale, which reads the frame's own colour tags.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

from changeling.types import Frame

# AVColorSpace values meaning BT.601 (or nothing said, which FFmpeg also reads as BT.601)
_BT601 = frozenset({2, 5, 6})  # unspecified, BT470BG, SMPTE170M
_VIDEO_RANGE = frozenset({0, 1})  # unspecified, MPEG (16-235)


def opencv_converts(frame: av.VideoFrame) -> bool:
    """Whether OpenCV's BT.601 video-range I420 conversion is the right one for ``frame``."""
    return (frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0
            and frame.colorspace in _BT601 and frame.color_range in _VIDEO_RANGE)


def frame_to_rgb(frame: av.VideoFrame) -> Frame:
    """``frame`` as a contiguous (H, W, 3) uint8 RGB array."""
    if opencv_converts(frame):
        planes = frame.to_ndarray()  # (H * 3 / 2, W): Y, then U, then V, without row padding
        return np.asarray(cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420))
    return swscale_rgb(frame)


def swscale_rgb(frame: av.VideoFrame) -> Frame:
    """``frame`` as RGB through FFmpeg's swscale on all cores (any layout, its colour tags read)."""
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24", threads=0))
