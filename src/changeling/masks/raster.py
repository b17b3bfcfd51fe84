"""Rasterising mask polygons (stored in face metadata) into float masks."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from changeling.types import Mask


def polygon_mask(size: int, polygons: Sequence[Sequence[Sequence[float]]], scale: float = 1.0) -> Mask:
    """(size, size) float32 mask, 1 inside the union of the polygons. ``scale`` maps polygon coords to pixels
    (use it to rasterise a 256 px face's polygons at another resolution)."""
    out = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel precision for fillPoly
    pts = [np.round(np.asarray(p, np.float64) * scale * (1 << shift)).astype(np.int32) for p in polygons if len(p) >= 3]
    if pts:
        cv2.fillPoly(out, pts, 1, lineType=cv2.LINE_AA, shift=shift)
    return out.astype(np.float32)
