"""The occlusion mask drawn over a face, for previews and the UI: the part of the face that something covers
tinted red, the visible face tinted green, the rest untouched. (Over a whole frame: convert's preview,
:func:`changeling.convert.previews.frame_overlay`, pastes these tints back.)"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from changeling.types import Frame, Mask

COVERED = np.array([235, 40, 40], np.uint8)
VISIBLE = np.array([40, 200, 80], np.uint8)
COVERED_ALPHA, VISIBLE_ALPHA = 0.6, 0.25


def tint_layers(visible: Mask, outline: Mask) -> list[tuple[NDArray[np.uint8], Mask]]:
    """(colour, weight) of the two tints: covered = outline and not visible, visible = both."""
    o = np.clip(np.asarray(outline, np.float32), 0, 1)
    v = np.clip(np.asarray(visible, np.float32), 0, 1) * o
    return [(COVERED, (np.clip(o - v, 0, 1) * COVERED_ALPHA).astype(np.float32)),
            (VISIBLE, (v * VISIBLE_ALPHA).astype(np.float32))]


def tint(image: Frame, visible: Mask, outline: Mask, *, green: bool = True) -> Frame:
    """An aligned face (S, S, 3) uint8 with its covered part (``outline`` and not ``visible``) in red and its
    visible part in green (unless not ``green``: then only the red); masks (S, S) in [0, 1]."""
    out = image.astype(np.float32)
    for colour, weight in tint_layers(visible, outline)[:None if green else 1]:
        out = out * (1 - weight[..., None]) + colour.astype(np.float32) * weight[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
