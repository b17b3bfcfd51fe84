"""The occlusion segmenter: a small U-Net that says, for each pixel of an aligned face crop, whether it is face
that nothing covers.

Its first convolution has stride 2, so a ``resolution`` px input is worked on at half size from the start, with
one convolution per stage there and two below; the last skip is merged by a 1x1 convolution and the logits come
out at half size, then are upsampled. At the default width 16, about 48 MFLOP per 64 px face (190 at 128 px) and no normalisation layers:
cheap enough to train in minutes on a laptop CPU and to run on every face of a 720p convert.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changeling.models.blocks import ConvAct, leaky


@dataclass(frozen=True)
class SegmenterConfig:
    """The shape of a segmenter, saved in its file so it can be rebuilt from the file alone."""

    resolution: int = 64  # input side in pixels, a multiple of 16
    width: int = 16  # channels of the first stage; the stages below have 2x, 4x and 6x (default: MasksSettings)

    def __post_init__(self) -> None:
        if not (32 <= self.resolution <= 512 and self.resolution % 16 == 0):
            raise ValueError(f"resolution must be a multiple of 16 from 32 to 512, got {self.resolution}")
        if not 4 <= self.width <= 64:
            raise ValueError(f"width must be from 4 to 64, got {self.width}")

    def channels(self) -> tuple[int, int, int, int]:
        w = self.width
        return w, 2 * w, 4 * w, 6 * w

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> SegmenterConfig:
        """Validate untrusted JSON; ``ValueError`` says what is wrong."""
        if not isinstance(d, dict) or set(d) != {"resolution", "width"}:
            raise ValueError("segmenter config must have exactly 'resolution' and 'width'")
        for k, v in d.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"segmenter config {k!r} must be an integer")
        return cls(resolution=d["resolution"], width=d["width"])


def _stage(ci: int, co: int, convs: int) -> nn.Sequential:
    """A stride-2 convolution and ``convs - 1`` more at the new size."""
    return nn.Sequential(ConvAct(ci, co, 3, 2, leaky()), *[ConvAct(co, co, 3, 1, leaky()) for _ in range(convs - 1)])


class OcclusionNet(nn.Module):
    """(B, 3, S, S) float RGB in [0, 1] -> (B, 1, S, S) logits of 'visible face'."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        c0, c1, c2, c3 = config.channels()
        self.down = nn.ModuleList([_stage(3, c0, 1), _stage(c0, c1, 2), _stage(c1, c2, 2), _stage(c2, c3, 2)])
        self.up = nn.ModuleList([ConvAct(c3 + c2, c2, 3, 1, leaky()), ConvAct(c2 + c1, c1, 3, 1, leaky()),
                                 ConvAct(c1 + c0, c0, 1, 1, leaky())])
        self.head = nn.Conv2d(c0, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        skips = []
        h = x * 2 - 1
        for stage in self.down:
            h = stage(h)
            skips.append(h)
        h = skips.pop()  # (B, c3, S/16, S/16)
        for conv in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = conv(torch.cat([h, skip], dim=1))
        logits = self.head(h)  # (B, 1, S/2, S/2)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
