"""The tracker extraction runs, seen as protocols (tests and convert's tracking inject others), and the
default one: a registered detector and the MediaPipe landmarker behind :class:`~changeling.detect.FaceTracker`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from changeling.config import ExtractSettings
from changeling.types import Frame

GPU_FRAMES_PER_LANE = 8  # on a GPU, a batch of B frames is tracked as B / 8 runs side by side


class TrackedFaceLike(Protocol):
    """What extraction needs of a tracked face (``changeling.detect.TrackedFace`` provides it)."""

    landmarks: np.ndarray  # (468 or 478, 3) float32 frame pixels
    box: np.ndarray  # (4,) x0, y0, x1, y1 frame pixels
    score: float


class Tracker(Protocol):
    """Finds faces in consecutive frames, reusing what it found in earlier ones."""

    def process(self, frames: Sequence[Frame]) -> Sequence[Sequence[TrackedFaceLike]]: ...


TrackerFactory = Callable[[], Tracker]  # a fresh tracker (no memory of earlier frames)


class FaceFilter(Protocol):
    """Keeps the faces of one person (``changeling.identity.IdentityFilter`` provides it)."""

    def matches_all(self, frame: Frame, boxes: Sequence[Any], landmarks: Sequence[Any] | None = None
                    ) -> list[bool]: ...



def default_tracker_factory(settings: ExtractSettings) -> TrackerFactory:
    """Build the detector (``settings.detector`` from :data:`changeling.detect.registry.DETECTORS`) and the
    landmarker (a MediaPipe port) once; each call gives a fresh tracker over them.

    On a GPU each batch is split into several lanes tracked side by side, so the landmarker sees many faces at
    once (each extra lane starts with one detection); on the CPU tracking is plainly sequential."""
    from changeling.detect import FaceLandmarker, FaceTracker, make_detector
    from changeling.device import resolve_device

    device = resolve_device(settings.device)
    detector = make_detector(settings.detector, device=device, min_score=settings.min_score,
                             batch_size=max(settings.batch_size, 1))
    landmarker = FaceLandmarker(device=device, iris=settings.iris, batch_size=max(settings.batch_size, 1))
    lanes = 1 if device.type == "cpu" else max(1, settings.batch_size // GPU_FRAMES_PER_LANE)

    def make() -> Tracker:
        return FaceTracker(detector, landmarker, max_faces=settings.max_faces, lanes=lanes)

    return make


def lazy_factory(build: Callable[[], TrackerFactory]) -> TrackerFactory:
    """A factory that loads the networks on first use only (nothing to load when every source is done)."""
    built: list[TrackerFactory] = []

    def make() -> Tracker:
        if not built:
            built.append(build())
        return built[0]()

    return make

