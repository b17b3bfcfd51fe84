"""Small building blocks of the pair models. Each takes its activation (and norm) as an argument, so the
encoders and decoders are plain compositions of them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

Act = Callable[[], nn.Module]  # makes one activation module
Norm = Callable[[int], nn.Module]  # makes one normalisation module for C channels


def leaky(slope: float = 0.1) -> Act:
    """An activation factory: LeakyReLU with ``slope``."""
    return partial(nn.LeakyReLU, slope)


class ConvAct(nn.Module):
    """Convolution (``kernel``, ``stride``, same padding), optional norm, activation.

    (B, ci, H, W) -> (B, co, H / stride, W / stride).
    """

    def __init__(self, ci: int, co: int, kernel: int = 3, stride: int = 1, act: Act | None = None,
                 norm: Norm | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ci, co, kernel, stride, kernel // 2, bias=norm is None)
        self.norm = norm(co) if norm is not None else nn.Identity()
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Downscale(ConvAct):
    """Stride-2 convolution and activation: (B, ci, H, W) -> (B, co, H/2, W/2)."""

    def __init__(self, ci: int, co: int, kernel: int = 5, act: Act | None = None, norm: Norm | None = None) -> None:
        super().__init__(ci, co, kernel, 2, act if act is not None else leaky(), norm)


class Upscale(nn.Module):
    """3x3 convolution to 4 * co channels, activation, pixel shuffle: (B, ci, H, W) -> (B, co, 2H, 2W)."""

    def __init__(self, ci: int, co: int, act: Act | None = None, norm: Norm | None = None, kernel: int = 3) -> None:
        super().__init__()
        self.conv = ConvAct(ci, co * 4, kernel, 1, act if act is not None else leaky(), norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class SeparableUpscale(nn.Module):
    """The cheap :class:`Upscale`: a 3x3 depthwise convolution, a 1x1 convolution to 4 * co channels,
    activation, pixel shuffle; (B, ci, H, W) -> (B, co, 2H, 2W). About ``1 / (4 co) + 1 / 9`` of the plain
    upscale's multiply-adds, for the decoder's largest grids."""

    def __init__(self, ci: int, co: int, act: Act | None = None, norm: Norm | None = None) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(ci, ci, 3, 1, 1, groups=ci, bias=False)
        self.pointwise = ConvAct(ci, co * 4, 1, 1, act if act is not None else leaky(), norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.pointwise(self.depthwise(x)), 2)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip: act(x + conv(act(conv(x)))); (B, C, H, W) -> same."""

    def __init__(self, channels: int, act: Act | None = None, norm: Norm | None = None) -> None:
        super().__init__()
        act = act if act is not None else leaky(0.2)
        self.a = ConvAct(channels, channels, 3, 1, act, norm)
        self.b = ConvAct(channels, channels, 3, 1, None, norm)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.b(self.a(x)))


class DenseBottleneck(nn.Module):
    """Flattened features -> ``dense`` -> a (B, channels, seed, seed) grid -> one upscale to 2 * seed.

    The 'inter' part of the classic autoencoder: (B, features) -> (B, up_channels, 2 seed, 2 seed).
    """

    def __init__(self, features: int, dense: int, channels: int, seed: int, up_channels: int,
                 act: Act | None = None) -> None:
        super().__init__()
        self.channels, self.seed = channels, seed
        self.fc1 = nn.Linear(features, dense)
        self.fc2 = nn.Linear(dense, channels * seed * seed)
        self.up = Upscale(channels, up_channels, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.fc1(x)).view(-1, self.channels, self.seed, self.seed)  # (B, C, s, s)
        return self.up(x)
