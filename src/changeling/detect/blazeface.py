"""BlazeFace face detectors (MediaPipe ``face_detection_short_range`` and ``face_detection_full_range``).

Both take (B, 3, S, S) RGB in [-1, 1] (S = 128 short, 192 full) and return raw SSD outputs for every anchor:
regressors (B, A, 16) — box centre offset and size, then six keypoints, in input pixels relative to the anchor —
and score logits (B, A). Anchors are listed in :mod:`changeling.detect.anchors`.

Submodules are registered in the order the weight converter walks the TFLite graph (see
``tools/convert_mediapipe.py``), so do not reorder them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from changeling.detect.layers import Conv, add_shortcut, depth_to_space, max_pool2, nhwc_flatten


class DetectorOutput(NamedTuple):
    regressors: torch.Tensor  # (B, A, 16) float32
    logits: torch.Tensor  # (B, A) float32


class _BlazeBlock(nn.Module):
    """Depthwise 3×3 then pointwise conv, added to the (max-pooled, zero-padded) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride, self.cout = stride, cout
        self.dw = Conv(cin, cin, 3, stride, depthwise=True)
        self.pw = Conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = max_pool2(x) if self.stride == 2 else x
        return F.relu(add_shortcut(self.pw(self.dw(x)), shortcut))


class BlazeFaceShort(nn.Module):
    """Short-range detector: 128×128 input, 896 anchors (16×16×2 then 8×8×6)."""

    input_size = 128

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv(3, 24, 5, 2)
        channels16 = [(24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2), (48, 56, 1),
                      (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1)]
        self.stage16 = nn.Sequential(*[_BlazeBlock(a, b, s) for a, b, s in channels16])
        self.stage8 = nn.Sequential(_BlazeBlock(88, 96, 2), *[_BlazeBlock(96, 96) for _ in range(4)])
        self.regressor8 = Conv(96, 6 * 16, 1)  # on the 8×8 map
        self.regressor16 = Conv(88, 2 * 16, 1)  # on the 16×16 map
        self.classifier8 = Conv(96, 6, 1)
        self.classifier16 = Conv(88, 2, 1)

    def forward(self, x: torch.Tensor) -> DetectorOutput:
        f16 = self.stage16(F.relu(self.stem(x)))  # (B, 88, 16, 16)
        f8 = self.stage8(f16)  # (B, 96, 8, 8)
        regressors = torch.cat([nhwc_flatten(self.regressor16(f16), 16), nhwc_flatten(self.regressor8(f8), 16)], 1)
        logits = torch.cat([nhwc_flatten(self.classifier16(f16), 1), nhwc_flatten(self.classifier8(f8), 1)], 1)
        return DetectorOutput(regressors, logits[..., 0])


class _ResBlock(nn.Module):
    """Full-range residual block: (dw 3×3, 1×1 down + ReLU, dw 3×3, 1×1 up) + input, ReLU."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.dw1 = Conv(channels, channels, 3, padding=1, depthwise=True)
        self.pw1 = Conv(channels, mid, 1)
        self.dw2 = Conv(mid, mid, 3, padding=1, depthwise=True)
        self.pw2 = Conv(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.pw1(self.dw1(x)))
        return F.relu(add_shortcut(self.pw2(self.dw2(y)), x))


class _Down(nn.Module):
    """Full-range stride-2 block without shortcut: dw 3×3 /2, 1×1 + ReLU, dw 3×3, 1×1 + ReLU."""

    def __init__(self, cin: int, cout: int, mid: int) -> None:
        super().__init__()
        self.dw1 = Conv(cin, cin, 3, 2, padding=1, depthwise=True)
        self.pw1 = Conv(cin, mid, 1)
        self.dw2 = Conv(mid, mid, 3, padding=1, depthwise=True)
        self.pw2 = Conv(mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pw2(self.dw2(F.relu(self.pw1(self.dw1(x))))))


class _TopDown(nn.Module):
    """One FPN step: reduce the coarse map, upsample ×2 (bilinear, half-pixel), add the lateral, refine."""

    def __init__(self, coarse: int, lateral: int, channels: int, blocks: int) -> None:
        super().__init__()
        self.reduce = Conv(coarse, channels, 1)
        self.lateral = Conv(lateral, channels, 1)
        self.blocks = nn.Sequential(*[_ResBlock(channels, channels // 2) for _ in range(blocks)])

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(F.relu(self.reduce(coarse)), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.blocks(up + F.relu(self.lateral(skip)))


class _Head(nn.Module):
    """1×1 conv, dw 3×3 /2, depth-to-space ×2: one value set per 48×48 anchor."""

    def __init__(self, cin: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.pw = Conv(cin, 4 * values, 1)
        self.dw = Conv(4 * values, 4 * values, 3, 2, padding=1, depthwise=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nhwc_flatten(depth_to_space(self.dw(self.pw(x)), 2), self.values)


class BlazeFaceFull(nn.Module):
    """Full-range detector: 192×192 input, 2304 anchors (48×48×1), a small FPN over four scales."""

    input_size = 192

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv(3, 32, 3, 2, padding=1)
        self.stage96 = nn.Sequential(_ResBlock(32, 8), _ResBlock(32, 8))
        self.stage48 = nn.Sequential(_Down(32, 64, 16), _ResBlock(64, 16), _ResBlock(64, 16))
        self.stage24 = nn.Sequential(_Down(64, 128, 32), _ResBlock(128, 32), _ResBlock(128, 32))
        self.stage12 = nn.Sequential(_Down(128, 192, 48), _ResBlock(192, 48), _ResBlock(192, 48))
        self.stage6 = nn.Sequential(_Down(192, 384, 96), *[_ResBlock(384, 96) for _ in range(3)])
        self.up12 = _TopDown(384, 192, 96, 2)
        self.up24 = _TopDown(96, 128, 64, 2)
        self.up48 = _TopDown(64, 64, 48, 1)
        self.regressor = _Head(48, 16)
        self.classifier = _Head(48, 1)

    def forward(self, x: torch.Tensor) -> DetectorOutput:
        c48 = self.stage48(self.stage96(F.relu(self.stem(x))))  # (B, 64, 48, 48)
        c24 = self.stage24(c48)  # (B, 128, 24, 24)
        c12 = self.stage12(c24)  # (B, 192, 12, 12)
        c6 = self.stage6(c12)  # (B, 384, 6, 6)
        p48 = self.up48(self.up24(self.up12(c6, c12), c24), c48)  # (B, 48, 48, 48)
        return DetectorOutput(self.regressor(p48), self.classifier(p48)[..., 0])
