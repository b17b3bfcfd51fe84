"""Quality measures for the paired benchmark, on aligned face crops: masked SSIM and PSNR, landmark error
normalised by inter-ocular distance, temporal jitter against the truth, and the 'recognisable' rule.

Images are float arrays in [0, 1], shape (H, W, 3) or (H, W); masks (H, W) in [0, 1].
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

FloatImage = NDArray[np.floating]

_C1 = (0.01) ** 2
_C2 = (0.03) ** 2


def _check(a: FloatImage, b: FloatImage, mask: FloatImage | None) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if mask is not None and mask.shape != a.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {a.shape[:2]}")


def ssim_map(a: FloatImage, b: FloatImage, sigma: float = 1.5) -> NDArray[np.float64]:
    """Per-pixel SSIM (Gaussian window, data range 1), averaged over channels: (H, W)."""
    a64 = np.atleast_3d(np.asarray(a, np.float64))
    b64 = np.atleast_3d(np.asarray(b, np.float64))
    out = np.zeros(a64.shape[:2])
    trunc = 3.5  # window radius 3.5 sigma, as the common Gaussian SSIM uses
    for c in range(a64.shape[2]):
        x, y = a64[..., c], b64[..., c]

        def f(z: np.ndarray) -> np.ndarray:
            return gaussian_filter(z, sigma, truncate=trunc, mode="reflect")

        mx, my = f(x), f(y)
        vx = f(x * x) - mx * mx
        vy = f(y * y) - my * my
        cxy = f(x * y) - mx * my
        out += ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    return out / a64.shape[2]


def masked_ssim(a: FloatImage, b: FloatImage, mask: FloatImage | None = None) -> float:
    """Mean SSIM inside the mask (weighted by it); the whole image without one. 1.0 for identical images."""
    _check(a, b, mask)
    m = ssim_map(a, b)
    if mask is None:
        return float(m.mean())
    w = np.asarray(mask, np.float64)
    return float((m * w).sum() / max(w.sum(), 1e-8))


def masked_psnr(a: FloatImage, b: FloatImage, mask: FloatImage | None = None) -> float:
    """PSNR in dB over the masked pixels (data range 1); ``inf`` for identical images."""
    _check(a, b, mask)
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    d = np.atleast_3d(d).mean(axis=2)
    if mask is None:
        mse = float(d.mean())
    else:
        w = np.asarray(mask, np.float64)
        mse = float((d * w).sum() / max(w.sum(), 1e-8))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def landmark_error(pred: NDArray[np.floating], truth: NDArray[np.floating], iod: float) -> float:
    """Mean point distance divided by the inter-ocular distance ``iod`` (pixels)."""
    if pred.shape != truth.shape:
        raise ValueError(f"landmark sets differ in shape: {pred.shape} vs {truth.shape}")
    if iod <= 0:
        raise ValueError("inter-ocular distance must be positive")
    return float(np.linalg.norm(np.asarray(pred)[:, :2] - np.asarray(truth)[:, :2], axis=1).mean() / iod)


def temporal_jitter(outputs: list[FloatImage], truths: list[FloatImage], masks: list[FloatImage] | None = None
                    ) -> float:
    """Mean absolute difference between the output's frame-to-frame change and the truth's (0 = moves exactly
    as the truth does). Flicker that the truth does not have raises it."""
    if len(outputs) != len(truths) or len(outputs) < 2:
        raise ValueError("need two or more frames of outputs and truths")
    vals = []
    for t in range(1, len(outputs)):
        d = (np.asarray(outputs[t], np.float64) - outputs[t - 1]) - (np.asarray(truths[t], np.float64) - truths[t - 1])
        d = np.abs(np.atleast_3d(d)).mean(axis=2)
        if masks is not None:
            w = np.asarray(masks[t], np.float64) * masks[t - 1]
            vals.append(float((d * w).sum() / max(w.sum(), 1e-8)))
        else:
            vals.append(float(d.mean()))
    return float(np.mean(vals))


def is_recognisable(output: FloatImage, truth_b: FloatImage, source_a: FloatImage,
                    mask: FloatImage | None = None) -> bool:
    """A frame is recognisable when the output is closer to the truth (B) than to the source (A) by masked SSIM."""
    return masked_ssim(output, truth_b, mask) > masked_ssim(output, source_a, mask)


def luma(img: FloatImage) -> NDArray[np.float64]:
    """Rec. 601 luma of an (H, W, 3) image (an (H, W) image is returned as float64)."""
    x = np.asarray(img, np.float64)
    return x if x.ndim == 2 else x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def gradient_magnitude(img: FloatImage) -> NDArray[np.float64]:
    """Per-pixel magnitude of the luma gradient (Sobel, scaled so a unit step per pixel reads 1): (H, W)."""
    from scipy.ndimage import sobel

    y = luma(img)
    gx = sobel(y, axis=1, mode="reflect") / 8.0
    gy = sobel(y, axis=0, mode="reflect") / 8.0
    return np.hypot(gx, gy)


def detail_ratio(output: FloatImage, truth: FloatImage, mask: FloatImage | None = None) -> float:
    """Mean gradient magnitude of ``output`` over that of ``truth``, inside ``mask`` (weighted by it).

    1.0: as much fine structure as the truth; below: softer (a blurred face); well above 1: noise or
    over-sharpening. ``nan`` when the truth has no gradient there."""
    _check(output, truth, mask)
    go, gt = gradient_magnitude(output), gradient_magnitude(truth)
    w = np.ones(go.shape) if mask is None else np.asarray(mask, np.float64)
    ref = float((gt * w).sum())
    return float((go * w).sum() / ref) if ref > 0 else float("nan")
