"""Augmentation as one batched pass on the training device.

A random similarity transform (rotation, scale, shift) and flip move the face, its mask and its eye/mouth
regions together; the model's input additionally gets a smooth random warp (so it learns to undo small shape
changes); lightness and colour are jittered in CIE LAB, the same for input and target. All randomness comes
from the ``torch.Generator`` passed in, so a batch is a pure function of (faces, settings, generator state).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# sRGB (D65) <-> CIE XYZ, and the D65 white point. Plain floats: the colour conversion is scalar arithmetic
# on the device, with no small constant tensors copied from the host (each such copy waits for the GPU).
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZN = tuple(map(tuple, (_RGB_TO_XYZ / _WHITE[:, None]).tolist()))  # to XYZ over the white point
_XYZN_TO_RGB = tuple(map(tuple, (np.linalg.inv(_RGB_TO_XYZ) * _WHITE[None, :]).tolist()))
_EPS = (6 / 29) ** 3
WARP_CELLS = 5  # control points per side of the random warp
WARP_STD = 0.04  # displacement std at strength 1, in units of half the face size


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random transforms (0 turns one off)."""

    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    scale: float = 0.05  # relative, uniform in [1 - scale, 1 + scale]
    shift: float = 0.05  # fraction of the face size, uniform per axis
    flip: bool = True  # horizontal flip with probability 1/2
    warp: float = 1.0  # strength of the smooth input warp
    color: float = 0.05  # LAB jitter: lightness gain and offsets of L, a, b (fraction of 100)


@dataclass
class Augmented:
    """One augmented batch, float32 on the training device.

    input: (B, 3, R, R) warped faces in [0, 1]; target: (B, 3, R, R) faces in [0, 1];
    masks: (B, 3, R, R) [face mask, eyes, mouth] in [0, 1], aligned with ``target``.
    """

    input: torch.Tensor
    target: torch.Tensor
    masks: torch.Tensor


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c > 0.04045, ((c.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, c / 12.92)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c > 0.0031308, 1.055 * c.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * c)


def _mix(c: torch.Tensor, m: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """(B, 3, H, W) channels mixed by the 3x3 matrix ``m`` (nested tuples of floats)."""
    x, y, z = c[:, 0:1], c[:, 1:2], c[:, 2:3]
    return torch.cat([m[i][0] * x + m[i][1] * y + m[i][2] * z for i in range(3)], 1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> CIE LAB (D65): L in [0, 100], a and b roughly in [-128, 127]."""
    xyz = _mix(_srgb_to_linear(rgb.clamp(0, 1)), _RGB_TO_XYZN)
    f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    return torch.cat([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) CIE LAB (D65) -> sRGB, clipped to [0, 1]."""
    fy = (lab[:, 0:1] + 16) / 116
    f = torch.cat([fy + lab[:, 1:2] / 500, fy, fy - lab[:, 2:3] / 200], 1)
    xyz = torch.where(f > 6 / 29, f.clamp_min(6 / 29) ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29))
    lin = _mix(xyz, _XYZN_TO_RGB)
    return _linear_to_srgb(lin.clamp(0, 1)).clamp(0, 1)


def _uniform(shape: tuple[int, ...], g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform in [-1, 1)."""
    return torch.rand(shape, generator=g, device=device) * 2 - 1


def similarity_thetas(n: int, s: AugmentSettings, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 2, 3) ``affine_grid`` matrices: output coordinates -> input coordinates (normalised [-1, 1])."""
    angle = _uniform((n,), g, device) * math.radians(s.rotation)
    scale = 1 + _uniform((n,), g, device) * s.scale
    shift = _uniform((n, 2), g, device) * (2 * s.shift)  # the face spans 2 normalised units
    flip = torch.where(torch.rand((n,), generator=g, device=device) < 0.5, -1.0, 1.0) if s.flip else \
        torch.ones(n, device=device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                        torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)


def coarse_offsets(n: int, strength: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 2, WARP_CELLS, WARP_CELLS) random displacements of the warp's control points."""
    return torch.randn((n, 2, WARP_CELLS, WARP_CELLS), generator=g, device=device) * (WARP_STD * strength)


def upsample_offsets(coarse: torch.Tensor, size: int) -> torch.Tensor:
    """The control points' displacements, bicubic-upsampled to a (n, size, size, 2) field."""
    fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return fine.permute(0, 2, 3, 1)


def shift_color(rgb: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Lightness gain ``r[:, 0]`` and offsets ``r[:, 1:4]`` of L, a, b (fractions of 100) applied in LAB;
    (B, 3, H, W) in [0, 1] -> same, ``r``: (B, 4, 1, 1)."""
    lab = rgb_to_lab(rgb)
    light = lab[:, 0:1] * (1 + r[:, 0:1]) + 100 * r[:, 1:2]
    return lab_to_rgb(torch.cat([light, lab[:, 1:2] + 100 * r[:, 2:3], lab[:, 2:3] + 100 * r[:, 3:4]], 1))


@dataclass(frozen=True)
class Draws:
    """The random numbers of one batch: similarity transforms, warp control points, colour shifts."""

    thetas: torch.Tensor  # (B, 2, 3)
    coarse: torch.Tensor | None  # (B, 2, WARP_CELLS, WARP_CELLS), None without the input warp
    color: torch.Tensor | None  # (B, 4, 1, 1), None without colour jitter


def draw(n: int, s: AugmentSettings, g: torch.Generator, device: torch.device) -> Draws:
    """Draw a batch's random numbers, always in the same order (so equal generator states give equal draws)."""
    thetas = similarity_thetas(n, s, g, device)
    coarse = coarse_offsets(n, s.warp, g, device) if s.warp > 0 else None
    color = _uniform((n, 4, 1, 1), g, device) * s.color if s.color > 0 else None
    return Draws(thetas, coarse, color)


def apply_draws(images: torch.Tensor, masks: torch.Tensor, thetas: torch.Tensor, coarse: torch.Tensor | None,
                color: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The augmentation itself, a pure function of its inputs (what the trainer compiles with the step):
    uint8 faces and masks (B, 3, R, R) -> float input, target and masks in [0, 1]."""
    n, _, size, _ = images.shape
    x = images.float() / 255
    m = masks.float() / 255
    if color is not None:
        x = shift_color(x, color)
    grid = F.affine_grid(thetas, [n, 6, size, size], align_corners=False)  # (B, R, R, 2)
    moved = F.grid_sample(torch.cat([x, m], 1), grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)
    if coarse is not None:
        inp = F.grid_sample(x, grid + upsample_offsets(coarse, size), mode="bilinear", padding_mode="reflection",
                            align_corners=False)
    else:
        inp = moved[:, :3]
    return inp, moved[:, :3], moved[:, 3:]


ApplyFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def augment(images: torch.Tensor, masks: torch.Tensor, s: AugmentSettings, g: torch.Generator,
            apply: ApplyFn = apply_draws) -> Augmented:
    """Augment faces (B, 3, R, R) uint8 and their masks (B, 3, R, R) uint8 (255 inside) in one batched pass.

    ``g`` must live on the images' device. The draws happen in a fixed order, so equal generator states give
    equal batches. ``apply``: :func:`apply_draws` or a compiled copy of it.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"expected (B, 3, R, R) uint8 faces, got {tuple(images.shape)} {images.dtype}")
    if masks.shape != images.shape or masks.dtype != torch.uint8:
        raise ValueError(f"expected (B, 3, R, R) uint8 masks like the faces, got {tuple(masks.shape)} {masks.dtype}")
    d = draw(images.shape[0], s, g, images.device)
    inp, target, moved_masks = apply(images, masks, d.thetas, d.coarse, d.color)
    return Augmented(input=inp, target=target, masks=moved_masks)
