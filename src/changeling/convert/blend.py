"""Pasting a face crop back into its frame (pure functions).

Only the frame's box that the crop's mask covers is touched: the crop and its mask are warped into that box
with the crop -> frame transform and alpha-blended there, so the cost follows the face's size, not the
frame's, and every pixel outside the mask stays bit-exact.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from changeling.types import Affine, Frame, Mask

Interpolation = Literal["linear", "cubic"]
_FLAGS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def _shift(affine: Affine, x0: int, y0: int) -> Affine:
    """The frame -> crop affine as seen from a box whose top-left pixel is frame pixel (x0, y0)."""
    a = np.asarray(affine, dtype=np.float64)
    out = a.copy()
    out[:, 2] = a[:, :2] @ np.array([x0, y0], dtype=np.float64) + a[:, 2]
    return out


def paste_box(mask: Mask, affine: Affine, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), the half-open box of frame pixels that the mask's non-zero part can reach, or
    ``None`` when it is empty or lies outside the frame."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    # a crop pixel's value reaches frame pixels within one crop pixel of it (bilinear footprint)
    cx0, cx1 = cols[0] - 1.0, cols[-1] + 1.0
    cy0, cy1 = rows[0] - 1.0, rows[-1] + 1.0
    a = np.asarray(affine, dtype=np.float64)
    inv = np.linalg.inv(a[:, :2])
    corners = np.array([[cx0, cy0], [cx1, cy0], [cx1, cy1], [cx0, cy1]]) - a[:, 2]
    pts = corners @ inv.T
    h, w = frame_shape[:2]
    x0 = max(int(np.floor(pts[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 2, w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def warp_to_box(image: np.ndarray, affine: Affine, box: tuple[int, int, int, int], *,
                interpolation: Interpolation = "linear", border: Literal["constant", "replicate"] = "constant",
                ) -> np.ndarray:
    """Sample a crop-space image into the frame box ``box`` (x0, y0, x1, y1) using the frame -> crop
    ``affine`` (each box pixel looks up its crop position)."""
    x0, y0, x1, y1 = box
    bmode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(image, _shift(affine, x0, y0), (x1 - x0, y1 - y0),
                          flags=_FLAGS[interpolation] | cv2.WARP_INVERSE_MAP, borderMode=bmode, borderValue=0)


def paste_back(frame: Frame, face_crop: np.ndarray, mask: Mask, affine: Affine, *,
               interpolation: Interpolation = "linear", inplace: bool = False) -> Frame:
    """Blend ``face_crop`` into ``frame`` where ``mask`` says, through the frame -> crop ``affine``.

    ``frame``: (H, W, 3) uint8. ``face_crop``: (S, S, 3) uint8 or float32 in [0, 1]. ``mask``: (S, S) float
    in [0, 1]. ``affine``: (2, 3) frame -> crop. Returns the blended frame (a copy unless ``inplace``);
    pixels where the warped mask is 0 keep their exact values.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    if face_crop.ndim != 3 or face_crop.shape[2] != 3 or mask.shape != face_crop.shape[:2]:
        raise ValueError(f"expected an (S, S, 3) crop and an (S, S) mask, got {face_crop.shape} and {mask.shape}")
    out = frame if inplace else frame.copy()
    box = paste_box(mask, affine, frame.shape)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    face = face_crop.astype(np.float32) if face_crop.dtype == np.uint8 else face_crop.astype(np.float32) * 255.0
    # the face is sampled with edge replication so its border never pulls black in; the mask bounds it
    f = warp_to_box(face, affine, box, interpolation=interpolation, border="replicate")
    m = warp_to_box(np.ascontiguousarray(mask, dtype=np.float32), affine, box, interpolation="linear")
    np.clip(m, 0.0, 1.0, out=m)
    roi = out[y0:y1, x0:x1]
    base = roi.astype(np.float32)
    blended = base + (f - base) * m[..., None]
    np.clip(blended, 0.0, 255.0, out=blended)
    out[y0:y1, x0:x1] = (blended + 0.5).astype(np.uint8)
    return out


def scale_about_centre(affine: Affine, scale: float, size: int) -> Affine:
    """A frame -> crop affine whose face is pasted ``scale`` times larger (about the crop's centre)."""
    a = np.asarray(affine, dtype=np.float64)
    if scale == 1.0:
        return a
    c = (size - 1) / 2.0
    out = a / scale
    out[:, 2] = (a[:, 2] - c) / scale + c
    return out
