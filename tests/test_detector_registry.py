"""The detector seam: the registry matches the settings' choices, every entry meets the protocol, and a detector
that is not BlazeFace (one that reads its boxes from a file) plugs into extraction by a registry entry alone:
the tracker, the landmarker and the extraction pipeline are the stock ones."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np
import pytest
import torch

from changeling.config import ExtractSettings
from changeling.detect import DETECTORS, Detection, FaceTracker, FrameStack, detect_frames, make_detector
from changeling.detect import registry as detect_registry
from changeling.extract import extract
from changeling.faces.store import AlignmentStore, alignments_path
from changeling.project import init_project
from changeling.synth import make_clip, make_motion
from changeling.video import open_frames
from changeling.vocab import DetectorName

RIGHT_EYE, LEFT_EYE = (33, 133), (362, 263)  # mesh corners of the subject's right eye (image left), left eye


def frame_key(frame: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()


class FileDetector:
    """A detector that reads its faces from a JSON file: ``{sha256 of the frame's pixels: [{"box": [x0, y0,
    x1, y1], "eyes": [[x, y], [x, y]], "score": s}, ...]}``. Frames it has no entry for have no face."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.faces = json.loads(Path(path).read_text())
        self.device = device
        self.asked = 0  # frames looked at

    def detect_indices(self, stack: FrameStack, indices: Sequence[int]) -> list[list[Detection]]:
        out = []
        for i in indices:
            self.asked += 1
            out.append([Detection(np.asarray(f["box"], np.float32), float(f["score"]),
                                  np.asarray(f["eyes"], np.float32))
                        for f in self.faces.get(frame_key(stack.frames[i]), [])])
        return out


def test_registry_keys_are_the_settings_choices() -> None:
    choices = set(get_args(DetectorName))
    assert set(DETECTORS) == choices == {"short", "full"}
    assert get_type_hints(ExtractSettings)["detector"] is DetectorName


@pytest.mark.parametrize("name", sorted(get_args(DetectorName)))
def test_every_registered_detector_meets_the_protocol(name: str) -> None:
    detector = make_detector(name, device=torch.device("cpu"), min_score=0.5, batch_size=2)
    assert detector.device == torch.device("cpu")
    blank = np.zeros((48, 64, 3), np.uint8)
    assert detect_frames(detector, [blank, blank]) == [[], []]


def test_unknown_detector_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown detector 'medium'; choose one of short, full"):
        make_detector("medium", device=torch.device("cpu"))


def test_a_detector_reading_boxes_from_a_file_plugs_into_extraction(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    info = make_clip("astronaut", make_motion(seed=5, duration=0.4), 192, 25.0, tmp_path / "clip.mp4",
                     audio=False)
    truth = {}  # what the file detector will say: each decoded frame's face from the clip's own landmarks
    for tf in open_frames(info.path):
        pts = info.landmarks[tf.index][:, :2]
        eyes = [pts[list(RIGHT_EYE)].mean(0).tolist(), pts[list(LEFT_EYE)].mean(0).tolist()]
        truth[frame_key(tf.image)] = [{"box": [*pts.min(0).tolist(), *pts.max(0).tolist()], "eyes": eyes,
                                       "score": 0.9}]
    assert len(truth) == info.frames
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(truth))
    built: list[FileDetector] = []

    def file_detector(device: torch.device, min_score: float, batch_size: int) -> FileDetector:
        built.append(FileDetector(boxes, device))
        return built[-1]

    monkeypatch.setitem(detect_registry.DETECTORS, "file", file_detector)
    project = init_project(tmp_path / "project")
    settings = dataclasses.replace(ExtractSettings(), detector="file", device="cpu", size=64,  # type: ignore[arg-type]
                                   batch_size=4)
    report = extract(project, "A", [info.path], settings, progress=False)

    assert len(built) == 1 and built[0].asked >= 1  # the tracker asked the file detector, and only at need
    assert built[0].asked < info.frames  # (after the first frame the landmarks carry the face on)
    assert report.faces_written == info.frames
    with AlignmentStore.open_existing(alignments_path(project.alignments_dir, info.path, "A")) as store:
        faces = store.all_faces()
    assert len(faces) == info.frames
    for face in faces:  # the landmark model found the face the file placed, where the clip drew it
        err = np.linalg.norm(face.landmarks[:468, :2] - info.landmarks[face.frame][:, :2], axis=1)
        assert float(np.median(err)) < 2.5, (face.frame, float(np.median(err)))


def test_the_tracker_takes_any_detector(tmp_path: Path) -> None:
    """The tracker runs on the protocol: with a file detector that names no face it finds none, and asks the
    detector on every frame (a face is missing on each)."""
    boxes = tmp_path / "none.json"
    boxes.write_text("{}")
    from changeling.detect import FaceLandmarker

    detector = FileDetector(boxes, torch.device("cpu"))
    tracker = FaceTracker(detector, FaceLandmarker(device="cpu", iris=False))
    frames = [np.full((64, 64, 3), v, np.uint8) for v in (10, 20, 30)]
    assert tracker.process(frames) == [[], [], []]
    assert detector.asked == 3 and tracker.detector_runs == 3
