"""Face masks: polygons inside the crop, parts inside the hull, extended over the forehead; the clipping and
morphology checked against independent rasterisation and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from changeling.detect import align
from changeling.masks import masks as M
from changeling.masks import regions as R
from changeling.masks.masks import MASK_NAMES
from changeling.masks.raster import polygon_mask


def _rot(points: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return (points - centre) @ np.array([[c, s], [-s, c]]) + centre


def _faces(face_type: align.FaceType, size: int) -> list[np.ndarray]:
    """Frontal template landmarks in the crop, and deformed versions: rolled, turned (squashed about the
    nose), noisy, shifted half out of the crop."""
    base = align.template_points(face_type, size)
    nose = base[R.NOSE_TIP]
    turned = base.copy()
    turned[:, 0] = nose[0] + (turned[:, 0] - nose[0]) * np.where(turned[:, 0] < nose[0], 0.4, 1.0)
    noisy = base + np.random.default_rng(0).normal(0, size * 0.004, base.shape)
    return [base, _rot(base, 0.3, nose), turned, noisy, base + [size * 0.45, 0]]


def _inside(poly: list[list[float]], container: list[list[float]]) -> bool:
    import cv2

    c = np.asarray(container, np.float32)
    return all(cv2.pointPolygonTest(c, (float(x), float(y)), True) >= -1e-3 for x, y in poly)


@pytest.mark.parametrize("face_type", align.FACE_TYPES)
def test_polygons_lie_inside_the_crop_and_nest(face_type: align.FaceType) -> None:
    size = 64
    for i, lm in enumerate(_faces(face_type, size)):
        polys = M.face_masks(lm, size)
        assert set(polys) <= set(MASK_NAMES) and "hull" in polys and "extended" in polys
        for name, poly in polys.items():
            p = np.asarray(poly)
            assert len(p) >= 3 and p.shape[1] == 2, name
            assert p.min() >= 0 and p.max() <= size - 1, (face_type, i, name)
        for part in ("left_eye", "right_eye", "mouth"):
            if part in polys:
                assert _inside(polys[part], polys["hull"]), (face_type, i, part)
        assert _inside(polys["hull"], polys["extended"]), (face_type, i)


def test_rasterised_areas_are_sensible() -> None:
    size = 128
    lm = align.template_points("whole", size)
    masks = M.rasterize_masks(M.face_masks(lm, size), size)
    frac = {k: float(v.mean()) for k, v in masks.items()}
    assert 0.3 < frac["hull"] < 0.7
    assert frac["hull"] * 1.1 < frac["extended"] < frac["hull"] * 1.6  # the forehead adds some, not a lot
    assert np.all(masks["extended"] >= masks["hull"] - 1e-6)
    for eye in ("left_eye", "right_eye"):
        assert 0.003 < frac[eye] < 0.03
    assert 0.01 < frac["mouth"] < 0.08
    # the subject's left eye is on the image's right; eyes above the mouth; extension goes up (y down)
    ys, xs = np.nonzero(masks["left_eye"])
    yr, xr = np.nonzero(masks["right_eye"])
    ym, _ = np.nonzero(masks["mouth"])
    assert xs.mean() > size / 2 > xr.mean() and ym.mean() > ys.mean()
    added = (masks["extended"] > 0.5) & (masks["hull"] < 0.5)
    assert np.nonzero(added)[0].mean() < np.nonzero(masks["hull"])[0].mean()
    # with iris points (478) the result is the same
    lm478 = np.concatenate([lm, np.full((10, 2), 5.0)])
    assert M.face_masks(lm478, size) == M.face_masks(lm, size)


def test_a_face_outside_the_crop_gives_no_polygons() -> None:
    lm = align.template_points("whole", 64) + 1000
    assert M.face_masks(lm, 64) == {}


def _shoelace(p: np.ndarray) -> float:
    return 0.5 * abs(float(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])))


def test_clip_polygon_against_pixel_counting() -> None:
    rng = np.random.default_rng(7)
    size = 400
    for _ in range(10):
        subject = M.convex_hull(rng.uniform(20, 380, (12, 2)))
        clip = M.convex_hull(rng.uniform(20, 380, (8, 2)))
        if rng.random() < 0.5:
            clip = clip[::-1]  # either orientation
        got = M.clip_polygon(subject, clip)
        both = polygon_mask(size, [subject]) * polygon_mask(size, [clip])
        area = _shoelace(got) if len(got) >= 3 else 0.0
        # pixel counting includes boundary pixels: allow a perimeter's worth
        assert abs(area - float((both > 0.5).sum())) <= 0.6 * (np.linalg.norm(np.diff(clip, axis=0), axis=1).sum()
                                                               + np.linalg.norm(np.diff(subject, axis=0), axis=1).sum()) + 5


def test_combine_masks_is_the_elementwise_minimum() -> None:
    rng = np.random.default_rng(8)
    ms = [rng.random((8, 9)).astype(np.float32) for _ in range(3)]
    np.testing.assert_array_equal(M.combine_masks(ms), np.minimum(np.minimum(ms[0], ms[1]), ms[2]))
    with pytest.raises(ValueError):
        M.combine_masks([ms[0], np.zeros((3, 3), np.float32)])


@pytest.mark.parametrize("px", [-3, -1, 0, 2, 4])
def test_erode_dilate_matches_the_distance_transform(px: int) -> None:
    mask = np.zeros((40, 40), np.float32)
    mask[10:30, 8:25] = 1
    mask[5, 5] = 1
    mask[0:12, 30:40] = 1  # touches the border: erosion works from there too
    got = M.erode_dilate(mask, px)
    if px >= 0:
        ref = ndimage.distance_transform_edt(mask < 0.5) <= px
    else:
        padded = np.pad(mask > 0.5, 1)  # outside the image is outside the mask
        ref = ndimage.distance_transform_edt(padded)[1:-1, 1:-1] > -px
    np.testing.assert_array_equal(got > 0.5, ref)


def test_feather_ramps_across_the_edge() -> None:
    mask = np.zeros((101, 101), np.float32)
    mask[:, 50:] = 1
    soft = M.feather(mask, 9)
    row = soft[50]
    assert soft.min() >= 0 and soft.max() <= 1
    assert np.all(np.diff(row[:85]) >= -1e-6)  # monotone across the edge
    assert row[-1] < 0.7  # outside the image counts as outside the mask: the crop's border is soft too
    assert row[35] < 0.01 and row[65] > 0.99 and 0.3 < row[50] < 0.7  # ramp about 2 * 9 px wide
    assert 0.05 < row[45] < 0.45
    assert abs(float(soft[10:90, :85].sum()) - float(mask[10:90, :85].sum())) < 0.01 * mask.sum()  # no mass lost
