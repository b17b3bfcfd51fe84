"""Losses against independent references: SSIM against scikit-image, the weighted terms against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from changeling.models.decoder import DecoderOutput
from changeling.train.losses import LossWeights, face_loss, masked_dssim, pixel_weights, ssim_map


def _images(seed: int, n: int = 2, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size, size, generator=g)
    smooth = torch.nn.functional.avg_pool2d(base, 5, 1, 2)  # structured content, not only noise
    noisy = (smooth + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    return smooth, noisy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_scikit_image(seed: int) -> None:
    x, y = _images(seed)
    ours = ssim_map(x, y).mean(dim=(1, 2, 3))
    for i in range(x.shape[0]):
        ref = structural_similarity(x[i].double().numpy(), y[i].double().numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=0)
        assert abs(float(ours[i]) - ref) < 1e-5


def test_dssim_with_full_weights_is_half_of_one_minus_ssim() -> None:
    x, y = _images(3, n=1)
    ref = structural_similarity(x[0].numpy(), y[0].numpy(), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0, channel_axis=0)
    d = masked_dssim(x, y, torch.ones(1, 1, 40, 40))
    assert abs(float(d) - (1 - ref) / 2) < 1e-5
    assert float(masked_dssim(x, x.clone(), torch.ones(1, 1, 40, 40))) == pytest.approx(0.0, abs=1e-6)


def test_dssim_ignores_pixels_outside_the_mask() -> None:
    x, y = _images(4, n=1, size=48)
    w = torch.zeros(1, 1, 48, 48)
    w[..., 4:20, 4:20] = 1
    base = float(masked_dssim(x, y, w))
    far = y.clone()
    far[..., 36:, 36:] = torch.rand(1, 3, 12, 12)  # more than a window radius away from the mask
    assert float(masked_dssim(x, far, w)) == pytest.approx(base, abs=1e-7)
    near = y.clone()
    near[..., 8:16, 8:16] = 1 - near[..., 8:16, 8:16]
    assert float(masked_dssim(x, near, w)) > base + 1e-3


def test_pixel_weights_closed_form() -> None:
    masks = torch.zeros(1, 3, 4, 4)
    masks[0, 0, :2] = 1  # face: top half
    masks[0, 1, 0, 0] = 1  # an eye pixel
    masks[0, 2, 1, 1] = 1  # a mouth pixel
    w = pixel_weights(masks, LossWeights(eyes=3, mouth=2, background=0.1))
    expected = torch.full((4, 4), 0.1)
    expected[:2] = 1
    expected[0, 0] += 3
    expected[1, 1] += 2
    assert torch.allclose(w[0, 0], expected)


def test_l1_and_mask_terms_closed_form() -> None:
    target = torch.zeros(2, 3, 16, 16)
    masks = torch.zeros(2, 3, 16, 16)
    masks[:, 0, 4:12, 4:12] = 1
    pred = DecoderOutput(face=torch.full((2, 3, 16, 16), 0.25), mask=torch.full((2, 1, 16, 16), 0.5))
    l1 = face_loss(pred, target, masks, LossWeights(ssim=0, l1=1, mask=0))
    assert float(l1) == pytest.approx(0.25)
    mse = face_loss(pred, target, masks, LossWeights(ssim=0, l1=0, mse=1, mask=0))
    assert float(mse) == pytest.approx(0.0625)
    mask_only = face_loss(pred, target, masks, LossWeights(ssim=0, l1=0, mask=2))
    frac = 64 / 256  # inside the face mask the error is 0.5, outside 0.5 too: MSE 0.25 everywhere
    assert float(mask_only) == pytest.approx(2 * 0.25 * (frac + (1 - frac)))


def test_eye_priority_weighs_errors_in_the_eyes_more() -> None:
    target = torch.zeros(1, 3, 16, 16)
    masks = torch.zeros(1, 3, 16, 16)
    masks[:, 0] = 1
    masks[:, 1, 2:4, 2:4] = 1  # eyes
    face = torch.zeros(1, 3, 16, 16)
    face[..., 2:4, 2:4] = 1  # the error is only in the eyes
    pred = DecoderOutput(face=face, mask=torch.ones(1, 1, 16, 16))
    plain = float(face_loss(pred, target, masks, LossWeights(ssim=0, mask=0, eyes=0)))
    prio = float(face_loss(pred, target, masks, LossWeights(ssim=0, mask=0, eyes=3)))
    assert plain == pytest.approx(4 / 256)
    assert prio == pytest.approx(4 * 4 / (256 + 3 * 4))  # weighted mean: eye pixels count 4 times


def test_loss_is_float32_and_the_same_under_bf16_autocast() -> None:
    x, y = _images(5, n=2, size=32)
    masks = torch.ones(2, 3, 32, 32)
    pred = DecoderOutput(face=x, mask=torch.rand(2, 1, 32, 32))
    ref = face_loss(pred, y, masks, LossWeights())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = face_loss(pred, y, masks, LossWeights())
    assert amp.dtype == torch.float32 and torch.equal(amp, ref)


def test_ssim_checks_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        ssim_map(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))
    assert np.isfinite(float(ssim_map(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)).mean()))
