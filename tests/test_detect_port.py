"""The PyTorch ports of MediaPipe's face models against the original .tflite files run through LiteRT.

The originals are committed under tests/data/mediapipe (Apache-2.0, see the NOTICE there). Raw network outputs
must agree to a relative error of 1e-3 (max |port - litert| / max |litert| per output) on crops of the
public-domain portraits, their mirror images and rescaled copies; the building blocks are checked against
closed-form answers; the packaged weights must be exactly what the converter makes of the committed originals.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import cbook
from PIL import Image
from skimage import data

from changeling.detect import BlazeFaceDetector, FaceLandmarker, roi_from_detection
from changeling.detect.anchors import anchors_for
from changeling.detect.decode import RawDetections, weighted_nms
from changeling.detect.layers import Conv, depth_to_space, max_pool2, same_padding
from changeling.detect.roi import FrameStack, Roi, crop_rois, letterbox_roi, roi_matrix
from changeling.detect.weights import read_weights

litert = pytest.importorskip("ai_edge_litert.interpreter")

ROOT = Path(__file__).resolve().parents[1]
TFLITE = ROOT / "tests" / "data" / "mediapipe"
REL_TOL = 1e-3


def portraits() -> list[np.ndarray]:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.array(Image.open(f).convert("RGB"))
    return [data.astronaut(), hopper]


def variants(frame: np.ndarray) -> list[np.ndarray]:
    """The frame, its mirror image, a half-size copy and an off-centre crop."""
    h, w = frame.shape[:2]
    return [frame, np.ascontiguousarray(frame[:, ::-1]), cv2.resize(frame, (w // 2, h // 2), cv2.INTER_AREA),
            np.ascontiguousarray(frame[h // 8:, w // 10: w - w // 6])]


class Lite:
    """One .tflite model under LiteRT (default delegates), one NHWC sample at a time."""

    def __init__(self, name: str) -> None:
        self.interp = litert.Interpreter(model_path=str(TFLITE / name), num_threads=1)
        self.interp.allocate_tensors()

    def __call__(self, x_nchw: torch.Tensor) -> list[np.ndarray]:
        outs = []
        for sample in x_nchw.permute(0, 2, 3, 1).contiguous().numpy():
            self.interp.set_tensor(self.interp.get_input_details()[0]["index"], sample[None].astype(np.float32))
            self.interp.invoke()
            outs.append([self.interp.get_tensor(d["index"]).reshape(-1).copy()
                         for d in self.interp.get_output_details()])
        return [np.stack(o) for o in zip(*outs, strict=True)]


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """Per sample max |difference| over max |reference|; the worst sample."""
    ours, ref = ours.reshape(len(ref), -1), ref.reshape(len(ref), -1)
    return float((np.abs(ours - ref).max(1) / np.maximum(np.abs(ref).max(1), 1e-6)).max())


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [v for p in portraits() for v in variants(p)]


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector("short")


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker(iris=True)


def face_rois(frames: list[np.ndarray], detector: BlazeFaceDetector) -> tuple[list[Roi], list[int]]:
    rois, index = [], []
    for i, dets in enumerate(detector.detect(frames)):
        for d in dets[:1]:
            roi = roi_from_detection(d)
            rois += [roi, Roi(roi.center + 0.1 * roi.size, roi.size * 1.2, roi.rotation + 0.4)]
            index += [i, i]
    return rois, index


# --- raw outputs against LiteRT --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,tflite", [("short", "face_detection_short_range.tflite"),
                                            ("full", "face_detection_full_range_sparse.tflite")])
def test_detector_raw_outputs_match_litert(frames: list[np.ndarray], variant: str, tflite: str) -> None:
    det = BlazeFaceDetector(variant)  # type: ignore[arg-type]
    size = det.input_size
    stack = FrameStack.build(frames, torch.device("cpu"))
    x = crop_rois(stack, [letterbox_roi(*stack.size(i)) for i in range(len(frames))], list(range(len(frames))),
                  size, "zero") / 127.5 - 1
    regressors, logits = det.raw(x)
    ref_reg, ref_cls = Lite(tflite)(x)
    assert relative_error(regressors.numpy(), ref_reg) <= REL_TOL
    assert relative_error(logits.numpy(), ref_cls) <= REL_TOL
    assert (ref_cls.max(1) > 0).sum() >= 6, "the test inputs should contain faces the original finds"


def test_landmark_raw_outputs_match_litert(frames: list[np.ndarray], detector: BlazeFaceDetector,
                                           landmarker: FaceLandmarker) -> None:
    rois, index = face_rois(frames, detector)
    assert len(rois) >= 12
    x = crop_rois(FrameStack.build(frames, torch.device("cpu")), rois, index, 192, "replicate") / 255
    points, logits = landmarker.mesh_raw(x)
    ref_points, ref_flag = Lite("face_landmark.tflite")(x)
    assert relative_error(points.numpy(), ref_points) <= REL_TOL
    assert relative_error(logits.numpy(), ref_flag) <= REL_TOL
    assert np.abs(points.numpy().reshape(len(x), -1) - ref_points).max() < 0.05  # crop pixels


def test_iris_raw_outputs_match_litert(frames: list[np.ndarray], detector: BlazeFaceDetector,
                                       landmarker: FaceLandmarker) -> None:
    marks = landmarker(frames, *face_rois(frames, detector))
    eye_rois, eye_index, flips = [], [], []
    for pts, f in zip(marks.points, marks.frame_index, strict=True):
        for a, b, flip in ((33, 133, False), (362, 263, True)):
            c = (pts[a, :2] + pts[b, :2]) / 2
            side = 2.3 * float(np.abs(pts[b, :2] - pts[a, :2]).max())
            eye_rois.append(Roi(c.astype(np.float32), side, math.atan2(*(pts[b, 1::-1] - pts[a, 1::-1]))))
            eye_index.append(int(f))
            flips.append(flip)
    x = crop_rois(FrameStack.build(frames, torch.device("cpu")), eye_rois, eye_index, 64, "replicate", flips) / 255
    contour, iris = landmarker.iris_raw(x)
    ref_contour, ref_iris = Lite("iris_landmark.tflite")(x)
    assert relative_error(contour.numpy(), ref_contour) <= REL_TOL
    assert relative_error(iris.numpy(), ref_iris) <= REL_TOL


def test_ports_agree_on_random_inputs_in_both_memory_formats() -> None:
    """Noise exercises every channel; NCHW and channels-last inputs must give the same answer."""
    rng = np.random.default_rng(1)
    cases = [(BlazeFaceDetector("short").net, "face_detection_short_range.tflite", 128, (-1, 1)),
             (BlazeFaceDetector("full").net, "face_detection_full_range_sparse.tflite", 192, (-1, 1)),
             (FaceLandmarker(iris=True).mesh_net, "face_landmark.tflite", 192, (0, 1)),
             (FaceLandmarker(iris=True).iris_net, "iris_landmark.tflite", 64, (0, 1))]
    for net, name, size, (lo, hi) in cases:
        assert net is not None
        x = torch.from_numpy(rng.uniform(lo, hi, (2, 3, size, size)).astype(np.float32))
        with torch.inference_mode():
            a, b = net(x), net(x.contiguous(memory_format=torch.channels_last))
        for ours, cl, ref in zip(a, b, Lite(name)(x), strict=True):
            assert relative_error(ours.numpy(), ref) <= REL_TOL, name
            torch.testing.assert_close(ours, cl, rtol=1e-5, atol=1e-5)


# --- building blocks -------------------------------------------------------------------------------------------


def test_same_padding_is_tensorflows_rule() -> None:
    assert same_padding(128, 5, 2) == (1, 2)  # out 64: 63*2+5-128 = 3
    assert same_padding(192, 3, 2) == (0, 1)  # the asymmetric case
    assert same_padding(64, 3, 1) == (1, 1)
    assert same_padding(5, 3, 2) == (1, 1)  # odd input: symmetric
    assert same_padding(16, 2, 2) == (0, 0)


def test_strided_same_conv_reads_the_windows_tensorflow_reads() -> None:
    """Output (i, j) of a 3×3 stride-2 'same' conv on an even input covers rows 2i..2i+2 (zero beyond)."""
    conv = Conv(1, 1, 3, 2)
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
        conv.conv.bias.zero_()
    x = torch.arange(36.0).view(1, 1, 6, 6)
    padded = F.pad(x, (0, 1, 0, 1))
    expected = torch.tensor([[padded[0, 0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() for j in range(3)]
                             for i in range(3)])
    torch.testing.assert_close(conv(x)[0, 0], expected)


def test_depth_to_space_is_dcr_order() -> None:
    x = torch.arange(2 * 8 * 3 * 2, dtype=torch.float32).view(2, 8, 3, 2)  # (B, 4*C, H, W), C = 2
    nhwc = x.permute(0, 2, 3, 1).numpy()
    expected = np.zeros((2, 6, 4, 2), np.float32)
    for i in range(2):
        for j in range(2):  # TensorFlow: out[h*2+i, w*2+j, c] = in[h, w, (i*2+j)*C + c]
            expected[:, i::2, j::2, :] = nhwc[:, :, :, (i * 2 + j) * 2:(i * 2 + j) * 2 + 2]
    np.testing.assert_array_equal(depth_to_space(x, 2).permute(0, 2, 3, 1).numpy(), expected)


@pytest.mark.parametrize("size", [8, 96])
def test_max_pool_matches_torch(size: int) -> None:
    x = torch.randn(2, 5, size, size).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(max_pool2(x), F.max_pool2d(x, 2, 2), rtol=0, atol=0)


def test_anchors_follow_the_calculator_options() -> None:
    short, full = anchors_for("short"), anchors_for("full")
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[1], short[0])  # two anchors per 16×16 cell
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[512:518], np.tile([[0.5 / 8, 0.5 / 8]], (6, 1)))  # six per 8×8 cell
    np.testing.assert_allclose(full[48], [0.5 / 48, 1.5 / 48])


def test_weighted_nms_averages_each_cluster_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keypoints = np.repeat(boxes[:, None, :2], 6, axis=1)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    out = weighted_nms(RawDetections(boxes, keypoints, scores), 0.3)
    np.testing.assert_allclose(out.scores, [0.9, 0.8])
    np.testing.assert_allclose(out.boxes[0], (boxes[0] * 0.9 + boxes[1] * 0.6) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(out.boxes[1], boxes[2])
    np.testing.assert_allclose(out.keypoints[0, 0], [0.4, 0.4], rtol=1e-6)
    empty = weighted_nms(RawDetections(np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32),
                                       np.zeros(0, np.float32)))
    assert empty.boxes.shape == (0, 4)


def test_roi_matrix_closed_form() -> None:
    roi = Roi(np.array([100.0, 50.0], np.float32), 40.0, math.pi / 2)
    m = roi_matrix(roi, 20)
    np.testing.assert_allclose(m @ [10, 10, 1], [100, 50])  # crop centre -> ROI centre
    np.testing.assert_allclose(m @ [20, 10, 1], [100, 70])  # +x of the crop is +y of the frame at 90°
    np.testing.assert_allclose(roi_matrix(roi, 20, flip=True) @ [3, 5, 1], m @ [17, 5, 1])


@pytest.mark.parametrize("border", ["zero", "replicate"])
def test_crop_paths_agree_with_grid_sample(border: str) -> None:
    frame = portraits()[1]
    rois = [Roi(np.array([250.0, 240.0], np.float32), 300.0, 0.35), Roi(np.array([20.0, 590.0], np.float32), 90.0,
                                                                         -2.0)]
    opencv = crop_rois(FrameStack.build([frame], torch.device("cpu")), rois, [0, 0], 48, border)  # type: ignore[arg-type]
    gather = crop_rois(FrameStack.build([frame], torch.device("cpu"), gather=True), rois, [0, 0], 48,
                       border)  # type: ignore[arg-type]
    h, w = frame.shape[:2]
    src = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    for i, roi in enumerate(rois):
        u, v = np.meshgrid(np.arange(48.0), np.arange(48.0))
        pts = np.stack([u, v, np.ones_like(u)], -1) @ roi_matrix(roi, 48).T
        grid = torch.from_numpy(np.stack([(2 * pts[..., 0] + 1) / w - 1, (2 * pts[..., 1] + 1) / h - 1], -1))
        ref = F.grid_sample(src, grid[None].float(), mode="bilinear", align_corners=False,
                            padding_mode="zeros" if border == "zero" else "border")[0]
        assert (gather[i] - ref).abs().max() < 1e-2
        assert (opencv[i] - ref).abs().max() <= 1.0  # OpenCV: 1/32-pixel fixed point, rounded to uint8


# --- the converter and the packaged weights --------------------------------------------------------------------


def _converter():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("convert_mediapipe", ROOT / "tools" / "convert_mediapipe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_packaged_weights_are_the_conversion_of_the_originals() -> None:
    conv = _converter()
    for spec in conv.SPECS:
        path = TFLITE / Path(spec.tflite).name
        model = spec.build().eval()
        conv.load_into(model, conv.weight_ops_in_port_order(path.read_bytes()), conv.tensor_reader(path))
        packaged = read_weights(spec.name)
        fresh = model.state_dict()
        assert packaged.keys() == fresh.keys()
        for k, v in fresh.items():
            torch.testing.assert_close(packaged[k], v, rtol=0, atol=0, msg=f"{spec.name}: {k}")


def test_converter_refuses_a_mismatched_architecture() -> None:
    conv = _converter()
    path = TFLITE / "face_landmark.tflite"
    ops = conv.weight_ops_in_port_order(path.read_bytes())
    with pytest.raises(RuntimeError, match="layers in the port"):
        conv.load_into(BlazeFaceDetector("short").net, ops, conv.tensor_reader(path))
    with pytest.raises(RuntimeError, match="shape mismatch|expected"):
        conv.load_into(FaceLandmarker(iris=False).mesh_net, ops[1:] + ops[:1], conv.tensor_reader(path))
