"""Building blocks shared by the ported MediaPipe networks.

TensorFlow's 'SAME' padding is asymmetric when the stride is 2 on an even input (the extra row and column go at
the bottom and right); :class:`Conv` reproduces it exactly. Every block takes and returns (B, C, H, W) float
tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Module):
    """A 2-D convolution with TensorFlow padding, optionally depthwise.

    ``padding`` is ``"same"`` (TensorFlow's rule), ``"valid"`` (none) or an int (that many zeros on every side,
    as an explicit PAD op before a 'valid' convolution does). Stride-1 'same' convolutions with odd kernels pad
    inside the convolution (symmetric); strided ones pad explicitly so the asymmetric layout is kept.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: str | int = "same",
                 depthwise: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.explicit_pad = padding == "same" and (stride > 1 or kernel % 2 == 0)
        if isinstance(padding, int):
            inner = padding
        else:
            inner = kernel // 2 if padding == "same" and not self.explicit_pad else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=inner, groups=cin if depthwise else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_pad:
            top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
            left, right = same_padding(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        return self.conv(x)


def add_shortcut(y: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``y`` plus ``shortcut`` zero-padded to y's channel count (TFLite's channel-padded residual), without
    building the padded tensor: adds in place into ``y``, which must be a fresh intermediate."""
    if shortcut.shape[1] == y.shape[1]:
        return y.add_(shortcut)
    y[:, : shortcut.shape[1]] += shortcut
    return y


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2×2 max pooling with stride 2, 'valid' padding. Large even maps use four strided views (much faster
    than the pooling kernel on channels-last CPU tensors); the result is identical."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2 or h * w < 32 * 32:
        return F.max_pool2d(x, 2, 2)
    return torch.maximum(torch.maximum(x[..., ::2, ::2], x[..., 1::2, ::2]),
                         torch.maximum(x[..., ::2, 1::2], x[..., 1::2, 1::2]))


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """TensorFlow's DEPTH_TO_SPACE (DCR order) on an NCHW tensor: (B, b*b*C, H, W) -> (B, C, b*H, b*W)."""
    b, c, h, w = x.shape
    c_out = c // (block * block)
    x = x.view(b, block, block, c_out, h, w).permute(0, 3, 4, 1, 5, 2)  # (B, C, H, bi, W, bj)
    return x.reshape(b, c_out, h * block, w * block)


def nhwc_flatten(x: torch.Tensor, values: int) -> torch.Tensor:
    """(B, A*values, H, W) -> (B, H*W*A, values), the order TFLite's RESHAPE of an NHWC tensor gives."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, values)
