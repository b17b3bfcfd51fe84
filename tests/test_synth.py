"""The sample-clip generator: seeded determinism, a warp that agrees with scikit-image and does not tear, ground
truth that MediaPipe's own landmark model (the original .tflite through LiteRT) finds in the frames, the same
pose and expression on both portraits under one motion, and an audio track as long as the video."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from changeling.errors import UserError
from changeling.synth import (
    PARAMS,
    PORTRAITS,
    MotionSettings,
    load_portrait,
    make_clip,
    make_motion,
    make_rig,
    render_frame,
    render_frames,
)
from changeling.synth.lighting import colour_gains, shading
from changeling.synth.rig import _rotation, pose
from changeling.synth.warp import piecewise_affine_maps, triangulate, warp

TESTS = Path(__file__).resolve().parent
LANDMARK_TFLITE = TESTS / "data" / "mediapipe" / "face_landmark.tflite"
STABLE = [1, 4, 5, 6, 168, 197, 195, 33, 133, 263, 362, 234, 454]  # points no expression moves


def _rest(**overrides: float) -> dict[str, float]:
    p = {k: 0.0 for k in PARAMS}
    p["cam_zoom"] = 1.0
    p.update(overrides)
    return p


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[263, :2] - lm[33, :2]))


def _similarity_3d(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotation R and scale s with b - mean(b) ~ s R (a - mean(a)) (Umeyama)."""
    a0, b0 = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(b0.T @ a0)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    return u @ d @ vt, float((s * np.diag(d)).sum() / (a0**2).sum())


class LiteRTLandmarker:
    """MediaPipe's face_landmark.tflite run the way MediaPipe tracks a face: a square crop around the face,
    rotated by the eye line, refined from the landmarks' bounding box (scaled 1.5)."""

    def __init__(self) -> None:
        litert = pytest.importorskip("ai_edge_litert.interpreter")
        if not LANDMARK_TFLITE.exists():
            pytest.skip(f"{LANDMARK_TFLITE} is missing")
        self.it = litert.Interpreter(model_path=str(LANDMARK_TFLITE))
        self.it.allocate_tensors()
        self.out = next(o["index"] for o in self.it.get_output_details() if int(np.prod(o["shape"])) == 1404)

    def _run(self, image: np.ndarray, cx: float, cy: float, side: float, angle: float) -> np.ndarray:
        k = 192 / side
        c, s = np.cos(angle) * k, np.sin(angle) * k
        a = np.array([[c, s, 0.0], [-s, c, 0.0]])
        a[:, 2] = 96 - a[:, :2] @ [cx, cy]
        crop = cv2.warpAffine(image, a, (192, 192), flags=cv2.INTER_LINEAR)
        self.it.set_tensor(self.it.get_input_details()[0]["index"], (crop.astype(np.float32) / 255)[None])
        self.it.invoke()
        out = self.it.get_tensor(self.out).reshape(468, 3).astype(np.float64)
        inv = cv2.invertAffineTransform(a)
        return np.concatenate([out[:, :2] @ inv[:, :2].T + inv[:, 2], out[:, 2:] / k], axis=1)

    def landmarks(self, image: np.ndarray, box: np.ndarray, iters: int = 4) -> np.ndarray:
        x0, y0, x1, y1 = (float(v) for v in box)
        cx, cy, side, angle = (x0 + x1) / 2, (y0 + y1) / 2, 1.5 * max(x1 - x0, y1 - y0), 0.0
        for _ in range(iters):
            lm = self._run(image, cx, cy, side, angle)
            d = lm[263, :2] - lm[33, :2]
            angle = float(np.arctan2(d[1], d[0]))
            lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
            cx, cy = (lo + hi) / 2
            side = 1.5 * float(max(hi - lo))
        return lm


# -- assets -------------------------------------------------------------------------------------------------


def test_bundled_portraits_are_the_public_domain_originals() -> None:
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    astronaut, hopper = (load_portrait(n) for n in PORTRAITS)
    np.testing.assert_array_equal(astronaut.image, data.astronaut())
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as img:
        np.testing.assert_array_equal(hopper.image, np.asarray(img.convert("RGB")))
    assets = Path(__import__("changeling").__file__).parent / "assets" / "portraits"
    text = (assets / "ATTRIBUTION.md").read_text()
    assert "public domain" in text and "NASA" in text and "US Navy" in text


def test_bundled_landmarks_are_what_the_model_finds() -> None:
    ref = LiteRTLandmarker()
    doc = json.loads((Path(__import__("changeling").__file__).parent / "assets/portraits/landmarks.json").read_text())
    for name in PORTRAITS:
        portrait = load_portrait(name)
        stored = portrait.landmarks
        lo, hi = stored[:, :2].min(0), stored[:, :2].max(0)
        found = ref.landmarks(portrait.image, np.concatenate([lo, hi]), iters=3)
        err = np.linalg.norm(found[:, :2] - stored[:, :2], axis=1) / _iod(stored)
        assert err.mean() < 0.01, (name, err.mean())
        assert doc["portraits"][name]["width"] == portrait.image.shape[1]


# -- motion ---------------------------------------------------------------------------------------------------


def test_motion_is_seeded_smooth_and_in_range() -> None:
    a, b, c = make_motion(7, 6.0), make_motion(7, 6.0), make_motion(8, 6.0)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    t = a.frame_times(25)
    assert len(t) == 150 and t[-1] < 6.0
    v = a.at(np.linspace(0, 6, 601))
    s = a.settings
    assert np.abs(v["yaw"]).max() <= np.radians(s.max_yaw_deg) + 1e-9
    assert np.abs(v["pitch"]).max() <= np.radians(s.max_pitch_deg) + 1e-9
    assert 0 <= v["mouth_open"].min() and v["mouth_open"].max() <= s.max_mouth_open
    assert v["mouth_open"].max() > 0.3  # it talks
    for name in ("blink_left", "smile"):
        assert 0 <= v[name].min() and v[name].max() <= 1
    assert np.abs(np.diff(v["yaw"])).max() < np.radians(2)  # smooth: < 2 degrees per 10 ms
    still = make_motion(7, 2.0, MotionSettings(camera=0, lighting=0, speech=0, blinks_per_second=0))
    w = still.at(still.frame_times(25))
    assert np.all(w["cam_x"] == 0) and np.all(w["cam_zoom"] == 1) and np.all(w["mouth_open"] == 0)
    assert np.all(w["blink_left"] == 0) and np.all(w["light_strength"] == 0)
    with pytest.raises(ValueError, match="duration"):
        make_motion(1, 0)


def test_same_seed_gives_identical_frames() -> None:
    motion = make_motion(3, 0.4)
    again = make_motion(3, 0.4)
    other = make_motion(4, 0.4)
    first = list(render_frames("grace_hopper", motion, (96, 80), 25))
    second = list(render_frames("grace_hopper", again, (96, 80), 25))
    third = list(render_frames("grace_hopper", other, (96, 80), 25))
    assert len(first) == 10 and first[0].image.shape == (80, 96, 3)
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.landmarks, y.landmarks)
        assert x.params == y.params
    assert any(not np.array_equal(x.image, z.image) for x, z in zip(first, third, strict=True))


# -- warp -----------------------------------------------------------------------------------------------------


def test_piecewise_affine_warp_agrees_with_scikit_image() -> None:
    from skimage.transform import PiecewiseAffineTransform
    from skimage.transform import warp as sk_warp

    w, h = 120, 100
    border = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1], [w / 2, 0], [w / 2, h - 1], [0, h / 2],
                       [w - 1, h / 2]])
    rng = np.random.default_rng(0)
    gy, gx = np.mgrid[20:h - 15:15, 20:w - 15:16]  # a jittered grid: well-shaped triangles, like a face mesh
    inner = np.stack([gx.ravel(), gy.ravel()], 1) + rng.uniform(-3, 3, size=(gx.size, 2))
    src = np.concatenate([inner, border])
    dst = src.copy()
    dst[: len(inner)] += rng.normal(0, 2.0, size=inner.shape)
    tri = triangulate(dst)  # skimage triangulates the points it maps from: the output's
    map_x, map_y, folds = piecewise_affine_maps(src, dst, tri, (w, h), np.array([[1.0, 0, 0], [0, 1, 0]]))
    ref = PiecewiseAffineTransform.from_estimate(dst, src)  # output -> input, as skimage's warp uses it
    ys, xs = np.mgrid[0:h, 0:w]
    expected = ref(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)).reshape(h, w, 2)
    inside = np.isfinite(expected).all(-1) & (expected != -1).all(-1)
    err = np.hypot(map_x - expected[..., 0], map_y - expected[..., 1])[inside & ~folds]
    # pixels on a shared edge may go to either triangle: they differ by a sub-pixel extrapolation
    assert np.mean(err < 1e-4) > 0.8 and err.max() < 1.0, (np.mean(err < 1e-4), err.max())  # our maps: float32
    smooth = 127 + 100 * np.sin(xs / 7.0) * np.cos(ys / 9.0)
    image = np.stack([smooth, 255 - smooth, smooth / 2], -1).astype(np.uint8)
    ours = warp(image, (map_x, map_y, folds)).astype(float)
    theirs = sk_warp(image, ref, order=1, mode="reflect", preserve_range=True)  # = BORDER_REFLECT_101
    diff = np.abs(ours - theirs)[inside & ~folds]
    assert diff.mean() < 0.5 and np.percentile(diff, 99) < 3  # cv2.remap weighs in 1/32 px steps


def test_identity_warp_changes_nothing() -> None:
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.uniform(5, 60, (20, 2)), [[0, 0], [63, 0], [63, 63], [0, 63]]])
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    maps = piecewise_affine_maps(pts, pts, triangulate(pts), (64, 64), np.array([[1.0, 0, 0], [0, 1, 0]]))
    np.testing.assert_array_equal(warp(image, maps), image)


def test_rest_frame_is_the_portrait_and_motion_leaves_the_background_alone() -> None:
    rig = make_rig(load_portrait("astronaut"), (160, 128))
    still, lm = render_frame(rig, _rest())
    posed = pose(rig, _rest())
    # at rest the frame is the canvas seen through the base framing, pixel for pixel
    expected = cv2.warpAffine(rig.canvas, cv2.invertAffineTransform(posed.to_canvas), (160, 128),
                              flags=cv2.INTER_LINEAR)
    assert np.abs(still.astype(int) - expected).max() <= 1
    np.testing.assert_allclose(lm[:, :2], posed.points[:468], atol=1e-4)
    # a turned, talking head moves nothing beyond the outermost control ring
    moved, _ = render_frame(rig, _rest(yaw=0.2, pitch=0.1, mouth_open=0.8, smile=0.5, brow_raise=0.5))
    ring = posed.points[468 + 72: 468 + 108]
    far = np.ones((128, 160), np.uint8)
    cv2.fillConvexPoly(far, cv2.convexHull(np.round(ring).astype(np.int32)), 0)
    far = cv2.erode(far, np.ones((3, 3), np.uint8)).astype(bool)
    assert far.mean() > 0.05
    assert np.abs(moved.astype(int) - still)[far].max() <= 1


def test_no_tearing_the_warp_map_is_continuous() -> None:
    """A tear is a jump in where neighbouring pixels come from, along a whole edge of the mesh: the face's edge
    beside background the head moved away from would sample points up to ~0.3 inter-ocular distances (17 px
    here) apart, on hundreds of pixel pairs. Off the folds of a turned head, neighbouring pixels sample source
    points a few pixels apart at most (a squashed triangle), and about one pixel apart on 99.9% of pairs."""
    for name in PORTRAITS:
        rig = make_rig(load_portrait(name), (256, 256))
        for params in (_rest(yaw=0.21, pitch=0.14, roll=0.12), _rest(yaw=-0.21, pitch=-0.14),
                       _rest(mouth_open=0.8, smile=0.6), _rest(blink_left=1, blink_right=1, brow_raise=-0.6),
                       _rest(cam_zoom=0.94, cam_x=0.04, cam_y=-0.03, cam_roll=0.03, brow_raise=0.6)):
            posed = pose(rig, params)
            map_x, map_y, folds = piecewise_affine_maps(rig.points[:, :2], posed.points, rig.triangles, rig.size,
                                                        posed.to_canvas, depth=posed.depth)
            ok = ~cv2.dilate(folds.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            jump_x = np.hypot(np.diff(map_x, axis=1), np.diff(map_y, axis=1))[ok[:, 1:] & ok[:, :-1]]
            jump_y = np.hypot(np.diff(map_x, axis=0), np.diff(map_y, axis=0))[ok[1:] & ok[:-1]]
            jumps = np.concatenate([jump_x, jump_y])
            assert jumps.max() < 10, (name, params, jumps.max())
            assert np.percentile(jumps, 99.9) < 2.5, (name, params)
            assert folds.mean() < 0.02


def test_lighting_fields() -> None:
    field = shading((100, 50), angle=0.0, strength=0.2)
    assert field[:, -1].mean() > 1.15 and field[:, 0].mean() < 0.85  # light from the right
    assert abs(field.mean() - 1) < 1e-3
    below = shading((100, 50), angle=np.pi / 2, strength=0.2)
    assert below[-1].mean() > below[0].mean()
    warm = colour_gains(1.0)
    assert warm[0] > 1 > warm[2]
    np.testing.assert_array_equal(colour_gains(0.0), np.ones(3, np.float32))


# -- ground truth ---------------------------------------------------------------------------------------------


def test_the_landmark_model_finds_the_motion_in_the_frames() -> None:
    """MediaPipe's landmark model, run on generated frames, finds the points where the motion put them: far
    closer than where they would be without the head and face motion, and its mouth opening and head turn
    follow the motion's."""
    ref = LiteRTLandmarker()
    motion = make_motion(11, 4.0)
    for name in PORTRAITS:
        rig = make_rig(load_portrait(name), (256, 256))
        errors, baseline, mouth, mouth_ref, turn, turn_ref = [], [], [], [], [], []
        for frame in render_frames(name, motion, 256, 25):
            if frame.index % 5:
                continue
            truth = frame.landmarks.astype(np.float64)
            box = np.concatenate([truth[:, :2].min(0), truth[:, :2].max(0)])
            found = ref.landmarks(frame.image, box)
            d = _iod(truth)
            errors.append(np.linalg.norm(found[:, :2] - truth[:, :2], axis=1).mean() / d)
            camera_only = {**frame.params, **{k: 0.0 for k in ("yaw", "pitch", "roll", "mouth_open", "smile",
                                                                 "blink_left", "blink_right", "brow_raise")}}
            still = pose(rig, camera_only).landmarks
            baseline.append(np.linalg.norm(still[:, :2] - truth[:, :2], axis=1).mean() / d)
            mouth.append(np.linalg.norm(truth[14, :2] - truth[13, :2]) / d)
            mouth_ref.append(np.linalg.norm(found[14, :2] - found[13, :2]) / _iod(found))
            turn.append((truth[1, 0] - 0.5 * (truth[33, 0] + truth[263, 0])) / d)
            turn_ref.append((found[1, 0] - 0.5 * (found[33, 0] + found[263, 0])) / _iod(found))
        assert np.mean(errors) < 0.035 and max(errors) < 0.05, (name, errors)
        assert np.mean(errors) < 0.4 * np.mean(baseline), (name, np.mean(errors), np.mean(baseline))
        assert np.corrcoef(mouth, mouth_ref)[0, 1] > 0.85, name
        assert np.corrcoef(turn, turn_ref)[0, 1] > 0.75, name


def test_one_motion_gives_both_portraits_the_same_pose_and_expression() -> None:
    motion = make_motion(4, 3.0)
    table = motion.at(motion.frame_times(25))
    measures = {}
    for name in PORTRAITS:
        rig = make_rig(load_portrait(name), (192, 192))
        rest = pose(rig, _rest()).landmarks.astype(np.float64)
        d0 = _iod(rest)
        rows = []
        for i in range(len(table["yaw"])):
            p = {k: float(table[k][i]) for k in PARAMS}
            lm = pose(rig, p).landmarks.astype(np.float64)
            rot, scale = _similarity_3d(rest[STABLE], lm[STABLE])
            c, s = np.cos(p["cam_roll"]), np.sin(p["cam_roll"])
            expected = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ _rotation(p["yaw"], p["pitch"], p["roll"])
            angle = np.degrees(np.arccos(np.clip((np.trace(rot.T @ expected) - 1) / 2, -1, 1)))
            assert angle < 1.0, (name, i, angle)  # the head turned as the motion said
            assert abs(scale - p["cam_zoom"]) < 0.01

            def gap(a: int, b: int, lm: np.ndarray = lm, scale: float = scale, rest: np.ndarray = rest,
                    d0: float = d0) -> float:
                return float(np.linalg.norm(lm[a] - lm[b]) / scale / d0 - np.linalg.norm(rest[a] - rest[b]) / d0)

            rows.append((gap(13, 14), gap(159, 145) + gap(386, 374), gap(105, 33) + gap(334, 263),
                         gap(61, 291)))
        measures[name] = np.array(rows)
    a, b = measures["astronaut"], measures["grace_hopper"]
    for j, what in enumerate(("mouth opening", "eye opening", "brow height", "mouth width")):
        spread = max(np.ptp(a[:, j]), 1e-6)
        assert np.abs(a[:, j] - b[:, j]).max() < 0.1 * spread + 0.005, what
    assert np.ptp(a[:, 0]) > 0.1  # the mouth did move


# -- clips ----------------------------------------------------------------------------------------------------


def test_clip_has_audio_as_long_as_the_video_and_its_ground_truth(tmp_path: Path) -> None:
    motion = make_motion(9, 2.0)
    info = make_clip("astronaut", motion, (128, 96), 25, tmp_path / "a.mp4")
    assert info.frames == 50 and info.landmarks.shape == (50, 468, 3) and set(info.params) == set(PARAMS)
    with av.open(str(info.path)) as c:
        vs = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
        assert (vs.width, vs.height) == (128, 96) and vs.average_rate == 25
        assert "sample clip" in c.metadata.get("comment", "")
        assert "synthetic_media" not in c.metadata  # not face-swap output: verify must not call it marked
    with av.open(str(info.path)) as c:
        samples = [f.to_ndarray() for f in c.decode(c.streams.audio[0])]
        rate = c.streams.audio[0].rate
    audio = np.concatenate([s.reshape(-1) for s in samples])
    assert len(frames) == 50
    assert abs(len(audio) / rate - 2.0) < 0.05
    # the voice is loud when the mouth is open
    per_frame = np.array([np.sqrt(np.mean(audio[int(i * rate / 25): int((i + 1) * rate / 25)] ** 2))
                          for i in range(50)])
    assert np.corrcoef(per_frame, info.params["mouth_open"])[0, 1] > 0.5
    # the frames are the rendered ones (lossy coding aside)
    rendered = [f.image for f in render_frames("astronaut", motion, (128, 96), 25)]
    assert np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(frames, rendered, strict=True)]) < 4
    truth = info.save_truth(tmp_path / "a.npz")
    with np.load(truth, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["landmarks"], info.landmarks)
        np.testing.assert_array_equal(z["yaw"], info.params["yaw"])


def test_clip_bad_arguments(tmp_path: Path) -> None:
    motion = make_motion(1, 0.2)
    with pytest.raises(ValueError, match="unknown portrait"):
        make_clip("mona_lisa", motion, 64, 25, tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="at least 32x32"):
        make_clip("astronaut", motion, 16, 25, tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="fps"):
        list(render_frames("astronaut", motion, 64, 0))
    with pytest.raises(UserError, match="does not exist"):
        make_clip("astronaut", motion, 64, 25, tmp_path / "missing" / "x.mp4")
    assert not list(tmp_path.iterdir())
