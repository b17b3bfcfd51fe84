"""Colour matchers against independent references: scikit-image, OpenCV, SciPy and closed forms."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.linalg
from skimage import data
from skimage.color import lab2rgb, rgb2lab
from skimage.exposure import match_histograms

from changeling.convert import color

S = 64


def _face() -> np.ndarray:
    return cv2.resize(data.astronaut()[20:260, 150:390], (S, S), interpolation=cv2.INTER_AREA)


def _target() -> np.ndarray:
    # a warmer, darker, lower-contrast scene than the face
    img = cv2.resize(data.coffee()[50:350, 150:450], (S, S), interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.clip(img * 0.5 + np.array([70, 50, 40], np.float32), 0, 255).astype(np.uint8)


def _ellipse_mask(feather: bool = True) -> np.ndarray:
    m = np.zeros((S, S), np.float32)
    cv2.ellipse(m, (S // 2, S // 2 + 2), (S // 3, S * 2 // 5), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(m, (0, 0), 2.0) if feather else m


def _f(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255


def test_histogram_matching_equals_skimage_on_masked_pixels() -> None:
    face, target, mask = _f(_face()), _f(_target()), _ellipse_mask()
    sel = mask >= 0.5
    out = color.hist_match(face, target, mask)
    ref = match_histograms(face[sel][:, None, :], target[sel][:, None, :], channel_axis=-1)[:, 0, :]
    np.testing.assert_allclose(out[sel], np.clip(ref, 0, 1), atol=1e-6)
    # and the face really changed toward the target
    assert np.abs(out[sel].mean(0) - target[sel].mean(0)).max() < 0.01 < np.abs(face[sel].mean(0) - target[sel].mean(0)).max()


def test_histogram_matching_uint8_rounds_skimage() -> None:
    face, target, mask = _face(), _target(), _ellipse_mask()
    sel = mask >= 0.5
    out = color.hist_match(face, target, mask)
    assert out.dtype == np.uint8
    # skimage casts integer results back by truncation; give it the same values as floats to get them exact
    fs, ts = face[sel].astype(np.float64), target[sel].astype(np.float64)
    ref = match_histograms(fs[:, None, :], ts[:, None, :], channel_axis=-1)[:, 0, :]
    assert np.abs(out[sel].astype(np.float64) - ref).max() <= 0.5 + 1e-9
    # outside the mask the same monotone map applies: order of values is kept per channel
    for c in range(3):
        order = np.argsort(face[..., c].ravel(), kind="stable")
        assert np.all(np.diff(out[..., c].ravel()[order].astype(int)) >= 0)


def test_rct_equals_direct_lab_computation_with_skimage() -> None:
    face, target, mask = _f(_face()), _f(_target()), _ellipse_mask()
    sel = mask >= 0.5
    lf, lt = rgb2lab(face), rgb2lab(target)
    mu_f, sd_f = lf[sel].mean(0), lf[sel].std(0)
    mu_t, sd_t = lt[sel].mean(0), lt[sel].std(0)
    expected = np.clip(lab2rgb((lf - mu_f) / sd_f * sd_t + mu_t), 0, 1)
    out = color.rct(face, target, mask)
    assert out.dtype == np.float32 and out.shape == face.shape
    err = np.abs(out - expected)
    assert err[sel].max() < 0.02 and err[sel].mean() < 0.003
    # the result carries the target's LAB statistics (measured by skimage, not by the code under test)
    lo = rgb2lab(out)[sel]
    np.testing.assert_allclose(lo.mean(0), mu_t, atol=0.6)
    np.testing.assert_allclose(lo.std(0), sd_t, rtol=0.05, atol=0.3)
    assert np.abs(lf[sel].mean(0) - mu_t).max() > 5  # the test would notice a no-op


def test_mean_color_shifts_masked_mean() -> None:
    face, target, mask = _f(_face()) * 0.5 + 0.25, _f(_target()), _ellipse_mask()
    sel = mask >= 0.5
    out = color.mean_color(face.astype(np.float32), target, mask)
    np.testing.assert_allclose(out[sel].mean(0), target[sel].mean(0), atol=2e-3)
    # a pure shift: differences between pixels are kept where nothing was clipped
    d_in, d_out = face[5, 5] - face[30, 30], out[5, 5] - out[30, 30]
    np.testing.assert_allclose(d_in, d_out, atol=1e-5)


def test_mkl_maps_covariance_onto_target() -> None:
    rng = np.random.default_rng(0)
    src = rng.multivariate_normal([0.4, 0.5, 0.3], [[0.02, 0.01, 0.0], [0.01, 0.03, 0.005], [0.0, 0.005, 0.01]], 5000)
    tgt = rng.multivariate_normal([0.6, 0.4, 0.35], [[0.01, -0.004, 0.002], [-0.004, 0.015, 0.0], [0.002, 0.0, 0.02]],
                                  5000)
    t, b = color.mkl_transform(src, tgt)
    mapped = src @ t + b
    np.testing.assert_allclose(np.cov(mapped, rowvar=False), np.cov(tgt, rowvar=False), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(mapped.mean(0), tgt.mean(0), atol=1e-9)
    # the closed form with SciPy's matrix square root (an independent implementation)
    cs, ct = np.cov(src, rowvar=False), np.cov(tgt, rowvar=False)
    r = np.real(scipy.linalg.sqrtm(cs))
    ri = np.linalg.inv(r)
    expected = ri @ np.real(scipy.linalg.sqrtm(r @ ct @ r)) @ ri
    np.testing.assert_allclose(t, expected, atol=1e-4)
    # Monge map: symmetric positive definite
    np.testing.assert_allclose(t, t.T, atol=1e-12)
    assert np.linalg.eigvalsh(t).min() > 0


def test_mkl_on_images_gives_target_covariance() -> None:
    face, target, mask = _f(_face()) * 0.5 + 0.25, _f(_target()), _ellipse_mask()
    sel = mask >= 0.5
    out = color.mkl(face.astype(np.float32), target, mask)
    cov_out, cov_t = np.cov(out[sel], rowvar=False), np.cov(target[sel], rowvar=False)
    assert np.abs(cov_out - cov_t).max() < 0.05 * np.abs(cov_t).max()
    np.testing.assert_allclose(out[sel].mean(0), target[sel].mean(0), atol=0.01)
    assert np.abs(np.cov(face[sel], rowvar=False) - cov_t).max() > 0.3 * np.abs(cov_t).max()


def _cv2_seamless(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m8 = (mask >= 0.5).astype(np.uint8) * 255
    inner = m8.copy()
    inner[0, :] = inner[-1, :] = 0
    inner[:, 0] = inner[:, -1] = 0
    x, y, w, h = cv2.boundingRect(inner)
    return cv2.seamlessClone(face, target, m8, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)


@pytest.mark.parametrize("shape", ["ellipse", "blob", "touches_border"])
def test_seamless_equals_opencv(shape: str) -> None:
    face, target = _face(), _target()
    if shape == "ellipse":
        mask = _ellipse_mask()
    elif shape == "blob":
        rng = np.random.default_rng(1)
        noise = cv2.GaussianBlur(rng.random((S, S)).astype(np.float32), (0, 0), 6)
        mask = (noise > np.quantile(noise, 0.55)).astype(np.float32)
        mask[:3] = mask[-3:] = 0
        mask[:, :3] = mask[:, -3:] = 0
    else:
        mask = np.zeros((S, S), np.float32)
        mask[0:40, 10:S] = 1.0
    ref = _cv2_seamless(face, target, mask)
    out = color.seamless(face, target, mask)
    assert out.dtype == np.uint8
    d = np.abs(out.astype(int) - ref.astype(int))
    assert d.max() <= 2 and d.mean() < 0.5, (d.max(), d.mean())
    # it really did something: inside the mask it is neither the face nor the target
    sel = mask >= 0.5
    assert np.abs(out[sel].astype(int) - face[sel]).mean() > 3
    assert np.abs(out[sel].astype(int) - target[sel]).mean() > 3


def test_seamless_float_matches_uint8() -> None:
    face, target, mask = _face(), _target(), _ellipse_mask()
    out_f = color.seamless(_f(face), _f(target), mask)
    out_u = color.seamless(face, target, mask)
    assert out_f.dtype == np.float32
    assert np.abs(out_f * 255 - out_u).max() <= 0.5 + 1e-3


def test_poisson_solver_recovers_known_function() -> None:
    yy, xx = np.mgrid[0:20, 0:30].astype(np.float64)
    u = (np.sin(xx / 5) * np.cos(yy / 7) + 0.01 * xx * yy)[..., None]
    lap = np.zeros_like(u)
    lap[1:-1, 1:-1] = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
    np.testing.assert_allclose(color.poisson_dirichlet(lap, u), u, atol=1e-10)


@pytest.mark.parametrize("mode", list(color.COLOR_MATCHERS))
def test_every_mode_keeps_shape_dtype_and_range(mode: str) -> None:
    fn = color.color_matcher(mode)
    face, target, mask = _face(), _target(), _ellipse_mask()
    out_u = fn(face, target, mask)
    assert out_u.dtype == np.uint8 and out_u.shape == face.shape
    out_f = fn(_f(face), _f(target), mask)
    assert out_f.dtype == np.float32 and out_f.min() >= 0 and out_f.max() <= 1
    # an empty mask has no statistics: the face comes back as it was
    empty = np.zeros((S, S), np.float32)
    np.testing.assert_array_equal(fn(face, target, empty), face)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="target"):
        color.rct(_face(), _target()[:10], _ellipse_mask())
    with pytest.raises(ValueError, match="mask"):
        color.rct(_face(), _target(), np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match="unknown colour mode"):
        color.color_matcher("sepia")
