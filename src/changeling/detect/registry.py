"""The face detectors extraction and convert's tracking can use, by name (``ExtractSettings.detector``).

Adding one: a class that meets :class:`~changeling.detect.detection.Detector`, an entry here, and its name in
:data:`changeling.vocab.DetectorName` (the settings' choice set, checked against this registry at import).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from changeling.detect.detection import Detector
from changeling.detect.detector import BlazeFaceDetector
from changeling.vocab import DETECTOR_NAMES, DetectorName, check_registry

# (device, min_score, batch_size) -> a detector on that device, keeping detections scoring at least min_score
DetectorFactory = Callable[[torch.device, float, int], Detector]


def _blazeface(variant: DetectorName) -> DetectorFactory:
    def build(device: torch.device, min_score: float, batch_size: int) -> Detector:
        return BlazeFaceDetector(variant, device=device, min_score=min_score, batch_size=batch_size)

    return build


DETECTORS: dict[str, DetectorFactory] = {
    "short": _blazeface("short"),  # BlazeFace short range: 128 px input, faces filling much of the frame
    "full": _blazeface("full"),  # BlazeFace full range: 192 px input, small faces too
}

check_registry("detector", DETECTORS, DETECTOR_NAMES)


def make_detector(name: str, *, device: torch.device, min_score: float = 0.5, batch_size: int = 64) -> Detector:
    """The detector registered as ``name``; ``ValueError`` naming the choices for an unknown one."""
    build = DETECTORS.get(name)
    if build is None:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return build(device, min_score, batch_size)
