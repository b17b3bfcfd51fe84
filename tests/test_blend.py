"""paste_back and the blend masks, against OpenCV full-frame warps and closed forms."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from changeling.convert import blend, maskops
from changeling.masks import regions

H, W, S = 120, 160, 64


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    """frame -> crop: rotate by angle, scale, then translate."""
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([r, [[tx], [ty]]], axis=1)


def _frame() -> np.ndarray:
    return cv2.resize(data.astronaut(), (W, H), interpolation=cv2.INTER_AREA)


def _affine() -> np.ndarray:
    # a 64 px crop covering about 50 frame pixels around (80, 60), turned by 12 degrees
    a = _similarity(12.0, 1.3, 0.0, 0.0)
    centre = a[:, :2] @ np.array([80.0, 60.0])
    a[:, 2] = (S - 1) / 2 - centre
    return a


def _inverse(a: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(a)


def test_full_mask_pastes_the_warped_crop_and_nothing_else() -> None:
    rng = np.random.default_rng(0)
    frame = _frame()
    face = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    mask = np.ones((S, S), np.float32)
    a = _affine()
    out = blend.paste_back(frame, face, mask, a)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, frame)
    # independent reference: OpenCV warps the whole crop and the whole mask into the whole frame
    inv = _inverse(a)
    ref_face = cv2.warpAffine(face.astype(np.float32), inv, (W, H), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    ref_mask = cv2.warpAffine(mask, inv, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    inside = ref_mask >= 1.0 - 1e-6
    outside = ref_mask <= 0.0
    assert inside.sum() > 1500 and outside.sum() > 10000
    assert np.abs(out[inside].astype(np.float32) - ref_face[inside]).max() <= 1.0
    np.testing.assert_array_equal(out[outside], frame[outside])
    # and outside the box that paste_back says it touches, nothing changed
    x0, y0, x1, y1 = blend.paste_box(mask, a, frame.shape)
    box = np.zeros((H, W), bool)
    box[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(out[~box], frame[~box])
    # the box is tight: the mask's footprint fills most of it
    assert (ref_mask > 0)[box].mean() > 0.5
    # fractional edge pixels are the alpha blend of the two
    edge = (ref_mask > 0.05) & (ref_mask < 0.95)
    expected = frame[edge] * (1 - ref_mask[edge, None]) + ref_face[edge] * ref_mask[edge, None]
    assert np.abs(out[edge] - expected).max() <= 1.0


def test_round_trip_warp_then_paste_gives_the_original() -> None:
    frame = cv2.GaussianBlur(_frame(), (0, 0), 1.0)
    a = _affine()
    crop = cv2.warpAffine(frame, a, (S, S), flags=cv2.INTER_LINEAR)
    blank = np.zeros_like(frame)
    mask = np.ones((S, S), np.float32)
    out = blend.paste_back(blank, crop, mask, a)
    ref_mask = cv2.warpAffine(mask, _inverse(a), (W, H))
    inner = cv2.erode((ref_mask >= 1 - 1e-6).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    err = np.abs(out[inner].astype(int) - frame[inner].astype(int))
    assert err.mean() < 1.5 and np.percentile(err, 99) <= 8, (err.mean(), np.percentile(err, 99))
    # the error is the two bilinear resamplings' own: OpenCV's full-frame round trip gives the same pixels
    ref = cv2.warpAffine(crop, _inverse(a), (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(out[inner].astype(int) - ref[inner].astype(int)).max() <= 1
    # a plain shift by whole pixels at scale 1 is exact
    t = np.array([[1.0, 0.0, -40.0], [0.0, 1.0, -30.0]])
    crop = cv2.warpAffine(frame, t, (S, S))
    out = blend.paste_back(blank, crop, mask, t)
    np.testing.assert_array_equal(out[30:30 + S, 40:40 + S], frame[30:30 + S, 40:40 + S])


def test_zero_mask_and_off_frame_crops_change_nothing() -> None:
    frame = _frame()
    face = np.full((S, S, 3), 255, np.uint8)
    out = blend.paste_back(frame, face, np.zeros((S, S), np.float32), _affine())
    np.testing.assert_array_equal(out, frame)
    far = _affine()
    far[:, 2] -= 10_000
    np.testing.assert_array_equal(blend.paste_back(frame, face, np.ones((S, S), np.float32), far), frame)


def test_float_crop_and_inplace() -> None:
    frame = _frame()
    face = np.full((S, S, 3), 0.5, np.float32)
    mask = np.ones((S, S), np.float32)
    work = frame.copy()
    out = blend.paste_back(work, face, mask, _affine(), inplace=True)
    assert out is work
    ref_mask = cv2.warpAffine(mask, _inverse(_affine()), (W, H))
    assert np.all(out[ref_mask >= 1 - 1e-6] == 128)


def test_partial_mask_only_changes_its_footprint() -> None:
    frame = _frame()
    face = np.zeros((S, S, 3), np.uint8)
    mask = np.zeros((S, S), np.float32)
    mask[20:40, 10:30] = 1.0
    out = blend.paste_back(frame, face, mask, _affine())
    ref_mask = cv2.warpAffine(mask, _inverse(_affine()), (W, H))
    changed = np.any(out != frame, axis=2)
    assert not np.any(changed & (ref_mask <= 0))
    assert np.all(changed[ref_mask >= 0.99] | (frame[ref_mask >= 0.99].max(axis=1) == 0))


def test_scale_about_centre() -> None:
    a = _affine()
    b = blend.scale_about_centre(a, 1.2, S)
    c = np.array([(S - 1) / 2] * 2)
    inv_a, inv_b = _inverse(a), _inverse(b)
    # the crop centre maps to the same frame point; distances from it grow by the scale
    np.testing.assert_allclose(inv_a[:, :2] @ c + inv_a[:, 2], inv_b[:, :2] @ c + inv_b[:, 2], atol=1e-9)
    p = np.array([5.0, 9.0])
    da = np.linalg.norm((inv_a[:, :2] @ p + inv_a[:, 2]) - (inv_a[:, :2] @ c + inv_a[:, 2]))
    db = np.linalg.norm((inv_b[:, :2] @ p + inv_b[:, 2]) - (inv_b[:, :2] @ c + inv_b[:, 2]))
    assert db == pytest.approx(1.2 * da)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="uint8 frame"):
        blend.paste_back(_frame().astype(np.float32), np.zeros((S, S, 3), np.uint8), np.ones((S, S)), _affine())
    with pytest.raises(ValueError, match="mask"):
        blend.paste_back(_frame(), np.zeros((S, S, 3), np.uint8), np.ones((S, 3)), _affine())


# ---- masks -------------------------------------------------------------------------------------------


def _disk_points(size: int = S) -> np.ndarray:
    """Fake 468 landmarks: the face oval on a circle of radius 20 around the crop centre, the rest at the
    centre, chin at the bottom and the nose bridge above the centre."""
    pts = np.full((468, 2), (size - 1) / 2, np.float64)
    n = len(regions.FACE_OVAL)
    for k, idx in enumerate(regions.FACE_OVAL):
        t = -np.pi / 2 + 2 * np.pi * k / n  # starts at the top (index 10), clockwise on screen
        pts[idx] = (size - 1) / 2 + 20 * np.array([np.cos(t), np.sin(t)])
    pts[regions.NOSE_BRIDGE] = ((size - 1) / 2, (size - 1) / 2 - 5)
    return pts


def test_hull_mask_is_the_oval_disk() -> None:
    m = maskops.hull_mask(_disk_points(), S)
    yy, xx = np.mgrid[0:S, 0:S]
    r = np.hypot(xx - (S - 1) / 2, yy - (S - 1) / 2)
    assert np.all(m[r < 18.5] == 1) and np.all(m[r > 21] == 0)
    ext = maskops.extended_mask(_disk_points(), S)
    assert np.all(ext >= m)  # it only adds
    top = (yy < (S - 1) / 2 - 21) & (ext > 0.5)
    assert top.sum() > 20  # above the oval's top: the forehead
    assert not np.any((yy > (S - 1) / 2 + 21) & (ext > 0))  # nothing below the chin


def test_combine_erode_feather() -> None:
    a = np.zeros((S, S), np.float32)
    a[10:50, 10:50] = 1
    b = np.zeros((S, S), np.float32)
    b[20:60, 0:40] = 0.7
    np.testing.assert_array_equal(maskops.combine(a, b), np.minimum(a, b))
    e = maskops.erode(a, 3)
    assert e[13:47, 13:47].min() == 1 and e[:13].max() == 0 and e[12, 30] == 0
    d = maskops.erode(a, -3)
    assert d[7:53, 7:53][3:-3, 3:-3].min() == 1 and d[7, 30] == 1 and d[6, 30] == 0
    f = maskops.feather(a, 8)
    assert np.all(f[a == 0] == 0)  # the feather lies inside the mask
    assert f[18:42, 18:42].min() > 0.999  # deeper than the width: full
    row = f[30, 10:30]
    assert np.all(np.diff(row) >= -1e-6) and 0.05 < row[4] < 0.95  # a ramp from the edge inward


def test_mask_builder_kinds() -> None:
    pts = _disk_points()
    pred = np.zeros((S, S), np.float32)
    pred[:, : S // 2] = 1.0  # left half
    for kind in ("predicted", "hull", "extended", "combined"):
        m = maskops.MaskBuilder(kind=kind, erode=0, blur=0)(pred, pts, S)  # type: ignore[arg-type]
        assert m.shape == (S, S) and m.dtype == np.float32
    comb = maskops.MaskBuilder("combined", 0, 0)(pred, pts, S)
    hull = maskops.MaskBuilder("hull", 0, 0)(pred, pts, S)
    assert comb.sum() < 0.6 * hull.sum() and np.all(comb <= hull)
    with pytest.raises(ValueError, match="predicted"):
        maskops.MaskBuilder("predicted")(None, pts, S)
    with pytest.raises(ValueError, match="landmarks"):
        maskops.MaskBuilder("hull")(pred, None, S)
    soft = maskops.MaskBuilder("hull", erode=2, blur=6)(pred, pts, S)
    assert soft.max() == pytest.approx(1.0) and np.all(soft <= hull)


def test_fast_hull_matches_the_extraction_polygon() -> None:
    """hull_mask skips the other regions; it must still give extraction's hull polygon, rasterised."""
    from changeling.detect.align import template_points
    from changeling.masks.masks import face_masks
    from changeling.masks.raster import polygon_mask

    rng = np.random.default_rng(0)
    for k in range(4):
        pts = template_points("whole", S) + rng.normal(0, 1, (468, 2))
        if k == 3:
            pts = pts * 1.8 - 20  # partly outside the crop: extraction clips the polygon, rasterising does too
        fast = maskops.hull_mask(pts, S)
        ref = polygon_mask(S, [face_masks(pts, S)["hull"]])
        assert (fast != ref).sum() <= 0.005 * ref.sum()


def test_paste_back_never_touches_pixels_outside_the_warped_mask() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    frame = _frame()

    @settings(max_examples=40, deadline=None)
    @given(angle=st.floats(-180, 180), scale=st.floats(0.3, 4.0), cx=st.floats(-40, W + 40),
           cy=st.floats(-40, H + 40), seed=st.integers(0, 2**16))
    def check(angle: float, scale: float, cx: float, cy: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        a = _similarity(angle, scale, 0.0, 0.0)
        a[:, 2] = (S - 1) / 2 - a[:, :2] @ np.array([cx, cy])
        mask = (rng.random((S, S)) > 0.7).astype(np.float32) * rng.random((S, S)).astype(np.float32)
        face = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
        out = blend.paste_back(frame, face, mask, a)
        ref_mask = cv2.warpAffine(mask, _inverse(a), (W, H), flags=cv2.INTER_LINEAR)
        untouched = ref_mask <= 0
        np.testing.assert_array_equal(out[untouched], frame[untouched])

    check()
