"""Face masks from the dense landmarks, as polygons in face-crop pixels, and mask operations (pure functions).

The polygons are stored with each face (see :mod:`changeling.faces.facefile`): ``hull`` (the face oval),
``extended`` (the oval pushed up over the forehead), ``left_eye``, ``right_eye`` (the subject's own left and
right, as in MediaPipe) and ``mouth``. Rasterise them with :func:`changeling.masks.raster.polygon_mask`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.masks import regions as R
from changeling.masks.raster import polygon_mask
from changeling.types import Mask

MASK_NAMES = ("hull", "extended", "left_eye", "right_eye", "mouth")  # the polygons every face file holds
Polygon = list[list[float]]  # [[x, y], ...] in face-crop pixels
FOREHEAD_RISE = 0.25  # the extended mask reaches this fraction of the chin-to-forehead distance above the oval
EYE_GROW = 1.4  # eye polygons: the eye contour's hull grown about its centre (lids and lashes)
MOUTH_GROW = 1.15  # mouth polygon: the outer lip contour's hull grown about its centre

Points2 = NDArray[np.float64]  # (N, 2)


def convex_hull(points: NDArray[np.floating]) -> Points2:
    """Convex hull (M, 2) of (N, 2) points, counter-clockwise in image coordinates as OpenCV orders it."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    return cv2.convexHull(p).reshape(-1, 2).astype(np.float64)


def clip_polygon(subject: NDArray[np.floating], clip: NDArray[np.floating]) -> Points2:
    """Part of polygon ``subject`` (N, 2) inside the convex polygon ``clip`` (M, 2) (Sutherland-Hodgman).

    Returns (K, 2); K < 3 when they do not overlap."""
    out = np.asarray(subject, dtype=np.float64).reshape(-1, 2)
    c = np.asarray(clip, dtype=np.float64).reshape(-1, 2)
    area2 = float(np.sum(c[:, 0] * np.roll(c[:, 1], -1) - np.roll(c[:, 0], -1) * c[:, 1]))
    orient = 1.0 if area2 >= 0 else -1.0
    edges = np.roll(c, -1, axis=0) - c  # (M, 2)
    sides = orient * (edges[:, None, 0] * (out[None, :, 1] - c[:, None, 1])
                      - edges[:, None, 1] * (out[None, :, 0] - c[:, None, 0]))  # (M, N)
    if np.all(sides >= 0):  # wholly inside already (the usual case)
        return out.copy()
    for i in range(len(c)):
        if len(out) == 0:
            break
        a, b = c[i], c[(i + 1) % len(c)]
        edge = b - a
        # > 0 on the inner side of edge a -> b
        side = orient * (edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0]))
        kept: list[np.ndarray] = []
        for j in range(len(out)):
            p, q = out[j], out[(j + 1) % len(out)]
            sp, sq = side[j], side[(j + 1) % len(out)]
            if sp >= 0:
                kept.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                kept.append(p + t * (q - p))
        out = np.array(kept, dtype=np.float64).reshape(-1, 2)
    return out


def _grow(points: Points2, factor: float) -> Points2:
    centre = points.mean(0)
    return centre + (points - centre) * factor


def _polygon(points: Points2) -> Polygon:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in points]


def face_masks(landmarks_in_face: NDArray[np.floating], size: int) -> dict[str, Polygon]:
    """Mask polygons (lists of [x, y] face-crop pixels) named as ``MASK_NAMES``, from (468 or 478, 2|3)
    landmarks already mapped into a ``size`` x ``size`` crop. Every polygon lies inside the crop
    ([0, size - 1] on both axes); eyes and mouth lie inside the hull; ``extended`` contains ``hull``. A region
    that falls wholly outside the crop is left out of the dict."""
    lm = np.asarray(landmarks_in_face, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < R.MESH_POINTS or lm.shape[1] not in (2, 3):
        raise ValueError(f"expected (468 or 478, 2 or 3) landmarks, got {lm.shape}")
    lm = lm[:, :2]
    if not np.all(np.isfinite(lm)):
        raise ValueError("landmarks are not finite")
    lim = float(size - 1)
    crop = np.array([[0.0, 0.0], [lim, 0.0], [lim, lim], [0.0, lim]])

    oval = lm[list(R.FACE_OVAL)]
    hull = convex_hull(oval)
    up = lm[R.FOREHEAD] - lm[R.CHIN]
    height = float(np.linalg.norm(up))
    up = up / max(height, 1e-9)
    eye_line = (lm[R.LEFT_EYE_OUTER] + lm[R.RIGHT_EYE_OUTER]) / 2
    top = lm[list(R.FOREHEAD_OVAL)]
    # how high each upper oval point sits above the eye line, 0 at the temples to 1 at the forehead top
    rise = np.clip((top - eye_line) @ up / max(float((lm[R.FOREHEAD] - eye_line) @ up), 1e-9), 0.0, 1.0)
    raised = top + np.outer(rise * FOREHEAD_RISE * height, up)
    extended = convex_hull(np.concatenate([oval, raised]))

    hull_in = clip_polygon(hull, crop)
    polys: dict[str, Points2] = {"hull": hull_in, "extended": clip_polygon(extended, crop)}
    for name, idx, grow in (("left_eye", R.LEFT_EYE, EYE_GROW), ("right_eye", R.RIGHT_EYE, EYE_GROW),
                            ("mouth", R.LIPS_OUTER, MOUTH_GROW)):
        part = _grow(convex_hull(lm[list(idx)]), grow)
        polys[name] = clip_polygon(part, hull_in) if len(hull_in) >= 3 else np.zeros((0, 2))
    return {name: _polygon(polys[name]) for name in MASK_NAMES if len(polys[name]) >= 3}


def rasterize_masks(polygons: Mapping[str, Sequence[Sequence[float]]], size: int,
                    scale: float = 1.0) -> dict[str, Mask]:
    """Each named polygon as a (size, size) float32 mask in [0, 1] (``scale`` maps polygon px to mask px)."""
    return {name: polygon_mask(size, [poly], scale=scale) for name, poly in polygons.items()}


def combine_masks(masks: Sequence[Mask]) -> Mask:
    """Element-wise minimum of equally shaped masks (a pixel is kept only where every mask keeps it)."""
    if not masks:
        raise ValueError("combine_masks needs at least one mask")
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"masks differ in shape: {sorted(shapes)}")
    return np.minimum.reduce([np.asarray(m, dtype=np.float32) for m in masks])


def erode_dilate(mask: Mask, px: int) -> Mask:
    """Grow (``px`` > 0) or shrink (``px`` < 0) a (H, W) mask by ``|px|`` pixels: a pixel joins (or leaves) when
    it lies within that Euclidean distance of the mask (or of its outside; beyond the image is outside)."""
    m = np.asarray(mask, dtype=np.float32)
    if px == 0:
        return m.copy()
    r = abs(int(px))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    kernel = (xx * xx + yy * yy <= r * r).astype(np.uint8)
    op = cv2.dilate if px > 0 else cv2.erode
    return np.asarray(op(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0.0), dtype=np.float32)


def feather(mask: Mask, px: float) -> Mask:
    """Soften a (H, W) mask's edge so it ramps from 0 to 1 over about ``2 * px`` pixels centred on the edge
    (Gaussian, sigma = px / 3). Values stay in [0, 1]."""
    m = np.asarray(mask, dtype=np.float32)
    if px <= 0:
        return m.copy()
    sigma = float(px) / 3.0
    k = 2 * int(np.ceil(px)) + 1
    out = cv2.GaussianBlur(m, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    return np.clip(out, 0.0, 1.0)
