"""The shared encoder: stride-2 convolutions from the face to a flat feature vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from changeling.models.blocks import Act, Downscale, Norm


class Encoder(nn.Module):
    """(B, 3, R, R) faces in [0, 1] -> (B, C * (R / 2^n)^2) features, for ``n = len(channels)`` downscales."""

    def __init__(self, channels: Sequence[int], kernel: int = 5, act: Act | None = None,
                 norm: Norm | None = None, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ci = in_channels
        for co in channels:
            layers.append(Downscale(ci, co, kernel, act, norm))
            ci = co
        self.body = nn.Sequential(*layers)
        self.out_channels = ci
        self.factor = 2 ** len(channels)

    def features(self, resolution: int) -> int:
        """Length of the flat feature vector for faces of side ``resolution``."""
        low = resolution // self.factor
        return self.out_channels * low * low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)  # (B, C * h * w)
