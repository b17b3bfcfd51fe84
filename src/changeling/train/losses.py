"""Training losses: SSIM-based DSSIM plus L1/MSE, computed inside the face mask with extra weight on the eyes
and mouth, and a loss on the predicted mask. Everything is computed in float32 with autocast off (SSIM's
variances cancel badly in bfloat16).

Room for a patch discriminator later: :func:`face_loss` returns one scalar per side; a GAN term would be added
beside it in the trainer with its own weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from changeling.models.decoder import DecoderOutput

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. Pixel weights are ``max(mask, background) + eyes * eye_region +
    mouth * mouth_region``; DSSIM and L1/MSE are weighted means under them per face, averaged over the faces,
    so they stay in [0, 1]."""

    ssim: float = 1.0
    l1: float = 1.0
    mse: float = 0.0
    mask: float = 1.0
    eyes: float = 3.0
    mouth: float = 2.0
    background: float = 0.0


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(size,) normalised Gaussian taps."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-(x * x) / (2 * sigma * sigma))
    return w / w.sum()


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter per channel: (B, C, H, W) -> (B, C, H - k + 1, W - k + 1)."""
    c, k = x.shape[1], taps.numel()
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
             data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM of images (B, C, H, W) with a Gaussian window, population (co)variances, 'valid' region:
    (B, C, H - window + 1, W - window + 1). Its mean equals scikit-image's ``structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    with torch.autocast(x.device.type, enabled=False):
        x, y = x.float(), y.float()
        c = x.shape[1]
        taps = gaussian_window(window, sigma, device=x.device)
        stats = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], 1), taps)  # (B, 5C, h, w)
        mx, my, xx, yy, xy = stats.split(c, 1)
        vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def masked_dssim(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, *, window: int = SSIM_WINDOW,
                 sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(1 - SSIM) / 2 under per-pixel ``weights`` (B, 1, H, W) >= 0, a weighted mean per face, then the mean over
    faces (so gradient accumulation over micro-batches equals the full batch); each SSIM window counts with the
    Gaussian-weighted mean of the weights it covers. Scalar in [0, 1]."""
    s = ssim_map(x, y, window=window, sigma=sigma)  # (B, C, h, w)
    with torch.autocast(x.device.type, enabled=False):
        wv = _blur_valid(weights.float(), gaussian_window(window, sigma, device=x.device))  # (B, 1, h, w)
        per_face = ((1 - s) / 2 * wv).sum((1, 2, 3)) / (wv.sum((1, 2, 3)) * s.shape[1]).clamp_min(1e-8)
        return per_face.mean()


def pixel_weights(masks: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """(B, 3, H, W) masks [face mask, eyes, mouth] in [0, 1] -> (B, 1, H, W) loss weights."""
    face, eyes, mouth = masks[:, 0:1], masks[:, 1:2], masks[:, 2:3]
    return face.clamp_min(w.background) + w.eyes * eyes + w.mouth * mouth


def face_loss(pred: DecoderOutput, target: torch.Tensor, masks: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """Loss of one side's predictions against its target faces (B, 3, R, R) and masks (B, 3, R, R).

    DSSIM, L1 and MSE under the pixel weights, plus the MSE of the predicted mask against the face mask.
    Scalar float32.
    """
    with torch.autocast(target.device.type, enabled=False):
        face, mask = pred.face.float(), pred.mask.float()
        pw = pixel_weights(masks, w)  # (B, 1, R, R)
        wsum = (pw.sum((1, 2, 3)) * face.shape[1]).clamp_min(1e-8)  # (B,): every face counts the same
        total = face.new_zeros(())
        if w.ssim:
            total = total + w.ssim * masked_dssim(face, target, pw)
        diff = face - target
        if w.l1:
            total = total + w.l1 * ((diff.abs() * pw).sum((1, 2, 3)) / wsum).mean()
        if w.mse:
            total = total + w.mse * ((diff * diff * pw).sum((1, 2, 3)) / wsum).mean()
        if w.mask:
            total = total + w.mask * F.mse_loss(mask, masks[:, 0:1])
        return total
