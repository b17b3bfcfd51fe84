"""MediaPipe's face-landmark network (``face_landmark.tflite``): 468 3-D points from a 192×192 face crop.

Input (B, 3, 192, 192) RGB in [0, 1]. Output: points (B, 468, 3) — x, y in crop pixels (0..192), z relative
depth in the same unit — and the face-presence logit (B,). Submodules are registered in the order the weight
converter walks the TFLite graph, so do not reorder them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from changeling.detect.layers import Conv, add_shortcut, max_pool2

INPUT_SIZE = 192
NUM_POINTS = 468


class MeshOutput(NamedTuple):
    points: torch.Tensor  # (B, 468, 3) float32, crop pixels
    presence_logit: torch.Tensor  # (B,) float32


class _PBlock(nn.Module):
    """Depthwise 3×3 and pointwise conv added to the (max-pooled, zero-padded) input, then PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride, self.cout = stride, cout
        self.dw = Conv(cin, cin, 3, stride, depthwise=True)
        self.pw = Conv(cin, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = max_pool2(x) if self.stride == 2 else x
        return self.act(add_shortcut(self.pw(self.dw(x)), shortcut))


def _branch(out_values: int) -> nn.Sequential:
    """Tail shared in shape by both heads: 1×1 to 32 channels + PReLU, a block, then a 3×3 'valid' conv."""
    return nn.Sequential(Conv(128, 32, 1), nn.PReLU(32), _PBlock(32, 32), Conv(32, out_values, 3, padding="valid"))


class FaceMeshNet(nn.Module):
    """The 468-point face mesh regressor with its face-presence head."""

    input_size = INPUT_SIZE

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [Conv(3, 16, 3, 2), nn.PReLU(16), _PBlock(16, 16), _PBlock(16, 16)]
        for cin, cout in [(16, 32), (32, 64), (64, 128), (128, 128)]:
            layers += [_PBlock(cin, cout, 2), _PBlock(cout, cout), _PBlock(cout, cout)]
        self.backbone = nn.Sequential(*layers)  # -> (B, 128, 6, 6)
        self.mesh = nn.Sequential(_PBlock(128, 128, 2), _PBlock(128, 128), _PBlock(128, 128),
                                  _branch(NUM_POINTS * 3))
        self.presence = nn.Sequential(_PBlock(128, 128, 2), _branch(1))

    def forward(self, x: torch.Tensor) -> MeshOutput:
        features = self.backbone(x)
        points = self.mesh(features).reshape(x.shape[0], NUM_POINTS, 3)
        return MeshOutput(points, self.presence(features).reshape(x.shape[0]))
