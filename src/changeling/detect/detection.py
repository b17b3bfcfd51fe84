"""What a face detector gives the tracker: the :class:`Detection` type and the :class:`Detector` protocol.

The tracker asks a detector only where it has lost a face (or a re-detection is due), and from each detection
it needs a box and the two eye keypoints: the landmark ROI is the box's longer side × 1.5, turned by the eye
line (:func:`changeling.detect.roi.roi_from_detection`). Any detector that gives those fits; the registry of
the ones extraction can use is :mod:`changeling.detect.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from changeling.detect.frames import stack_frames
from changeling.detect.roi import FrameStack
from changeling.types import Frame

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class Detection:
    """One face in frame pixels. Keypoints follow MediaPipe's order (see ``KEYPOINT_NAMES``; "right" is the
    subject's right, which is on the image's left in a frontal face); a detector may give only the first two
    (the eyes), which are all the ROI step reads."""

    box: NDArray[np.float32]  # (4,) x0, y0, x1, y1
    score: float  # in [0, 1]
    keypoints: NDArray[np.float32]  # (K >= 2, 2) x, y; 0 and 1 are the eyes


class Detector(Protocol):
    """Finds faces in whole frames. ``device`` is where the tracker prepares the frames (a
    :class:`~changeling.detect.roi.FrameStack` shared with the landmarker)."""

    @property
    def device(self) -> torch.device: ...

    def detect_indices(self, stack: FrameStack, indices: Sequence[int]) -> list[list[Detection]]:
        """The faces of frames ``indices`` of ``stack`` (one list per index, best score first)."""
        ...


def detect_frames(detector: Detector, frames: Sequence[Frame]) -> list[list[Detection]]:
    """The faces of each of ``frames`` (RGB uint8, sizes may differ) with any detector."""
    stack = stack_frames(frames, detector.device)
    return detector.detect_indices(stack, list(range(len(stack))))
