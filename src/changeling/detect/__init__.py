"""Face detection, landmarks and tracking: PyTorch ports of Google MediaPipe's face models (Apache-2.0).

Everything takes RGB uint8 frames (H, W, 3) and returns frame-pixel coordinates::

    detector = make_detector("full", device=torch.device("cpu"))  # any Detector (detect.registry)
    landmarker = FaceLandmarker(device="cpu")               # 478 points (468 mesh + 10 iris)
    dets = detect_frames(detector, [frame])[0]
    marks = landmarker([frame], [roi_from_detection(d) for d in dets], [0] * len(dets))
    tracker = FaceTracker(detector, landmarker)             # video: detect once, then follow
"""

from changeling.detect.detection import Detection, Detector, detect_frames
from changeling.detect.detector import BlazeFaceDetector
from changeling.detect.landmarker import FaceLandmarker, FaceLandmarks
from changeling.detect.registry import DETECTORS, make_detector
from changeling.detect.roi import FrameStack, Roi, roi_from_detection, roi_from_landmarks
from changeling.detect.tracker import FaceTracker, TrackedFace

__all__ = [
    "DETECTORS",
    "BlazeFaceDetector",
    "Detection",
    "Detector",
    "FaceLandmarker",
    "FaceLandmarks",
    "FaceTracker",
    "FrameStack",
    "Roi",
    "TrackedFace",
    "detect_frames",
    "make_detector",
    "roi_from_detection",
    "roi_from_landmarks",
]
