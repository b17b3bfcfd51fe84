"""Regions of interest (rotated squares in frame pixels) and cropping them out of frames in batches.

Conventions follow MediaPipe's CPU path: a crop of ``n`` pixels spans the ROI's side, crop pixel (u, v) is
sampled at the frame point that the ROI maps crop coordinate (u, v) to (so crop coordinate 0 is the ROI's
edge and ``n`` the opposite edge), frame pixel centres sit at integer coordinates and sampling is bilinear.
A point the model reports at crop coordinate (u, v) therefore lies at ``roi_matrix(roi, n) @ (u, v, 1)``.
Rotation is the angle of the ROI's x axis in the frame (radians, y pointing down, so positive turns clockwise
on screen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

Border = Literal["zero", "replicate"]

DETECTION_ROI_SCALE = 1.5  # face_detection_front_detection_to_roi.pbtxt
LANDMARK_ROI_SCALE = 1.5  # face_landmark_landmarks_to_roi.pbtxt
LANDMARK_ROTATION_POINTS = (33, 133)  # mesh points whose line sets the ROI rotation


@dataclass(frozen=True)
class Roi:
    """A square region of a frame: centre (x, y) px, side px, rotation radians."""

    center: NDArray[np.float32]  # (2,)
    size: float
    rotation: float = 0.0


def normalize_radians(angle: float) -> float:
    """Wrap to [-pi, pi)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation_from(start: NDArray[np.floating], end: NDArray[np.floating]) -> float:
    """Rotation that makes the start->end vector the ROI's x axis (MediaPipe's DetectionsToRects rule)."""
    return normalize_radians(-math.atan2(-(float(end[1]) - float(start[1])), float(end[0]) - float(start[0])))


def roi_from_box(box: NDArray[np.floating], rotation: float, scale: float) -> Roi:
    """Square ROI around an axis-aligned box (x0, y0, x1, y1): the box's longer side times ``scale``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float32)
    return Roi(center, max(x1 - x0, y1 - y0) * scale, rotation)


class BoxWithKeypoints(Protocol):
    """What :func:`roi_from_detection` reads (a :class:`changeling.detect.Detection`)."""

    @property
    def box(self) -> NDArray[np.float32]:
        """(4,) x0, y0, x1, y1 frame px."""

    @property
    def keypoints(self) -> NDArray[np.float32]:
        """(6, 2) frame px; 0 and 1 are the eyes."""


def roi_from_detection(det: BoxWithKeypoints) -> Roi:
    """The landmark ROI for a face detection: box side × 1.5, rotated by the eye line (keypoints 0 -> 1)."""
    box = np.asarray(det.box, dtype=np.float64)
    kp = np.asarray(det.keypoints, dtype=np.float64)
    return roi_from_box(box, rotation_from(kp[0], kp[1]), DETECTION_ROI_SCALE)


def roi_from_landmarks(points: NDArray[np.floating]) -> Roi:
    """The next frame's landmark ROI from face-mesh points (N >= 468, 2 or 3): the bounding box of the 468
    mesh points × 1.5, rotated by the line from point 33 to point 133."""
    return rois_from_landmarks(np.asarray(points)[None])[0]


def rois_from_landmarks(points: NDArray[np.floating]) -> list[Roi]:
    """:func:`roi_from_landmarks` for a batch of meshes (B, N >= 468, 2 or 3)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[1] < 468 or pts.shape[2] < 2:
        raise ValueError(f"expected (B, >=468, 2 or 3) face-mesh points, got {pts.shape}")
    pts = pts[:, :468, :2]
    lo, hi = pts.min(1), pts.max(1)
    centers = ((lo + hi) / 2).astype(np.float32)
    sizes = (hi - lo).max(1) * LANDMARK_ROI_SCALE
    a, b = LANDMARK_ROTATION_POINTS
    d = pts[:, b] - pts[:, a]
    rotations = np.arctan2(d[:, 1], d[:, 0])
    return [Roi(c, float(s), normalize_radians(float(r))) for c, s, r in zip(centers, sizes, rotations, strict=True)]


def roi_from_two_points(start: NDArray[np.floating], end: NDArray[np.floating], scale: float) -> Roi:
    """ROI around two points (e.g. eye corners): their bounding box's longer side × ``scale``, rotated by the
    start -> end line (MediaPipe's IrisLandmarkLandmarksToRoi)."""
    return rois_from_point_pairs(np.asarray(start)[None], np.asarray(end)[None], scale)[0]


def rois_from_point_pairs(start: NDArray[np.floating], end: NDArray[np.floating], scale: float) -> list[Roi]:
    """:func:`roi_from_two_points` for (N, >=2) arrays of start and end points."""
    a, b = np.asarray(start, np.float64)[:, :2], np.asarray(end, np.float64)[:, :2]
    centers = ((np.minimum(a, b) + np.maximum(a, b)) / 2).astype(np.float32)
    sizes = np.abs(b - a).max(1) * scale
    rotations = np.arctan2(b[:, 1] - a[:, 1], b[:, 0] - a[:, 0])
    return [Roi(c, float(s), normalize_radians(float(r))) for c, s, r in zip(centers, sizes, rotations, strict=True)]


def letterbox_roi(width: int, height: int) -> Roi:
    """The whole frame padded to a centred square (the detectors' keep-aspect-ratio input)."""
    return Roi(np.array([width / 2, height / 2], dtype=np.float32), float(max(width, height)), 0.0)


def roi_matrix(roi: Roi, n: int, flip: bool = False) -> NDArray[np.float64]:
    """(2, 3) affine taking crop coordinates (u, v) of an ``n``-pixel crop to frame pixels. With ``flip`` the
    crop is mirrored left-right: crop u shows what the unmirrored crop has at n - u."""
    return roi_matrices([roi], n, [flip])[0]


def roi_matrices(rois: Sequence[Roi], n: int, flips: Sequence[bool] | None = None) -> NDArray[np.float64]:
    """:func:`roi_matrix` for many ROIs: (N, 2, 3)."""
    count = len(rois)
    centers = np.array([r.center for r in rois], dtype=np.float64).reshape(count, 2)
    sizes = np.array([r.size for r in rois], dtype=np.float64)
    rot = np.array([r.rotation for r in rois], dtype=np.float64)
    c, s, k = np.cos(rot), np.sin(rot), sizes / n
    m = np.empty((count, 2, 3), dtype=np.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = c * k, -s * k, centers[:, 0] - 0.5 * sizes * (c - s)
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = s * k, c * k, centers[:, 1] - 0.5 * sizes * (s + c)
    if flips is not None:
        flip = np.asarray(flips, dtype=bool)
        # crop u -> n - u: negate the u column and move the offset by n × that column
        m[flip, :, 2] += n * m[flip, :, 0]
        m[flip, :, 0] *= -1
    return m


def apply_matrix(m: NDArray[np.float64], points: NDArray[np.floating]) -> NDArray[np.float64]:
    """Apply a (2, 3) affine to (..., 2) points."""
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def _crop_grid(n: int, device: torch.device) -> torch.Tensor:
    """(n*n, 3) homogeneous crop coordinates (u, v, 1), row-major over v then u."""
    r = torch.arange(n, dtype=torch.float64, device=device)
    v, u = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(n * n, dtype=torch.float64, device=device)], 1)


def sample_bilinear(image: torch.Tensor, index: torch.Tensor, points: torch.Tensor, border: Border) -> torch.Tensor:
    """Bilinear samples of uint8 images without converting whole frames to float.

    ``image`` (F, H, W, 3) uint8; ``index`` (K,) which image each point reads; ``points`` (K, 2) float x, y in
    pixels (centres at integers). ``border`` 'zero' treats outside pixels as 0, 'replicate' clamps to the edge
    (both as OpenCV and ``grid_sample`` do). Returns (K, 3) float32 in [0, 255].
    """
    _, h, w, _ = image.shape
    flat = image.reshape(-1, 3)
    x, y = points[:, 0], points[:, 1]
    if border == "replicate":
        x, y = x.clamp(0, w - 1), y.clamp(0, h - 1)
    x0f, y0f = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0f).unsqueeze(1), (y - y0f).unsqueeze(1)
    x0, y0 = x0f.long(), y0f.long()
    base = index.long() * (h * w)
    out = torch.zeros(points.shape[0], 3, dtype=torch.float32, device=image.device)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            weight = wx * wy
            if border == "zero":
                inside = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)).unsqueeze(1)
                weight = weight * inside
            rows = base + yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)
            out += flat[rows].float() * weight
    return out


@dataclass
class FrameStack:
    """Frames prepared once for every crop of a batch. On an accelerator, same-size frames are uploaded together
    as (F, H, W, 3) uint8 groups and sampled with :func:`sample_bilinear`; on the CPU the arrays are used as
    they are and cropped with OpenCV (fixed-point bilinear, like MediaPipe's CPU path)."""

    frames: list[NDArray[np.uint8]]
    device: torch.device
    groups: list[torch.Tensor]
    location: list[tuple[int, int]]  # frame i -> (group, index in group); empty on the CPU

    @classmethod
    def build(cls, frames: Sequence[NDArray[np.uint8]], device: torch.device,
              gather: bool | None = None) -> FrameStack:
        """``gather`` picks the tensor path (default: on any device but the CPU) over OpenCV's warp."""
        arrays = [np.ascontiguousarray(f) for f in frames]
        if not (device.type != "cpu" if gather is None else gather):
            return cls(arrays, device, [], [])
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(arrays):
            by_size.setdefault(f.shape, []).append(i)
        groups, location = [], [(0, 0)] * len(arrays)
        for g, members in enumerate(by_size.values()):
            group = torch.empty((len(members), *arrays[members[0]].shape), dtype=torch.uint8, device=device)
            for j, i in enumerate(members):  # frame by frame: no host-side stacking copy
                frame = arrays[i] if arrays[i].flags.writeable else arrays[i].copy()
                group[j].copy_(torch.from_numpy(frame))
                location[i] = (g, j)
            groups.append(group)
        return cls(arrays, device, groups, location)

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) of frame ``i``."""
        return int(self.frames[i].shape[1]), int(self.frames[i].shape[0])

    def __len__(self) -> int:
        return len(self.frames)


def _crop_cpu(stack: FrameStack, matrices: NDArray[np.float64], frame_index: Sequence[int], n: int,
              border: Border) -> torch.Tensor:
    """OpenCV's bilinear warp on the uint8 frames, as MediaPipe's CPU image-to-tensor converter does."""
    mode = cv2.BORDER_CONSTANT if border == "zero" else cv2.BORDER_REPLICATE
    out = np.empty((len(matrices), n, n, 3), dtype=np.uint8)
    for i, (m, f) in enumerate(zip(matrices, frame_index, strict=True)):
        cv2.warpAffine(stack.frames[f], m, (n, n), dst=out[i], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=mode, borderValue=(0, 0, 0))
    return torch.from_numpy(out).float()


def _crop_device(stack: FrameStack, matrices: NDArray[np.float64], frame_index: Sequence[int], n: int,
                 border: Border) -> torch.Tensor:
    """Bilinear gather from the uploaded uint8 frames, one pass per group of same-size frames."""
    device = stack.device
    count = len(matrices)
    out = torch.empty(count, n * n, 3, dtype=torch.float32, device=device)
    grid = _crop_grid(n, device)
    points = (grid @ torch.from_numpy(matrices).to(device).transpose(1, 2)).float()  # (N, n*n, 2) frame px
    by_group: dict[int, list[int]] = {}
    for i, f in enumerate(frame_index):
        by_group.setdefault(stack.location[f][0], []).append(i)
    for g, members in by_group.items():
        idx = torch.tensor(members, device=device)
        within = torch.tensor([stack.location[frame_index[i]][1] for i in members], device=device)
        samples = sample_bilinear(stack.groups[g], within.repeat_interleave(n * n), points[idx].reshape(-1, 2),
                                  border)
        out[idx] = samples.view(len(members), n * n, 3)
    return out.view(count, n, n, 3)


def crop_rois(stack: FrameStack, rois: Sequence[Roi], frame_index: Sequence[int], n: int, border: Border,
              flips: Sequence[bool] | None = None) -> torch.Tensor:
    """Crop ``rois`` (each from frame ``frame_index[i]`` of ``stack``) to (N, 3, n, n) float32 RGB in [0, 255]
    on the stack's device (channels-last in memory). ``flips[i]`` mirrors crop i left-right."""
    flips = flips if flips is not None else [False] * len(rois)
    if not rois:
        return torch.empty(0, 3, n, n, dtype=torch.float32, device=stack.device)
    matrices = roi_matrices(rois, n, flips)
    crop = _crop_device if stack.groups else _crop_cpu
    return crop(stack, matrices, frame_index, n, border).to(stack.device).permute(0, 3, 1, 2)
