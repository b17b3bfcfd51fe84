"""Temporal smoothing of face landmarks so the pasted face does not jitter.

A One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) per coordinate: an exponential low-pass whose cutoff
rises with the speed of the signal, so a still face is smoothed hard and a moving one is followed with little
lag. Speeds are measured in face sizes per second, so one setting behaves the same at any resolution, and
mostly from the whole face's motion (the mean velocity of its points, in which the points' independent
jitter averages out), plus a quarter of each point's own motion (so an opening mouth is followed too). Faces
are followed from frame to frame by their track id when the face source gives one, else by box overlap; a
face that was absent in the previous frame starts a fresh filter (no smoothing across cuts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

DEFAULT_DT = 1 / 30  # used when two frames carry the same time


@dataclass(frozen=True)
class OneEuroParams:
    """``min_cutoff`` (Hz): cutoff of a still signal; ``beta``: extra cutoff (Hz) per face size per second of
    speed; ``d_cutoff`` (Hz): cutoff of the speed estimate; ``own``: weight of a point's own motion (relative
    to the mean) in its speed."""

    min_cutoff: float
    beta: float
    d_cutoff: float = 1.0
    own: float = 0.25


def params_for_strength(strength: float) -> OneEuroParams | None:
    """Map the user's ``smooth`` setting in [0, 1] to filter parameters; 0 (or less) means off.

    The still-face cutoff falls geometrically from 8 Hz (strength near 0: barely smoothed at 30 fps) to
    0.1 Hz (strength 1); the speed term adds 8 Hz per face size per second, so a face that moves half its
    size per second is followed at about 5 Hz whatever the strength.
    """
    if not math.isfinite(strength) or strength <= 0:
        return None
    s = min(float(strength), 1.0)
    return OneEuroParams(min_cutoff=8.0 * (0.1 / 8.0) ** s, beta=8.0, d_cutoff=1.0, own=0.25)


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)  # type: ignore[no-any-return]


class OneEuroFilter:
    """One-Euro filter over (N, D) arrays of N points: point ``i``'s cutoff follows the speed
    ``|mean velocity| + own * |velocity_i - mean velocity|`` (Euclidean norms over ``D``)."""

    def __init__(self, params: OneEuroParams) -> None:
        self.params = params
        self._x: NDArray[np.float64] | None = None
        self._dx: NDArray[np.float64] | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = None
        self._t = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> NDArray[np.float64]:
        """Filter one sample ``x`` taken at time ``t`` (seconds); ``scale`` is the face size in the units of
        ``x`` (speeds are divided by it). Returns the smoothed sample (float64, ``x``'s shape)."""
        xv = np.asarray(x, dtype=np.float64)
        if xv.ndim != 2:
            raise ValueError(f"expected (N, D) points, got {xv.shape}")
        if self._x is None or self._t is None or self._x.shape != xv.shape:
            self._x, self._dx, self._t = xv.copy(), np.zeros_like(xv), float(t)
            return xv.copy()
        dt = float(t) - self._t
        if not dt > 0:
            dt = DEFAULT_DT
        p = self.params
        dx = (xv - self._x) / dt
        a_d = _alpha(p.d_cutoff, dt)
        assert self._dx is not None
        dx_hat = self._dx + a_d * (dx - self._dx)
        common = dx_hat.mean(axis=0, keepdims=True)  # (1, D)
        speed = (np.linalg.norm(common, axis=-1, keepdims=True)
                 + p.own * np.linalg.norm(dx_hat - common, axis=-1, keepdims=True)) / max(float(scale), 1e-9)
        a = _alpha(p.min_cutoff + p.beta * speed, dt)
        x_hat = self._x + a * (xv - self._x)
        self._x, self._dx, self._t = x_hat, dx_hat, float(t)
        return x_hat.copy()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def face_size(landmarks: np.ndarray) -> float:
    """Size of a face in pixels: the larger side of its landmarks' bounding box."""
    p = np.asarray(landmarks)[:, :2]
    span = p.max(axis=0) - p.min(axis=0)
    return float(max(span.max(), 1.0))


@dataclass
class _Track:
    filt: OneEuroFilter | None  # None: smoothing off, the track only follows the face
    box: NDArray[np.float64]
    seen: int  # index of the last frame the track was seen in


@dataclass
class LandmarkSmoother:
    """Smooths the landmarks of every face over a video. Call :meth:`update` once per frame, in order.

    ``params`` ``None`` passes landmarks through unchanged (smoothing off); the faces are still followed, so
    :attr:`keys` names each face of the last frame by its track whether or not it is smoothed.
    """

    params: OneEuroParams | None
    min_iou: float = 0.3
    keys: list[int] = field(default_factory=list, init=False)  # the last frame's faces' track keys, in order
    _tracks: dict[int, _Track] = field(default_factory=dict, init=False)
    _next_id: int = field(default=0, init=False)
    _frame: int = field(default=-1, init=False)

    @classmethod
    def with_strength(cls, strength: float) -> LandmarkSmoother:
        return cls(params_for_strength(strength))

    def update(self, time: float, landmarks: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
               track_ids: Sequence[int | None] | None = None) -> list[NDArray[np.float32]]:
        """Smooth the faces of one frame. ``landmarks[i]``: (N, 2|3) frame pixels of face ``i``;
        ``boxes[i]``: (4,) x0, y0, x1, y1; ``track_ids[i]``: the face source's id or ``None``.
        Returns the smoothed landmarks in the same order (float32)."""
        self._frame += 1
        ids = self._assign(boxes, track_ids)
        self.keys = ids
        out: list[NDArray[np.float32]] = []
        for lm, box, tid in zip(landmarks, boxes, ids, strict=True):
            track = self._tracks.get(tid)
            b = np.asarray(box, dtype=np.float64)
            if track is None or track.seen != self._frame - 1:
                track = _Track(None if self.params is None else OneEuroFilter(self.params), b, self._frame)
                self._tracks[tid] = track
            track.box, track.seen = b, self._frame
            if track.filt is None:
                out.append(np.asarray(lm, dtype=np.float32))
            else:
                out.append(track.filt(lm, time, scale=face_size(lm)).astype(np.float32))
        # forget tracks that were not seen in this frame
        for tid in [k for k, t in self._tracks.items() if t.seen != self._frame]:
            del self._tracks[tid]
        return out

    def _assign(self, boxes: Sequence[np.ndarray], track_ids: Sequence[int | None] | None) -> list[int]:
        ids: list[int | None] = list(track_ids) if track_ids is not None else [None] * len(boxes)
        if len(ids) != len(boxes):
            raise ValueError("track_ids must match the faces")
        # source ids live in their own key space (non-negative); matched ones get negative keys
        keys: list[int] = [int(i) if i is not None else -1 for i in ids]
        free = {k: t for k, t in self._tracks.items() if k < 0 and t.seen == self._frame - 1}
        for i, tid in enumerate(ids):
            if tid is not None:
                if tid < 0:
                    raise ValueError("track ids must be non-negative")
                continue
            b = np.asarray(boxes[i], dtype=np.float64)
            best, best_iou = None, self.min_iou
            for k, t in free.items():
                v = _iou(b, t.box)
                if v >= best_iou:
                    best, best_iou = k, v
            if best is None:
                self._next_id += 1
                best = -self._next_id
            else:
                del free[best]
            keys[i] = best
        return keys
