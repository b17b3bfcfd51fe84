from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from changeling.evaluate.metrics import (
    is_recognisable,
    landmark_error,
    masked_psnr,
    masked_ssim,
    ssim_map,
    temporal_jitter,
)


def _img(seed: int, shape: tuple[int, ...] = (48, 48, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter
    return np.clip(gaussian_filter(rng.random(shape), (2, 2, 0)[: len(shape)]) * 1.5 - 0.25, 0, 1)


def test_ssim_map_matches_scikit_image() -> None:
    a, b = _img(0), _img(1) * 0.5 + _img(0) * 0.5
    _, ref = structural_similarity(a, b, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, full=True)
    ours = ssim_map(a, b)
    # skimage crops a border of the window radius before averaging; compare the interior maps
    r = 6
    assert np.allclose(ours[r:-r, r:-r], ref.mean(axis=2)[r:-r, r:-r], atol=1e-6)


def test_identical_inputs_give_perfect_scores() -> None:
    a = _img(3)
    mask = np.zeros(a.shape[:2])
    mask[10:40, 8:30] = 1
    assert masked_ssim(a, a, mask) == pytest.approx(1.0)
    assert masked_psnr(a, a, mask) == float("inf")
    pts = np.random.default_rng(0).random((478, 3)) * 64
    assert landmark_error(pts, pts, iod=20) == 0.0
    assert temporal_jitter([a, a * 0.9, a * 0.8], [a, a * 0.9, a * 0.8]) == pytest.approx(0.0)


def test_psnr_matches_scikit_image_without_mask() -> None:
    a, b = _img(4), _img(5)
    assert masked_psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-9)


def test_mask_restricts_the_measure() -> None:
    a = _img(6)
    b = a.copy()
    b[:, 24:] = _img(7)[:, 24:]  # differ only on the right half
    left = np.zeros(a.shape[:2])
    left[:, :16] = 1
    assert masked_ssim(a, b, left) > 0.999
    assert masked_ssim(a, b) < 0.9


def test_returning_a_unchanged_is_not_recognisable() -> None:
    a, b = _img(8), _img(9)
    assert not is_recognisable(a, truth_b=b, source_a=a)
    assert is_recognisable(b * 0.95 + a * 0.05, truth_b=b, source_a=a)


def test_flicker_raises_jitter() -> None:
    truth = [_img(10) for _ in range(5)]
    steady = [t.copy() for t in truth]
    flicker = [t + (0.1 if i % 2 else 0.0) for i, t in enumerate(truth)]
    assert temporal_jitter(steady, truth) == pytest.approx(0.0)
    assert temporal_jitter(flicker, truth) == pytest.approx(0.1, rel=1e-6)


def test_detail_ratio_is_one_for_the_truth_below_for_blur_above_for_noise() -> None:
    from scipy.ndimage import gaussian_filter

    from changeling.evaluate.metrics import detail_ratio
    from changeling.synth import load_portrait

    truth = load_portrait("grace_hopper").image[120:376, 128:384].astype(np.float64) / 255  # a real face's detail
    mask = np.zeros(truth.shape[:2])
    mask[40:220, 50:210] = 1
    assert detail_ratio(truth, truth, mask) == pytest.approx(1.0)
    soft = detail_ratio(gaussian_filter(truth, (1.5, 1.5, 0)), truth, mask)
    softer = detail_ratio(gaussian_filter(truth, (3, 3, 0)), truth, mask)
    assert softer < soft < 0.8
    noisy = np.clip(truth + np.random.default_rng(0).normal(0, 0.1, truth.shape), 0, 1)
    assert detail_ratio(noisy, truth, mask) > 1.2
    # the mask decides where it is measured: a blur outside it changes nothing
    outside = truth.copy()
    outside[:30] = gaussian_filter(truth, (3, 3, 0))[:30]
    assert detail_ratio(outside, truth, mask) == pytest.approx(1.0)
