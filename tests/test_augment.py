"""Augmentation: colour conversion against scikit-image, geometry against OpenCV, and the invariants that
matter for training (masks move with the face, the warp touches only the input, determinism)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import color

from changeling.train.augment import AugmentSettings, augment, lab_to_rgb, rgb_to_lab, similarity_thetas

NONE = AugmentSettings(rotation=0, scale=0, shift=0, flip=False, warp=0, color=0)


def _faces(n: int = 4, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.avg_pool2d(torch.rand(n, 3, size, size, generator=g), 3, 1, 1)
    masks = torch.zeros(n, 3, size, size)
    masks[:, 0, size // 4:3 * size // 4, size // 5:size // 2] = 1  # off-centre so flips and shifts show
    masks[:, 1, size // 3:size // 3 + 3, 4:9] = 1
    masks[:, 2, 3 * size // 4:3 * size // 4 + 2, size // 2:] = 1
    return (img * 255).round().to(torch.uint8), (masks * 255).to(torch.uint8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_lab_matches_scikit_image_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((2, 3, 8, 8)).astype(np.float64)
    ours = rgb_to_lab(torch.from_numpy(rgb)).numpy()
    ref = color.rgb2lab(rgb.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert np.abs(ours - ref).max() < 1e-3
    back = lab_to_rgb(torch.from_numpy(ours)).numpy()
    assert np.abs(back - rgb).max() < 1e-6
    ref_back = color.lab2rgb((ref + np.array([5.0, -3.0, 4.0]).reshape(1, 3, 1, 1)).transpose(0, 2, 3, 1))
    ours_back = lab_to_rgb(torch.from_numpy(ref + np.array([5.0, -3.0, 4.0]).reshape(1, 3, 1, 1))).numpy()
    assert np.abs(ours_back - ref_back.transpose(0, 3, 1, 2)).max() < 1e-4


def test_identity_settings_reproduce_the_faces() -> None:
    img, masks = _faces()
    out = augment(img, masks, NONE, _gen(0))
    assert torch.allclose(out.target, img.float() / 255, atol=1e-5)
    assert torch.allclose(out.input, img.float() / 255, atol=1e-5)
    assert torch.allclose(out.masks, masks.float() / 255, atol=1e-5)


def test_masks_and_regions_move_with_the_face() -> None:
    img, masks = _faces(n=6)
    s = AugmentSettings(rotation=25, scale=0.1, shift=0.1, flip=True, warp=0, color=0)
    out = augment(masks.clone(), masks, s, _gen(3))  # faces whose pixels are the masks themselves
    assert torch.equal(out.target, out.masks)
    assert not torch.allclose(out.masks, masks.float() / 255, atol=0.05)  # they did move


def test_flip_mirrors_face_and_masks_together() -> None:
    img, masks = _faces(n=16)
    out = augment(img, masks, AugmentSettings(rotation=0, scale=0, shift=0, flip=True, warp=0, color=0), _gen(1))
    flipped = 0
    for i in range(16):
        x, m = img[i].float() / 255, masks[i].float() / 255
        if torch.allclose(out.target[i], x.flip(-1), atol=1e-5):
            assert torch.allclose(out.masks[i], m.flip(-1), atol=1e-5)
            flipped += 1
        else:
            assert torch.allclose(out.target[i], x, atol=1e-5) and torch.allclose(out.masks[i], m, atol=1e-5)
    assert 0 < flipped < 16


def test_similarity_transform_matches_opencv() -> None:
    size = 48
    img, masks = _faces(n=3, size=size)
    s = AugmentSettings(rotation=20, scale=0.1, shift=0.08, flip=True, warp=0, color=0)
    out = augment(img, masks, s, _gen(7))
    thetas = similarity_thetas(3, s, _gen(7), torch.device("cpu")).double().numpy()
    # pixel (x, y) <-> normalised u = (2x + 1) / size - 1 (align_corners=False)
    to_norm = np.array([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1], [0, 0, 1]])
    for i in range(3):
        theta = np.vstack([thetas[i], [0, 0, 1]])
        m = (np.linalg.inv(to_norm) @ theta @ to_norm)[:2]  # output pixel -> input pixel
        src = img[i].permute(1, 2, 0).numpy().astype(np.float32) / 255
        ref = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        ours = out.target[i].permute(1, 2, 0).numpy()
        inner = slice(8, size - 8)  # border handling differs slightly (reflection conventions)
        assert np.abs(ours[inner, inner] - ref[inner, inner]).max() < 2e-3


def test_warp_changes_only_the_input_and_smoothly() -> None:
    img, masks = _faces(n=4, size=48)
    plain = augment(img, masks, AugmentSettings(warp=0, color=0), _gen(5))
    warped = augment(img, masks, AugmentSettings(warp=1, color=0), _gen(5))
    assert torch.equal(plain.target, warped.target) and torch.equal(plain.masks, warped.masks)
    diff = (warped.input - warped.target).abs()
    assert 0.002 < float(diff.mean()) < 0.1


def test_colour_jitter_is_the_same_for_input_and_target() -> None:
    img, masks = _faces(n=4)
    out = augment(img, masks, AugmentSettings(rotation=0, scale=0, shift=0, flip=False, warp=0, color=0.2), _gen(2))
    assert torch.equal(out.input, out.target)
    assert not torch.allclose(out.target, img.float() / 255, atol=0.02)
    assert torch.allclose(out.masks, masks.float() / 255, atol=1e-5)  # colour never touches the masks


def test_same_generator_state_same_batch() -> None:
    img, masks = _faces(n=4)
    a = augment(img, masks, AugmentSettings(), _gen(11))
    b = augment(img, masks, AugmentSettings(), _gen(11))
    c = augment(img, masks, AugmentSettings(), _gen(12))
    assert torch.equal(a.input, b.input) and torch.equal(a.target, b.target) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.input, c.input)
    assert a.input.min() >= 0 and a.input.max() <= 1


def test_rejects_wrong_inputs() -> None:
    img, masks = _faces()
    with pytest.raises(ValueError, match="uint8 faces"):
        augment(img.float(), masks, NONE, _gen(0))
    with pytest.raises(ValueError, match="masks"):
        augment(img, masks[:, :1], NONE, _gen(0))


def test_compiled_augmentation_equals_the_eager_one() -> None:
    """The trainer compiles the pure part of the augmentation on GPUs; the same draws must give the same batch."""
    from changeling.train.augment import apply_draws, draw

    img, masks = _faces(n=3, size=32, seed=4)
    d = draw(3, AugmentSettings(color=0.2), _gen(9), img.device)
    eager = apply_draws(img, masks, d.thetas, d.coarse, d.color)
    compiled = torch.compile(apply_draws)(img, masks, d.thetas, d.coarse, d.color)
    for e, c in zip(eager, compiled, strict=True):
        assert e.shape == c.shape and float((e - c).abs().max()) < 1e-4
    assert float((eager[0] - eager[1]).abs().max()) > 0.05  # the input warp did something to compare
    plain = apply_draws(img, masks, d.thetas, d.coarse, None)
    assert float((eager[1] - plain[1]).abs().max()) > 0.02  # and so did the colour jitter
