"""Alignment: Umeyama against closed-form answers and scikit-image, face-type coverage, warps against
independent resamplers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.transform import SimilarityTransform, warp

from changeling.detect import align
from changeling.detect import template as T
from changeling.masks import regions as R


def similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(0.05, 20), angle=st.floats(-np.pi, np.pi), tx=st.floats(-1e3, 1e3),
       ty=st.floats(-1e3, 1e3), seed=st.integers(0, 2**16))
def test_umeyama_recovers_a_known_similarity(scale: float, angle: float, tx: float, ty: float, seed: int) -> None:
    src = np.random.default_rng(seed).uniform(-100, 100, (25, 2))
    truth = similarity(scale, angle, tx, ty)
    got = align.umeyama(src, align.transform_points(src, truth))
    np.testing.assert_allclose(got, truth, rtol=1e-8, atol=1e-7 * max(1.0, abs(tx), abs(ty)))


def test_umeyama_agrees_with_scikit_image_on_noisy_points() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (40, 2))
    dst = align.transform_points(src, similarity(1.7, 0.4, 30, -12)) + rng.normal(0, 3, (40, 2))
    ref = SimilarityTransform.from_estimate(src, dst)
    np.testing.assert_allclose(align.umeyama(src, dst), ref.params[:2], atol=1e-9)


def test_umeyama_weights_ignore_zero_weight_outliers() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, (20, 2))
    truth = similarity(0.8, -1.0, 5, 7)
    dst = align.transform_points(src, truth)
    dst[:3] += 500  # outliers
    w = np.ones(20)
    w[:3] = 0
    np.testing.assert_allclose(align.umeyama(src, dst, w), truth, atol=1e-9)
    assert not np.allclose(align.umeyama(src, dst), truth, atol=1e-3)


def test_umeyama_never_returns_a_reflection() -> None:
    src = np.random.default_rng(3).uniform(0, 100, (10, 2))
    got = align.umeyama(src, src * [-1, 1])
    assert np.linalg.det(got[:, :2]) > 0


@pytest.mark.parametrize("face_type", align.FACE_TYPES)
@pytest.mark.parametrize("points", [468, 478])
def test_face_affine_recovers_the_frame_to_crop_similarity(face_type: align.FaceType, points: int) -> None:
    size = 200
    truth = similarity(0.37, 0.3, -40.0, 65.0)  # frame -> crop
    in_crop = align.template_points(face_type, size)
    frame_pts = align.transform_points(in_crop, align.invert_affine(truth))
    lm = np.zeros((points, 3), np.float32)
    lm[:468, :2] = frame_pts
    lm[:, 2] = np.random.default_rng(0).normal(0, 50, points)  # depth is ignored
    lm[468:, :2] = 1e6  # iris points (if any) are not used
    np.testing.assert_allclose(align.face_affine(lm, face_type, size), truth, rtol=1e-4, atol=1e-3)


def test_template_is_normalised_and_symmetric() -> None:
    pts = np.asarray(T.POINTS)
    np.testing.assert_allclose(pts[R.RIGHT_EYE_OUTER], [-0.5, 0], atol=1e-3)
    np.testing.assert_allclose(pts[R.LEFT_EYE_OUTER], [0.5, 0], atol=1e-3)
    mirror = np.asarray(T.MIRROR)
    assert np.array_equal(mirror[mirror], np.arange(468))
    np.testing.assert_allclose(pts[mirror] * [-1, 1], pts, atol=2e-4)
    assert pts[R.CHIN, 1] > pts[R.NOSE_TIP, 1] > 0 > pts[R.FOREHEAD, 1]  # y down: forehead, eyes, nose, chin
    assert all(i not in T.STABLE for i in R.LIPS_INNER + R.FACE_OVAL)  # no jaw, no moving lips


def _square_in_frame(face_type: align.FaceType, lm: np.ndarray, size: int) -> np.ndarray:
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    return align.transform_points(corners, align.invert_affine(align.face_affine(lm, face_type, size)))


def test_face_types_nest() -> None:
    lm = align.transform_points(align.template_points("whole", 256), similarity(2.0, 0.5, 100, 50))
    size = 256
    for small, big in zip(align.FACE_TYPES, align.FACE_TYPES[1:], strict=False):
        inner = _square_in_frame(small, lm, size)
        in_big = align.transform_points(inner, align.face_affine(lm, big, size))
        assert np.all(in_big >= -0.5 - 1e-6) and np.all(in_big <= size - 0.5 + 1e-6), (small, big)
        assert align.face_square(small)[2] < align.face_square(big)[2]


def _inside(face_type: align.FaceType, idx: list[int]) -> np.ndarray:
    p = align.template_points(face_type, 100)[idx]
    return np.all((p >= -0.5) & (p <= 99.5), axis=1)


def test_face_type_coverage() -> None:
    inner = list(R.LEFT_EYE + R.RIGHT_EYE + R.LIPS_OUTER) + [R.NOSE_TIP]
    for ft in align.FACE_TYPES:  # every type shows the eyes, nose and mouth
        assert _inside(ft, inner).all(), ft
    assert not _inside("half", [R.CHIN, R.FOREHEAD]).any()  # half: no chin, no forehead
    assert _inside("full", [R.CHIN]).all() and not _inside("full", [R.FOREHEAD]).any()
    assert _inside("whole", list(R.FACE_OVAL)).all()  # whole: the whole oval with the forehead
    head = align.template_points("head", 100)
    oval = head[list(R.FACE_OVAL)]
    # head: room above the oval for the hair, at least half the face's height
    assert oval[:, 1].min() - (-0.5) > 0.5 * (oval[:, 1].max() - oval[:, 1].min())


def test_face_affine_rejects_bad_landmarks() -> None:
    with pytest.raises(ValueError, match="468"):
        align.face_affine(np.zeros((68, 2)), "whole", 256)
    lm = align.template_points("whole", 256)
    lm[T.STABLE[0]] = np.nan
    with pytest.raises(ValueError, match="finite"):
        align.face_affine(lm, "whole", 256)
    with pytest.raises(ValueError, match="face_type"):
        align.face_affine(align.template_points(), "huge", 256)  # type: ignore[arg-type]


def test_invert_and_transform_points_against_opencv() -> None:
    a = similarity(1.3, 0.2, 5, -3)
    pts = np.random.default_rng(4).uniform(-50, 50, (30, 2))
    np.testing.assert_allclose(align.transform_points(pts, a), cv2.transform(pts[None], a)[0], atol=1e-9)
    np.testing.assert_allclose(align.invert_affine(a), cv2.invertAffineTransform(a), atol=1e-12)
    back = align.transform_points(align.transform_points(pts, a), align.invert_affine(a))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_warp_face_matches_scikit_image_bilinear() -> None:
    rng = np.random.default_rng(5)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (5, 5), 1.5)
    a = similarity(0.9, 0.35, -10, 20)  # frame -> crop
    crop = align.warp_face(frame, a, 64)
    # skimage's warp takes the output -> input map; same pixel-centre convention
    inv = np.vstack([align.invert_affine(a), [0, 0, 1]])
    ref = warp(frame, inv, output_shape=(64, 64), order=1, preserve_range=True, mode="constant", cval=0)
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(crop[inner].astype(float) - ref[inner]).max() <= 1.0


def test_warp_face_area_path_avoids_aliasing_and_keeps_positions() -> None:
    # a 1-pixel checkerboard shrunk 8x: area averaging gives flat grey, plain bilinear sampling does not
    y, x = np.mgrid[0:1024, 0:1024]
    board = (((x + y) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    a = similarity(1 / 8, 0.1, 10, 5)
    auto = align.warp_face(board, a, 100)
    linear = align.warp_face(board, a, 100, interpolation="linear")
    inner = (slice(20, 80), slice(20, 80))
    assert auto[inner].std() < 3 and abs(float(auto[inner].mean()) - 127.5) < 3
    assert linear[inner].std() > 20
    # a smooth ramp must land at the same place either way (no shift from the reduction step)
    ramp = np.clip(x * 0.2 + y * 0.05, 0, 255).astype(np.uint8)[..., None].repeat(3, 2)
    diff = align.warp_face(ramp, a, 100).astype(int) - align.warp_face(ramp, a, 100, interpolation="linear")
    assert np.abs(diff[inner]).max() <= 1


def test_warp_face_outside_the_frame_is_black_and_sizes_are_right() -> None:
    frame = np.full((50, 60, 3), 200, np.uint8)
    crop = align.warp_face(frame, similarity(1.0, 0.0, 1000, 1000), 32)
    assert crop.shape == (32, 32, 3) and crop.max() == 0
    small = align.warp_face(frame, similarity(0.01, 0.0, 0, 0), 16)  # whole frame in a few pixels
    assert small.shape == (16, 16, 3)


@pytest.mark.parametrize("shrink", [2.5, 5.3, 7.9])
def test_warp_face_area_path_at_fractional_shrinks(shrink: float) -> None:
    """The reduction goes by a whole factor first and the warp does the rest: positions stay exact on a
    smooth image, and fine detail still averages out instead of aliasing."""
    y, x = np.mgrid[0:900, 0:1200]
    a = similarity(1 / shrink, 0.2, 0, 0)
    a[:, 2] = 47.5 - a[:, :2] @ [600.0, 450.0]  # the crop's centre on the frame's centre, all of it inside
    ramp = np.clip(x * 0.15 + y * 0.1 + 10 * np.sin(x / 40.0), 0, 255).astype(np.uint8)[..., None].repeat(3, 2)
    diff = align.warp_face(ramp, a, 96).astype(int) - align.warp_face(ramp, a, 96, interpolation="linear")
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(diff[inner]).max() <= 1
    board = (((x + y) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    auto = align.warp_face(board, a, 96)
    assert auto[inner].std() < 8 and abs(float(auto[inner].mean()) - 127.5) < 4
