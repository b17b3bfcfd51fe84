"""Face tracking over video frames, as MediaPipe's face-landmark front graph does it: the landmarks of one frame
place the next frame's ROI, and the detector runs only when fewer than ``max_faces`` faces are tracked (a face
was lost, or none yet), or every ``redetect_every`` frames when set.

Tracking is sequential by nature. To batch on an accelerator, ``lanes`` splits each call's frames into that
many contiguous runs tracked side by side: every step runs the landmarker once for all lanes and the detector
once for all lanes that need it. Lane 0 continues the previous call's tracks; the other lanes start by
detecting. ``lanes=1`` (the default) is plain sequential tracking.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from changeling.detect.detection import Detector
from changeling.detect.frames import stack_frames
from changeling.detect.landmarker import FaceLandmarker
from changeling.detect.roi import FrameStack, Roi, roi_from_detection
from changeling.types import Frame

log = logging.getLogger(__name__)

SAME_FACE_IOU = 0.5  # ROIs overlapping more than this are taken to hold the same face


@dataclass
class TrackedFace:
    """One face in one frame."""

    landmarks: NDArray[np.float32]  # (478 or 468, 3) x, y frame px, z relative
    box: NDArray[np.float32]  # (4,) x0, y0, x1, y1: bounding box of the 468 mesh points
    score: float  # face-presence probability from the landmark model
    detected: bool  # True when the detector ran on this frame to find this face
    roi: Roi  # the region the landmarks were taken from
    track_id: int = 0


@dataclass
class _Track:
    roi: Roi  # where to look in the next frame
    track_id: int


@dataclass
class _Lane:
    frames: list[int]  # frame indices of this lane, in order
    tracks: list[_Track] = field(default_factory=list)


def roi_iou(a: Roi, b: Roi) -> float:
    """IoU of the axis-aligned squares of two ROIs (rotation ignored)."""
    ha, hb = a.size / 2, b.size / 2
    ix = min(a.center[0] + ha, b.center[0] + hb) - max(a.center[0] - ha, b.center[0] - hb)
    iy = min(a.center[1] + ha, b.center[1] + hb) - max(a.center[1] - ha, b.center[1] - hb)
    inter = max(float(ix), 0.0) * max(float(iy), 0.0)
    union = a.size ** 2 + b.size ** 2 - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Detect once, then follow faces with the landmarker. Stateful across :meth:`process` calls (feed a video
    in order, in chunks); :meth:`reset` forgets the tracks. Any :class:`~changeling.detect.detection.Detector`
    will do (see :mod:`changeling.detect.registry`)."""

    def __init__(self, detector: Detector, landmarker: FaceLandmarker, max_faces: int = 1,
                 min_presence: float = 0.5, redetect_every: int = 0, lanes: int = 1) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if redetect_every < 0 or lanes < 1:
            raise ValueError("redetect_every must be >= 0 and lanes >= 1")
        self.detector, self.landmarker = detector, landmarker
        self.max_faces, self.min_presence = max_faces, min_presence
        self.redetect_every, self.lanes = redetect_every, lanes
        self.reset()

    def reset(self) -> None:
        """Forget all tracks (e.g. at a scene cut or a new video)."""
        self.detector_runs = 0  # frames the detector has looked at since the reset (statistics, tests)
        self._tracks: list[_Track] = []
        self._seen = 0  # frames processed since the last reset
        self._next_id = 0

    def process(self, frames: Sequence[Frame]) -> list[list[TrackedFace]]:
        """Faces in each frame (in order), continuing from the previous call's frames."""
        stack = stack_frames(frames, self.detector.device)
        count = len(stack)
        results: list[list[TrackedFace]] = [[] for _ in range(count)]
        if count == 0:
            return results
        lanes = self._split(count)
        lanes[0].tracks = self._tracks
        for step in range(max(len(lane.frames) for lane in lanes)):
            active = [lane for lane in lanes if step < len(lane.frames)]
            self._step(stack, active, [lane.frames[step] for lane in active], results)
        self._tracks = lanes[-1].tracks
        self._seen += count
        return results

    def _split(self, count: int) -> list[_Lane]:
        n = min(self.lanes, count)
        bounds = np.linspace(0, count, n + 1).round().astype(int)
        return [_Lane(list(range(bounds[i], bounds[i + 1]))) for i in range(n)]

    def _redetect_due(self, frame: int) -> bool:
        return self.redetect_every > 0 and (self._seen + frame) % self.redetect_every == 0

    def _step(self, stack: FrameStack, lanes: list[_Lane], frames: list[int],
              results: list[list[TrackedFace]]) -> None:
        # 1. Follow every lane's tracks into this frame (one landmarker call for all lanes).
        owners = [(li, tr) for li, lane in enumerate(lanes) for tr in lane.tracks]
        followed = self._landmark(stack, [tr.roi for _, tr in owners], [frames[li] for li, _ in owners],
                                  [tr.track_id for _, tr in owners], detected=False)
        per_lane: list[list[tuple[TrackedFace, Roi]]] = [[] for _ in lanes]
        for (li, _), face in zip(owners, followed, strict=True):
            if face is not None:
                per_lane[li].append(face)
        for li in range(len(lanes)):
            per_lane[li] = self._dedupe(per_lane[li])
        # 2. Detect where faces are missing or a re-detection is due (one detector call for all lanes).
        want = [li for li, f in enumerate(frames) if len(per_lane[li]) < self.max_faces or self._redetect_due(f)]
        if want:
            detections = self.detector.detect_indices(stack, [frames[li] for li in want])
            self.detector_runs += len(want)
            new_rois: list[Roi] = []
            new_frames: list[int] = []
            new_lanes: list[int] = []
            for li, dets in zip(want, detections, strict=True):
                if self._redetect_due(frames[li]):
                    per_lane[li] = [p for p in per_lane[li]
                                    if any(roi_iou(p[0].roi, roi_from_detection(d)) > SAME_FACE_IOU for d in dets)]
                for d in dets:
                    roi = roi_from_detection(d)
                    taken = [p[0].roi for p in per_lane[li]] + [r for r, l2 in zip(new_rois, new_lanes, strict=True)
                                                                if l2 == li]
                    if len(taken) >= self.max_faces or any(roi_iou(roi, t) > SAME_FACE_IOU for t in taken):
                        continue
                    new_rois.append(roi)
                    new_frames.append(frames[li])
                    new_lanes.append(li)
            ids = list(range(self._next_id, self._next_id + len(new_rois)))
            self._next_id += len(new_rois)
            found = self._landmark(stack, new_rois, new_frames, ids, detected=True)
            for li, face in zip(new_lanes, found, strict=True):
                if face is not None and len(per_lane[li]) < self.max_faces:
                    per_lane[li].append(face)
        # 3. Record the faces; their landmarks place the next frame's ROIs.
        for li, lane in enumerate(lanes):
            results[frames[li]] = [face for face, _ in per_lane[li]]
            lane.tracks = [_Track(next_roi, face.track_id) for face, next_roi in per_lane[li]]

    def _landmark(self, stack: FrameStack, rois: list[Roi], frames: list[int], ids: list[int],
                  detected: bool) -> list[tuple[TrackedFace, Roi] | None]:
        """Landmarks for each ROI; None where the face-presence score is below ``min_presence``."""
        if not rois:
            return []
        lm = self.landmarker(stack, rois, frames)
        out: list[tuple[TrackedFace, Roi] | None] = []
        for i, track_id in enumerate(ids):
            if lm.presence[i] < self.min_presence:
                out.append(None)
                continue
            pts = lm.points[i]
            xy = pts[:468, :2]
            box = np.concatenate([xy.min(0), xy.max(0)]).astype(np.float32)
            face = TrackedFace(pts, box, float(lm.presence[i]), detected, rois[i], track_id)
            out.append((face, lm.next_rois[i]))
        return out

    @staticmethod
    def _dedupe(faces: list[tuple[TrackedFace, Roi]]) -> list[tuple[TrackedFace, Roi]]:
        """Drop tracks that converged onto the same face, keeping the more confident one."""
        kept: list[tuple[TrackedFace, Roi]] = []
        for face in sorted(faces, key=lambda f: -f[0].score):
            if all(roi_iou(face[1], k[1]) <= SAME_FACE_IOU for k in kept):
                kept.append(face)
        return sorted(kept, key=lambda f: f[0].track_id)
