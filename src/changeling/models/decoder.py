"""Decoders: from the bottleneck grid back to a face and its mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from changeling.models.blocks import Act, Norm, ResBlock, SeparableUpscale, Upscale, leaky


@dataclass
class DecoderOutput:
    """A decoded face and its mask: face (B, 3, R, R) and mask (B, 1, R, R), both in [0, 1]."""

    face: torch.Tensor
    mask: torch.Tensor


class Decoder(nn.Module):
    """(B, ci, s, s) -> :class:`DecoderOutput` at side ``s * 2^len(channels)``.

    Each stage is an :class:`Upscale` (the last ``light_stages`` a :class:`SeparableUpscale`), optionally
    followed by a :class:`ResBlock`; one convolution head gives the three face channels and the mask channel
    (sigmoids).
    """

    def __init__(self, in_channels: int, channels: Sequence[int], res_blocks: bool = False, head_kernel: int = 5,
                 act: Act | None = None, res_act: Act | None = None, norm: Norm | None = None,
                 light_stages: int = 0) -> None:
        super().__init__()
        if not 0 <= light_stages <= len(channels):
            raise ValueError(f"light_stages must be 0..{len(channels)}, got {light_stages}")
        layers: list[nn.Module] = []
        ci = in_channels
        first_light = len(channels) - light_stages
        for k, co in enumerate(channels):
            layers.append(SeparableUpscale(ci, co, act, norm) if k >= first_light else Upscale(ci, co, act, norm))
            if res_blocks:
                layers.append(ResBlock(co, res_act if res_act is not None else leaky(0.2), norm))
            ci = co
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(ci, 4, head_kernel, 1, head_kernel // 2)

    def forward(self, x: torch.Tensor) -> DecoderOutput:
        h = torch.sigmoid(self.head(self.body(x)))  # (B, 4, R, R)
        return DecoderOutput(face=h[:, :3], mask=h[:, 3:])
