"""Detection, landmarks and tracking end to end, against an independent reference pipeline: OpenCV crops,
the original .tflite models through LiteRT and a plain numpy decode written here from MediaPipe's calculator
options. Decoded boxes, keypoints and all 478 landmarks must agree within 0.5 px."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image
from safetensors import safe_open
from skimage import data

from changeling.detect import (
    BlazeFaceDetector,
    FaceLandmarker,
    FaceTracker,
    Roi,
    roi_from_detection,
    roi_from_landmarks,
)
from changeling.detect.iris import CONTOUR_TO_MESH_LEFT, CONTOUR_TO_MESH_RIGHT

litert = pytest.importorskip("ai_edge_litert.interpreter")

ROOT = Path(__file__).resolve().parents[1]
TFLITE = ROOT / "tests" / "data" / "mediapipe"
TOL_PX = 0.5


def portraits() -> list[np.ndarray]:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.array(Image.open(f).convert("RGB"))
    return [data.astronaut(), hopper]


def rotate(frame: np.ndarray, degrees: float, scale: float = 1.0, shift: tuple[float, float] = (0, 0)) -> np.ndarray:
    h, w = frame.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
    m[:, 2] += shift
    return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def sample_frames() -> list[np.ndarray]:
    a, g = portraits()
    wide = np.zeros((720, 1280, 3), np.uint8)
    wide[100:100 + 512, 700:700 + 512] = a
    return [a, g, np.ascontiguousarray(a[:, ::-1]), rotate(g, 25), wide]


class Lite:
    def __init__(self, name: str) -> None:
        self.interp = litert.Interpreter(model_path=str(TFLITE / name), num_threads=1)
        self.interp.allocate_tensors()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.interp.set_tensor(self.interp.get_input_details()[0]["index"], x[None].astype(np.float32))
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"])[0].reshape(-1).copy() for d in self.interp.get_output_details()]


# --- the reference pipeline (numpy + OpenCV + LiteRT), written from MediaPipe's graph options --------------------


def ref_anchors(variant: str) -> np.ndarray:
    layers = [(16, 2), (8, 6)] if variant == "short" else [(48, 1)]
    return np.array([((x + 0.5) / cells, (y + 0.5) / cells)
                     for cells, per in layers for y in range(cells) for x in range(cells) for _ in range(per)])


def ref_detect(frame: np.ndarray, variant: str, min_score: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    n = 128 if variant == "short" else 192
    lite = Lite("face_detection_short_range.tflite" if variant == "short"
                else "face_detection_full_range_sparse.tflite")
    h, w = frame.shape[:2]
    side = max(h, w)
    ox, oy = (w - side) / 2, (h - side) / 2  # letterbox: the square's top-left corner in the frame
    s = n / side
    inp = cv2.warpAffine(frame, np.array([[s, 0, -ox * s], [0, s, -oy * s]]), (n, n), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    reg, cls = lite(inp.astype(np.float32) / 127.5 - 1)
    reg = reg.reshape(-1, 16)
    anchors = ref_anchors(variant)
    scores = 1 / (1 + np.exp(-np.clip(cls.astype(np.float64), -100, 100)))
    cands = []
    for a in np.nonzero(scores >= min_score)[0]:
        cx, cy = reg[a, 0] / n + anchors[a, 0], reg[a, 1] / n + anchors[a, 1]
        bw, bh = reg[a, 2] / n, reg[a, 3] / n
        if bw < 0 or bh < 0:
            continue
        kps = reg[a, 4:].reshape(6, 2) / n + anchors[a]
        cands.append((np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]), kps, float(scores[a])))
    cands.sort(key=lambda c: -c[2])
    out = []
    while cands:
        top = cands[0]
        cluster, rest = [], []
        for c in cands:
            iw = max(0.0, min(top[0][2], c[0][2]) - max(top[0][0], c[0][0]))
            ih = max(0.0, min(top[0][3], c[0][3]) - max(top[0][1], c[0][1]))
            inter = iw * ih
            union = np.prod(top[0][2:] - top[0][:2]) + np.prod(c[0][2:] - c[0][:2]) - inter
            (cluster if union > 0 and inter / union > 0.3 else rest).append(c)
        total = sum(c[2] for c in cluster)
        box = sum(c[0] * c[2] for c in cluster) / total
        kps = sum(c[1] * c[2] for c in cluster) / total
        out.append((box * side + [ox, oy, ox, oy], kps * side + [ox, oy], top[2]))
        cands = rest
    return out


def ref_crop(frame: np.ndarray, center: np.ndarray, size: float, angle: float, n: int,
             flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Crop a rotated square (crop coordinate 0..n spans it) with OpenCV; return the crop and the affine that
    takes crop coordinates back to the frame."""
    ux = np.array([math.cos(angle), math.sin(angle)]) * size
    vy = np.array([-math.sin(angle), math.cos(angle)]) * size
    tl = center - ux / 2 - vy / 2
    src = np.float32([tl, tl + ux, tl + vy])
    dst = np.float32([[n, 0], [0, 0], [n, n]] if flip else [[0, 0], [n, 0], [0, n]])
    forward = cv2.getAffineTransform(src, dst)
    crop = cv2.warpAffine(frame, forward, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, cv2.invertAffineTransform(forward)


def ref_landmarks(frame: np.ndarray, box: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, float]:
    """478 landmarks from a detection: mesh on the 1.5× ROI rotated by the eyes, then both eyes refined."""
    center = (box[:2] + box[2:]) / 2
    size = 1.5 * max(box[2] - box[0], box[3] - box[1])
    angle = math.atan2(kps[1, 1] - kps[0, 1], kps[1, 0] - kps[0, 0])
    crop, back = ref_crop(frame, center, size, angle, 192)
    raw, flag = Lite("face_landmark.tflite")(crop.astype(np.float32) / 255)
    raw = raw.reshape(468, 3)
    mesh = np.concatenate([raw[:, :2] @ back[:, :2].T + back[:, 2], raw[:, 2:] * size / 192], 1)
    eyes = []
    for a, b, flip in ((33, 133, False), (362, 263, True)):
        p, q = mesh[a, :2], mesh[b, :2]
        side = 2.3 * max(abs(q[0] - p[0]), abs(q[1] - p[1]))
        crop, back = ref_crop(frame, (p + q) / 2, side, math.atan2(q[1] - p[1], q[0] - p[0]), 64, flip)
        contour, iris = Lite("iris_landmark.tflite")(crop.astype(np.float32) / 255)
        eyes.append([np.concatenate([v.reshape(-1, 3)[:, :2] @ back[:, :2].T + back[:, 2],
                                     v.reshape(-1, 3)[:, 2:] * side / 64], 1) for v in (contour, iris)])
    refined = mesh.copy()
    refined[CONTOUR_TO_MESH_LEFT] = eyes[0][0]
    refined[CONTOUR_TO_MESH_RIGHT] = eyes[1][0]
    return np.concatenate([refined, eyes[0][1], eyes[1][1]]), float(1 / (1 + np.exp(-flag[0])))


def interocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[468, :2] - points[473, :2]))


# --- tests -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker(iris=True)


@pytest.mark.parametrize("variant", ["short", "full"])
def test_detections_match_the_reference_pipeline(variant: str) -> None:
    frames = sample_frames()
    ours = BlazeFaceDetector(variant, min_score=0.5).detect(frames)  # type: ignore[arg-type]
    found = 0
    for frame, dets in zip(frames, ours, strict=True):
        ref = ref_detect(frame, variant, 0.5)
        assert len(dets) == len(ref)
        for d, (box, kps, score) in zip(dets, ref, strict=True):
            assert np.abs(d.box - box).max() < TOL_PX
            assert np.abs(d.keypoints - kps).max() < TOL_PX
            assert abs(d.score - score) < 1e-3
            found += 1
    assert found >= 4  # the rotated portrait may be missed by the short-range model; the others are not


def test_landmarks_match_the_reference_pipeline(landmarker: FaceLandmarker) -> None:
    frames = sample_frames()
    detections = BlazeFaceDetector("full").detect(frames)
    rois, index, refs = [], [], []
    for i, (frame, dets) in enumerate(zip(frames, detections, strict=True)):
        (box, kps, _), d = ref_detect(frame, "full", 0.5)[0], dets[0]
        rois.append(roi_from_detection(d))
        index.append(i)
        refs.append(ref_landmarks(frame, box, kps))
    marks = landmarker(frames, rois, index)
    assert marks.points.shape == (len(frames), 478, 3)
    for points, presence, (ref, ref_presence) in zip(marks.points, marks.presence, refs, strict=True):
        assert np.abs(points[:, :2] - ref[:, :2]).max() < TOL_PX
        assert np.abs(points[:, 2] - ref[:, 2]).max() < 1.0
        assert abs(presence - ref_presence) < 1e-3 and presence > 0.9
        # The iris centres sit between their eye corners: 468 belongs to the 33/133 eye, 473 to 362/263.
        for centre, (a, b) in ((468, (33, 133)), (473, (362, 263))):
            assert np.linalg.norm(points[centre, :2] - (points[a, :2] + points[b, :2]) / 2) < 0.25 * interocular(
                points)


def test_batches_mixed_sizes_like_single_calls(landmarker: FaceLandmarker) -> None:
    frames = sample_frames()
    det = BlazeFaceDetector("full")
    together = det.detect(frames)
    for frame, dets in zip(frames, together, strict=True):
        alone = det.detect([frame])[0]
        assert len(alone) == len(dets)
        for a, b in zip(alone, dets, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    rois = [roi_from_detection(d[0]) for d in together]
    batch = landmarker(frames, rois)
    single = landmarker([frames[3]], [rois[3]])
    np.testing.assert_allclose(batch.points[3], single.points[0], atol=1e-2)  # GEMM blocking varies with batch
    assert roi_from_landmarks(batch.points[0]).size > 0


@pytest.mark.parametrize("variant", ["short", "full"])
def test_no_face_no_detection(variant: str, landmarker: FaceLandmarker) -> None:
    rng = np.random.default_rng(0)
    blank = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), np.full((480, 480, 3), 128, np.uint8),
             np.zeros((1, 1, 3), np.uint8), np.full((3, 900, 3), 200, np.uint8)]
    assert BlazeFaceDetector(variant).detect(blank) == [[], [], [], []]  # type: ignore[arg-type]
    grey = landmarker([blank[1]], [Roi(np.array([240.0, 240.0], np.float32), 200.0)])
    assert grey.presence[0] < 0.5


def test_bad_frames_are_refused_with_a_clear_message() -> None:
    det = BlazeFaceDetector("short")
    with pytest.raises(ValueError, match=r"frame 1: expected an \(H, W, 3\) uint8"):
        det.detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="float32"):
        det.detect([np.zeros((8, 8, 3), np.float32)])  # type: ignore[list-item]
    assert det.detect([]) == []
    with pytest.raises(ValueError, match="frame_index"):
        FaceLandmarker(iris=False)([np.zeros((8, 8, 3), np.uint8)], [Roi(np.zeros(2, np.float32), 4.0)] * 2)


def moving_portrait(count: int) -> list[np.ndarray]:
    """The astronaut drifting right and down by a few pixels and turning 1° per frame."""
    base = cv2.resize(data.astronaut(), (768, 768), interpolation=cv2.INTER_CUBIC)
    return [rotate(base, 1.0 * i, 1.0, (3.0 * i, 2.0 * i)) for i in range(count)]


def test_tracker_detects_once_and_follows_within_two_percent(landmarker: FaceLandmarker) -> None:
    frames = moving_portrait(8)
    detector = BlazeFaceDetector("full")
    tracker = FaceTracker(detector, landmarker)
    tracked = tracker.process(frames[:3]) + tracker.process(frames[3:])  # state carries across calls
    assert tracker.detector_runs == 1
    assert [len(f) for f in tracked] == [1] * 8
    assert [f[0].detected for f in tracked] == [True] + [False] * 7
    assert len({f[0].track_id for f in tracked}) == 1
    for frame, faces in zip(frames, tracked, strict=True):
        fresh = landmarker([frame], [roi_from_detection(detector.detect([frame])[0][0])]).points[0]
        err = np.linalg.norm(faces[0].landmarks[:, :2] - fresh[:, :2], axis=1)
        assert err.mean() < 0.02 * interocular(fresh)
        own = faces[0].landmarks[:468, :2]
        np.testing.assert_allclose(faces[0].box, np.concatenate([own.min(0), own.max(0)]))


def test_tracker_redetects_after_losing_the_face(landmarker: FaceLandmarker) -> None:
    face = moving_portrait(2)
    grey = np.full_like(face[0], 90)
    tracker = FaceTracker(BlazeFaceDetector("full"), landmarker)
    out = tracker.process([face[0], grey, grey, face[1]])
    assert [len(f) for f in out] == [1, 0, 0, 1]
    assert out[3][0].detected
    assert tracker.detector_runs == 4  # lost on the grey frames: the detector looks at each of them


def test_tracker_lanes_and_periodic_redetection(landmarker: FaceLandmarker) -> None:
    frames = moving_portrait(6)
    detector = BlazeFaceDetector("full")
    one = FaceTracker(detector, landmarker).process(frames)
    lanes = FaceTracker(detector, landmarker, lanes=3)
    three = lanes.process(frames)
    assert [f[0].detected for f in three] == [True, False] * 3  # each lane starts by detecting
    for a, b in zip(one, three, strict=True):
        err = np.linalg.norm(a[0].landmarks[:, :2] - b[0].landmarks[:, :2], axis=1)
        assert err.mean() < 0.02 * interocular(a[0].landmarks)
    periodic = FaceTracker(detector, landmarker, redetect_every=3)
    out = periodic.process(frames)
    assert periodic.detector_runs == 2 and [len(f) for f in out] == [1] * 6


def test_weights_load_from_the_installed_package(tmp_path: Path) -> None:
    """The weights come from the package (importlib.resources), nowhere else, and are the conversion of the
    committed originals (same source digest)."""
    code = ("import changeling.detect.weights as w, importlib.resources as r; "
            "print(r.files('changeling').joinpath('assets','models','face_landmark.safetensors')); "
            "print(sorted(w.read_weights('iris_landmark'))[0])")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    resource = Path(run.stdout.splitlines()[0])
    import changeling

    assert resource.is_relative_to(Path(changeling.__file__).parent)
    for name, tflite in [("face_detection_short", "face_detection_short_range.tflite"),
                         ("face_detection_full", "face_detection_full_range_sparse.tflite"),
                         ("face_landmark", "face_landmark.tflite"), ("iris_landmark", "iris_landmark.tflite")]:
        path = resource.parent / f"{name}.safetensors"
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        assert meta["source_sha256"] == hashlib.sha256((TFLITE / tflite).read_bytes()).hexdigest()
        assert meta["license"] == "Apache-2.0"
    assert (resource.parent / "NOTICE.md").is_file() and (resource.parent / "LICENSE-APACHE-2.0.txt").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(2)
    short, full, marks = BlazeFaceDetector("short", device="cuda"), BlazeFaceDetector("full", device="cuda"), FaceLandmarker(
        device="cuda")
    runs = [(short.raw, "face_detection_short_range.tflite", 128, (-1, 1)),
            (full.raw, "face_detection_full_range_sparse.tflite", 192, (-1, 1)),
            (marks.mesh_raw, "face_landmark.tflite", 192, (0, 1)),
            (marks.iris_raw, "iris_landmark.tflite", 64, (0, 1))]
    for raw, name, size, (lo, hi) in runs:  # through CUDA graphs, batch 3 padded to 4
        x = rng.uniform(lo, hi, (3, size, size, 3)).astype(np.float32)
        ours = raw(torch.from_numpy(x).permute(0, 3, 1, 2).cuda())
        for k, sample in enumerate(x):
            for a, b in zip(ours, Lite(name)(sample), strict=True):
                a = a[k].float().cpu().numpy().reshape(-1)
                err = float(np.abs(a - b).max() / np.abs(b).max())
                print(f"cuda {name}: relative error {err:.2e}")
                assert err <= 1e-3, f"{name} on CUDA: relative error {err:.2e}"
    frames = sample_frames()
    cpu_det, gpu_det = BlazeFaceDetector("full"), BlazeFaceDetector("full", device="cuda")
    cpu_lm, gpu_lm = FaceLandmarker(), FaceLandmarker(device="cuda")
    a, b = cpu_det.detect(frames), gpu_det.detect(frames)
    for x, y in zip(a, b, strict=True):
        assert len(x) == len(y)
        for d, e in zip(x, y, strict=True):
            assert np.abs(d.box - e.box).max() < TOL_PX
    rois = [roi_from_detection(d[0]) for d in a]
    p, q = cpu_lm(frames, rois).points, gpu_lm(frames, rois).points
    assert np.abs(p[..., :2] - q[..., :2]).max() < TOL_PX
    tracker = FaceTracker(gpu_det, gpu_lm, lanes=2)
    out = tracker.process(moving_portrait(4))
    assert [len(f) for f in out] == [1] * 4
