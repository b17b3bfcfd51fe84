"""Lighting changes applied to a rendered frame: a shading gradient and a colour temperature."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from changeling.types import Frame


def shading(size: tuple[int, int], angle: float, strength: float) -> NDArray[np.float32]:
    """(H, W) multiplicative field: brighter towards where the light comes from (``angle`` radians, 0 = from
    the right, pi/2 = from below), ``1 +- strength`` at the frame's edges along that direction."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    half = 0.5 * float(np.hypot(w, h))
    along = ((xs - (w - 1) / 2) * np.cos(angle) + (ys - (h - 1) / 2) * np.sin(angle)) / half
    return (1.0 + strength * along).astype(np.float32)


def colour_gains(warmth: float) -> NDArray[np.float32]:
    """(3,) RGB gains for a colour temperature shift: warmth 1 is orange (red up, blue down), -1 bluish."""
    return np.array([1 + 0.10 * warmth, 1 + 0.02 * warmth, 1 - 0.10 * warmth], dtype=np.float32)


def relight(frame: Frame, angle: float, strength: float, warmth: float) -> Frame:
    """Apply the shading gradient and colour temperature to an (H, W, 3) uint8 RGB frame."""
    h, w = frame.shape[:2]
    field = shading((w, h), angle, strength)[..., None] * colour_gains(warmth)
    return np.clip(frame.astype(np.float32) * field + 0.5, 0, 255).astype(np.uint8)
