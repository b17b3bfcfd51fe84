"""Piecewise-affine warping along a triangle mesh, vectorised.

The mesh's topology is fixed (a Delaunay triangulation of the rest-pose points); each frame moves the points.
An output pixel takes its colour from the source point that its triangle's affine map sends it to: the
triangles are rasterised once per frame into an index image (farthest first, so a nearer triangle wins where
a turned head folds the mesh over itself), every pixel's source coordinate is computed at once from its
triangle's 2x3 matrix, and one ``cv2.remap`` samples the source. Neighbouring triangles share their edge
points, so the map is continuous across edges: no tearing.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.spatial import Delaunay

_SHIFT = 4  # sub-pixel bits for rasterising the triangles
_MIN_AREA = 1e-3  # px^2: collapsed triangles (a closed eyelid) own no pixels
_SQUASHED = 0.15  # a triangle below this share of its rest area is seen (nearly) edge-on


def triangulate(points: NDArray[np.floating]) -> NDArray[np.int32]:
    """(M, 3) vertex indices of the Delaunay triangulation of (N, 2) points."""
    return np.ascontiguousarray(Delaunay(np.asarray(points, dtype=np.float64)).simplices.astype(np.int32))


def triangle_affines(src: NDArray[np.floating], dst: NDArray[np.floating],
                     triangles: NDArray[np.int32]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per triangle, the (2, 3) matrix taking destination points to source points, and the signed area of the
    destination triangle (px^2). Collapsed triangles get a zero matrix; they are not drawn."""
    d = np.asarray(dst, np.float64)[triangles]  # (M, 3, 2)
    s = np.asarray(src, np.float64)[triangles]
    e1, e2 = d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # twice the signed area
    safe = np.where(np.abs(det) < 1e-12, 1.0, det)
    # inverse of the linear part [e1 e2] (columns), then the source edges through it
    inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], 1), np.stack([-e1[:, 1], e1[:, 0]], 1)], 1) / safe[:, None, None]
    f1, f2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    lin = np.stack([f1, f2], axis=2) @ inv  # (M, 2, 2): dst offsets -> src offsets
    lin[np.abs(det) < 1e-12] = 0.0
    offset = s[:, 0] - np.einsum("mij,mj->mi", lin, d[:, 0])
    return np.concatenate([lin, offset[:, :, None]], axis=2), 0.5 * det


def rasterise(dst: NDArray[np.floating], triangles: NDArray[np.int32], size: tuple[int, int],
              order: NDArray[np.integer] | None = None,
              area: NDArray[np.float64] | None = None) -> NDArray[np.int32]:
    """(H, W) index of the triangle that owns each pixel centre, -1 outside the mesh. ``order``: drawing order
    (later wins); ``area``: skip triangles smaller than ``_MIN_AREA``."""
    w, h = size
    owner = np.full((h, w), -1, dtype=np.int32)
    pts = np.round(np.asarray(dst, np.float64) * (1 << _SHIFT)).astype(np.int32)
    idx = np.arange(len(triangles)) if order is None else np.asarray(order)
    if area is not None:
        idx = idx[np.abs(area[idx]) >= _MIN_AREA]
    polys = pts[triangles[idx]]  # (K, 3, 2)
    for poly, k in zip(polys, idx.tolist(), strict=True):
        cv2.fillConvexPoly(owner, poly, k, lineType=cv2.LINE_8, shift=_SHIFT)
    return owner


def maps_from_owner(owner: NDArray[np.int32], affines: NDArray[np.float64],
                    fallback: NDArray[np.float64]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Source x and y of every output pixel: its triangle's affine, or ``fallback`` (2, 3) outside the mesh."""
    h, w = owner.shape
    table = np.concatenate([affines, fallback[None]], axis=0).astype(np.float32)  # (M + 1, 2, 3)
    a = table[np.where(owner < 0, len(affines), owner)]  # (H, W, 2, 3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
    map_y = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
    return map_x, map_y


def piecewise_affine_maps(src: NDArray[np.floating], dst: NDArray[np.floating], triangles: NDArray[np.int32],
                          size: tuple[int, int], fallback: NDArray[np.float64],
                          depth: NDArray[np.floating] | None = None,
                          ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
    """``cv2.remap`` maps for an output of ``size`` (W, H) whose mesh points ``dst`` (N, 2) show the source
    points ``src`` (N, 2), and a mask of the pixels on folds. ``depth`` (N,) orders overlapping triangles
    (larger is farther, drawn first); ``fallback`` (2, 3) maps output pixels outside the mesh to the source.

    Where a turned head folds the mesh (a triangle's orientation flips) the nearer surface hides the farther
    one along a hard seam, and just before a fold a triangle seen edge-on is squashed to a sliver whose pixels
    sample a much larger source region. The mask marks the pixels of folded and squashed triangles (below
    ``_SQUASHED`` of their rest area) and their neighbours, which :func:`warp` softens."""
    affines, area = triangle_affines(src, dst, triangles)
    _, src_area = triangle_affines(src, src, triangles)
    order = None
    if depth is not None:
        order = np.argsort(-np.asarray(depth, np.float64)[triangles].mean(axis=1), kind="stable")
    owner = rasterise(dst, triangles, size, order=order, area=area)
    ratio = area / np.where(np.abs(src_area) < 1e-12, 1.0, src_area)
    folded = np.append(ratio < _SQUASHED, False)  # index -1 (outside the mesh) is not folded
    folds = cv2.dilate(folded[owner].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    map_x, map_y = maps_from_owner(owner, affines, fallback)
    return map_x, map_y, folds


def warp(image: NDArray[np.uint8], maps: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]],
         ) -> NDArray[np.uint8]:
    """Sample ``image`` (H0, W0, C) uint8 at the maps (bilinear; points outside reflect the border); pixels on
    folds are replaced by their 3x3 neighbourhood's mean, which hides the staircase of a hard seam."""
    out = np.asarray(cv2.remap(image, maps[0], maps[1], interpolation=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101), dtype=np.uint8)
    folds = maps[2]
    if folds.any():
        soft = cv2.blur(out, (3, 3))
        out[folds] = soft[folds]
    return out
