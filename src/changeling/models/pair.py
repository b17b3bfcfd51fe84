"""The pair model: one shared encoder, and per identity either its own decoder (``df``) or its own 'inter'
layers in front of a shared decoder (``liae``). ``model(x, side)`` renders the faces ``x`` as person ``side``:
with ``side`` equal to the faces' own person it reconstructs them, with the other it swaps them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from changeling.models.blocks import DenseBottleneck, leaky
from changeling.models.decoder import Decoder, DecoderOutput
from changeling.models.encoder import Encoder
from changeling.types import Side

Arch = Literal["df", "liae"]

__all__ = ["Arch", "DecoderOutput", "ModelConfig", "PairModel"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a pair model; saved in every checkpoint.

    The encoder halves the face ``len(enc_channels)`` times; the bottleneck maps the flat features through
    ``dense`` units to a (inter_channels, seed, seed) grid and upscales it once to ``inter_up_channels``; the
    decoder upscales ``len(dec_channels)`` times, so ``resolution = seed * 2^(1 + len(dec_channels))``.
    """

    arch: Arch
    resolution: int
    enc_channels: tuple[int, ...]
    dense: int
    inter_channels: int
    inter_up_channels: int
    dec_channels: tuple[int, ...]
    enc_kernel: int = 5
    res_blocks: bool = False
    head_kernel: int = 5
    slope: float = 0.1
    light_stages: int = 0  # the decoder's last stages that upscale with depthwise-separable convolutions

    @property
    def seed(self) -> int:
        """Side of the bottleneck grid."""
        return self.resolution // 2 ** (1 + len(self.dec_channels))

    def check(self) -> None:
        """Raise ``ValueError`` saying what is inconsistent."""
        if self.arch not in get_args(Arch):
            raise ValueError(f"arch must be one of {get_args(Arch)}, got {self.arch!r}")
        if not self.enc_channels or not self.dec_channels:
            raise ValueError("enc_channels and dec_channels must not be empty")
        for name in ("resolution", "dense", "inter_channels", "inter_up_channels", "enc_kernel", "head_kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if min(self.enc_channels) < 1 or min(self.dec_channels) < 1:
            raise ValueError("channel counts must be positive")
        if not 0 <= self.light_stages <= len(self.dec_channels):
            raise ValueError(f"light_stages must be 0..{len(self.dec_channels)} (the decoder's stages), "
                             f"got {self.light_stages}")
        if self.resolution % 2 ** len(self.enc_channels):
            raise ValueError(f"resolution {self.resolution} is not divisible by 2^{len(self.enc_channels)} "
                             "(the encoder's downscales)")
        if self.seed < 1 or self.seed * 2 ** (1 + len(self.dec_channels)) != self.resolution:
            raise ValueError(f"resolution {self.resolution} is not seed * 2^{1 + len(self.dec_channels)} "
                             "(the decoder's upscales)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["enc_channels"] = list(self.enc_channels)
        d["dec_channels"] = list(self.dec_channels)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> ModelConfig:
        """Parse untrusted JSON; ``ValueError`` says what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("model config must be an object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(map(str, unknown)))}")
        missing = [n for n, f in fields.items() if n not in d and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)}")
        kw: dict[str, Any] = {}
        for name, value in d.items():
            if name in ("enc_channels", "dec_channels"):
                if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value):
                    raise ValueError(f"{name} must be a list of integers")
                kw[name] = tuple(value)
            elif name == "arch":
                kw[name] = value
            elif name == "res_blocks":
                if not isinstance(value, bool):
                    raise ValueError("res_blocks must be true or false")
                kw[name] = value
            elif name == "slope":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError("slope must be a number")
                kw[name] = float(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} must be an integer")
                kw[name] = value
        cfg = cls(**kw)
        cfg.check()
        return cfg


class PairModel(nn.Module):
    """Shared encoder and per-identity parts. See the module docstring for the meaning of ``side``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        act = leaky(config.slope)
        self.encoder = Encoder(config.enc_channels, config.enc_kernel, act)
        feats = self.encoder.features(config.resolution)

        def inter() -> DenseBottleneck:
            return DenseBottleneck(feats, config.dense, config.inter_channels, config.seed,
                                   config.inter_up_channels, act)

        def decoder(ci: int) -> Decoder:
            return Decoder(ci, config.dec_channels, config.res_blocks, config.head_kernel, act,
                           light_stages=config.light_stages)

        if config.arch == "df":
            self.inter = inter()
            self.decoder_a = decoder(config.inter_up_channels)
            self.decoder_b = decoder(config.inter_up_channels)
        else:
            self.inter_ab = inter()  # shared by both identities
            self.inter_a = inter()  # A's own half of the code
            self.decoder = decoder(2 * config.inter_up_channels)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def shared_prefixes(self) -> tuple[str, ...]:
        """Parameter name prefixes of the identity-agnostic parts (what ``--init-from`` copies)."""
        return ("encoder.", "inter.") if self.config.arch == "df" else ("encoder.", "inter_ab.")

    def forward(self, x: torch.Tensor, side: Side) -> DecoderOutput:
        """Render faces ``x`` (B, 3, R, R) in [0, 1] as person ``side``."""
        feats = self.encoder(x)
        if self.config.arch == "df":
            z = self.inter(feats)
            return (self.decoder_a if side == "A" else self.decoder_b)(z)
        ab = self.inter_ab(feats)
        first = self.inter_a(feats) if side == "A" else ab
        return self.decoder(torch.cat([first, ab], 1))

    def forward_pair(self, a: torch.Tensor, b: torch.Tensor) -> tuple[DecoderOutput, DecoderOutput]:
        """Reconstruct A's faces as A and B's faces as B, with one encoder pass over both batches."""
        n = a.shape[0]
        feats = self.encoder(torch.cat([a, b], 0))
        if self.config.arch == "df":
            z = self.inter(feats)
            return self.decoder_a(z[:n]), self.decoder_b(z[n:])
        ab = self.inter_ab(feats)
        first = torch.cat([self.inter_a(feats[:n]), ab[n:]], 0)
        out = self.decoder(torch.cat([first, ab], 1))
        return (DecoderOutput(out.face[:n], out.mask[:n]), DecoderOutput(out.face[n:], out.mask[n:]))

    @torch.inference_mode()
    def swap(self, faces: torch.Tensor, to: Side) -> DecoderOutput:
        """Render ``faces`` (N, 3, R, R) float in [0, 1] as person ``to``; float32 face and mask in [0, 1].

        The input is moved to the model's device; the outputs stay there.
        """
        r = self.config.resolution
        if faces.ndim != 4 or faces.shape[1:] != (3, r, r) or not faces.is_floating_point():
            raise ValueError(f"expected an (N, 3, {r}, {r}) float tensor, got {tuple(faces.shape)} {faces.dtype}")
        if to not in ("A", "B"):
            raise ValueError(f"to must be 'A' or 'B', got {to!r}")
        p = next(self.parameters())
        out = self(faces.to(p.device, p.dtype), to)
        return DecoderOutput(out.face.float(), out.mask.float())
