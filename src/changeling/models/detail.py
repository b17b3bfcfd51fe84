"""The detail stage: a small super-resolution network per identity that enlarges the pair model's output by
``scale`` (2x or 4x) with that person's own skin, hair and glasses. It learns from the pair model's own
reconstructions (B->B at the model's resolution) against B's real aligned faces at the larger size, and the
same for A, so no outside weights are involved; generic face enhancers change identity and need downloads.

``DetailNet``: (B, 3, R, R) in [0, 1] -> (B, 3, sR, sR) in [0, 1], a residual over the bilinear enlargement, so
an untrained stage already gives the plain enlargement. ``DetailedModel`` puts a pair model and its stage behind
the pair model's ``swap`` interface (what convert, the previews and evaluate call).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changeling.models.blocks import ResBlock, Upscale, leaky
from changeling.models.decoder import DecoderOutput
from changeling.types import Side

SCALES = (2, 4)


@dataclass(frozen=True)
class DetailConfig:
    """Everything needed to rebuild a detail stage; saved in every checkpoint that has one."""

    resolution: int  # input side: the pair model's resolution
    scale: int  # output side = resolution * scale
    channels: int = 32  # width of the residual body (at the input resolution)
    blocks: int = 4  # residual blocks at the input resolution

    @property
    def output_resolution(self) -> int:
        return self.resolution * self.scale

    def check(self) -> None:
        """Raise ``ValueError`` saying what is inconsistent."""
        if self.scale not in SCALES:
            raise ValueError(f"detail scale must be one of {SCALES}, got {self.scale}")
        if not 8 <= self.resolution <= 1024:
            raise ValueError(f"detail resolution must be 8 to 1024 pixels, got {self.resolution}")
        if not 4 <= self.channels <= 512 or self.channels % 4:
            raise ValueError(f"detail channels must be a multiple of 4 from 4 to 512, got {self.channels}")
        if not 0 <= self.blocks <= 32:
            raise ValueError(f"detail blocks must be 0 to 32, got {self.blocks}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> DetailConfig:
        """Parse untrusted JSON; ``ValueError`` says what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("detail config must be an object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown detail config keys: {', '.join(sorted(map(str, unknown)))}")
        if not {"resolution", "scale"} <= set(d):
            raise ValueError("detail config lacks resolution or scale")
        for k, v in d.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"detail config {k} must be an integer")
        cfg = cls(**d)
        cfg.check()
        return cfg


class DetailNet(nn.Module):
    """One identity's detail network. Input (B, 3, R, R) float in [0, 1] -> (B, 3, sR, sR) in [0, 1].

    A 3x3 head, ``blocks`` residual blocks at the input resolution (where the work is cheap), then one
    pixel-shuffle upscale per doubling, halving the width each time, and a 3x3 tail whose output is added to
    the bilinear enlargement of the input."""

    def __init__(self, config: DetailConfig) -> None:
        super().__init__()
        config.check()
        self.scale = config.scale
        act = leaky(0.2)
        c = config.channels
        self.head = nn.Conv2d(3, c, 3, 1, 1)
        self.body = nn.Sequential(*[ResBlock(c, act) for _ in range(config.blocks)])
        ups: list[nn.Module] = []
        for _ in range(config.scale.bit_length() - 1):
            ups.append(Upscale(c, c // 2, act))
            c //= 2
        self.ups = nn.Sequential(*ups)
        self.tail = nn.Conv2d(c, 3, 3, 1, 1)
        nn.init.zeros_(self.tail.weight)  # untrained: exactly the bilinear enlargement
        nn.init.zeros_(self.tail.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        h = self.head(x)
        h = h + self.body(h)
        return (base + self.tail(self.ups(h))).clamp(0, 1)


class Critic(nn.Module):
    """A patch critic for adversarial training of one identity's detail network: (B, 3, P, P) faces in [0, 1]
    -> (B, 1, P/8, P/8) scores, high for the person's real faces. Used only while training."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        act = leaky(0.2)
        layers: list[nn.Module] = []
        ci = 3
        for co in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(ci, co, 4, 2, 1), act()]
            ci = co
        layers.append(nn.Conv2d(ci, 1, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)


class DetailStage(nn.Module):
    """The detail networks of both identities: ``stage(x, side)`` enlarges faces rendered as ``side``. It holds
    each identity's critic too (``critic_a``, ``critic_b``: training only, so that adversarial training resumes
    exactly; inference ignores them)."""

    def __init__(self, config: DetailConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.net_a = DetailNet(config)
        self.net_b = DetailNet(config)
        self.critic_a = Critic()
        self.critic_b = Critic()

    def nets(self) -> list[nn.Module]:
        return [self.net_a, self.net_b]

    def critics(self) -> list[nn.Module]:
        return [self.critic_a, self.critic_b]

    def forward(self, x: torch.Tensor, side: Side) -> torch.Tensor:
        return (self.net_a if side == "A" else self.net_b)(x)


class DetailedModel(nn.Module):
    """A pair model and its detail stage behind the pair model's ``swap``: faces (N, 3, R, R) in, faces and
    masks (N, *, sR, sR) out (the pair model's mask enlarged bilinearly). ``resolution`` is the input side,
    ``output_resolution`` the output's."""

    def __init__(self, pair: nn.Module, detail: DetailStage) -> None:
        super().__init__()
        r = int(pair.config.resolution)  # type: ignore[union-attr, arg-type]
        if detail.config.resolution != r:
            raise ValueError(f"the detail stage takes {detail.config.resolution} px faces but the pair model makes "
                             f"{r} px faces")
        self.pair = pair
        self.detail = detail
        self.config = pair.config  # the pair model's (preset shape, input resolution)

    @property
    def resolution(self) -> int:
        return int(self.detail.config.resolution)

    @property
    def output_resolution(self) -> int:
        return self.detail.config.output_resolution

    @torch.inference_mode()
    def swap(self, faces: torch.Tensor, to: Side) -> DecoderOutput:
        out = self.pair.swap(faces, to)  # type: ignore[operator]
        p = next(self.detail.parameters())
        face = self.detail(out.face.to(p.dtype), to).float()
        mask = F.interpolate(out.mask, size=face.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        return DecoderOutput(face, mask)


def output_resolution(model: nn.Module) -> int:
    """The side of the faces ``model.swap`` returns: its ``output_resolution`` if it has one, else its
    config's resolution."""
    out = getattr(model, "output_resolution", None)
    return int(out) if out is not None else int(model.config.resolution)  # type: ignore[union-attr, arg-type]
