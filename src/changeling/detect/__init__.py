"""Face detection, landmarks and tracking: PyTorch ports of Google MediaPipe's face models (Apache-2.0).

Everything takes RGB uint8 frames (H, W, 3) and returns frame-pixel coordinates::

    detector = FaceDetector("full", device="cpu")
    landmarker = FaceLandmarker(device="cpu")               # 478 points (468 mesh + 10 iris)
    dets = detector.detect([frame])[0]
    marks = landmarker([frame], [roi_from_detection(d) for d in dets], [0] * len(dets))
    tracker = FaceTracker(detector, landmarker)             # video: detect once, then follow
"""

from changeling.detect.detector import Detection, FaceDetector
from changeling.detect.landmarker import FaceLandmarker, FaceLandmarks
from changeling.detect.roi import Roi, roi_from_detection, roi_from_landmarks
from changeling.detect.tracker import FaceTracker, TrackedFace

__all__ = [
    "Detection",
    "FaceDetector",
    "FaceLandmarker",
    "FaceLandmarks",
    "FaceTracker",
    "Roi",
    "TrackedFace",
    "roi_from_detection",
    "roi_from_landmarks",
]
