"""A bare reference training step for benchmarks: the same autoencoder shapes as the presets, built here from
plain layers (independently of ``blocks``/``encoder``/``decoder``), trained on random inputs with an L1 loss
and AdamW and nothing else. The trainer's full step (augmentation, masked losses, logging) is reported as a
ratio to this step of the same shape on the same device in the same process.

The named shapes follow ``shared/tools/ae_roofline.py``: ``original64`` (4 stride-2 5x5 convolutions 128..1024,
dense 1024, a 4x4x1024 grid upscaled once, decoder 256/128/64), ``df128`` and ``df256`` (DF-like, with residual
blocks in the decoder). ``liae128`` is not among them: it is the liae preset's shape built the same plain way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from changeling.models.pair import ModelConfig


@dataclass(frozen=True)
class ReferenceShape:
    """Layer widths of a reference autoencoder (one shared encoder, two decoders predicting face and mask)."""

    res: int
    enc: tuple[int, ...]
    dense: int
    bottleneck: int  # channels of the (res/16)^2 grid after the dense layers
    up: int  # channels after the bottleneck's upscale
    dec: tuple[int, ...]
    res_blocks: bool
    enc_kernel: int = 5
    head_kernel: int = 5
    arch: str = "df"  # "df": one bottleneck, a decoder per side; "liae": see below


REFERENCE_SHAPES: dict[str, ReferenceShape] = {
    "original64": ReferenceShape(64, (128, 256, 512, 1024), 1024, 1024, 1024, (256, 128, 64), False),
    "df128": ReferenceShape(128, (64, 128, 256, 512), 256, 512, 512, (512, 256, 128), True),
    "df256": ReferenceShape(256, (96, 192, 384, 768), 256, 768, 768, (768, 384, 192), True),
    # not in ae_roofline: the liae preset's own shape built the same plain way (a shared and an A-only
    # bottleneck after one encoder, their grids side by side into one shared decoder)
    "liae128": ReferenceShape(128, (64, 128, 256, 512), 256, 256, 256, (512, 256, 128), True, arch="liae"),
}


def reference_shape_for(config: ModelConfig) -> ReferenceShape | None:
    """The reference shape of a config (``None`` for an architecture or block the reference does not build)."""
    if config.arch not in ("df", "liae") or config.light_stages:
        return None
    return ReferenceShape(config.resolution, config.enc_channels, config.dense, config.inter_channels,
                          config.inter_up_channels, config.dec_channels, config.res_blocks, config.enc_kernel,
                          config.head_kernel, arch=config.arch)


class _Up(nn.Module):
    def __init__(self, ci: int, co: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ci, co * 4, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(F.leaky_relu(self.conv(x), 0.1), 2)


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, 1, 1)
        self.b = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.b(F.leaky_relu(self.a(x), 0.2)), 0.2)


class _Convs(nn.Module):
    def __init__(self, s: ReferenceShape) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ci = 3
        for co in s.enc:
            layers += [nn.Conv2d(ci, co, s.enc_kernel, 2, s.enc_kernel // 2), nn.LeakyReLU(0.1)]
            ci = co
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x).flatten(1)


class _Bottleneck(nn.Module):
    def __init__(self, s: ReferenceShape) -> None:
        super().__init__()
        low = s.res // 2 ** len(s.enc)
        self.seed = s.res // 16
        self.bottleneck = s.bottleneck
        self.fc1 = nn.Linear(s.enc[-1] * low * low, s.dense)
        self.fc2 = nn.Linear(s.dense, self.seed * self.seed * s.bottleneck)
        self.up = _Up(s.bottleneck, s.up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.fc1(x))
        return self.up(x.view(-1, self.bottleneck, self.seed, self.seed))  # (B, up, res/8, res/8)


class _Decoder(nn.Module):
    def __init__(self, s: ReferenceShape, ci: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for co in s.dec:
            layers.append(_Up(ci, co))
            if s.res_blocks:
                layers.append(_Res(co))
            ci = co
        self.body = nn.Sequential(*layers)
        self.rgb = nn.Conv2d(ci, 3, s.head_kernel, 1, s.head_kernel // 2)
        self.mask = nn.Conv2d(ci, 1, s.head_kernel, 1, s.head_kernel // 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body(x)
        return torch.sigmoid(self.rgb(x)), torch.sigmoid(self.mask(x))


def build_reference(shape: ReferenceShape) -> nn.ModuleDict:
    """The reference autoencoder. DF: ``enc`` (convolutions and bottleneck), ``a`` and ``b`` (decoders). LIAE:
    ``convs``, ``inter_ab`` (shared bottleneck), ``inter_a`` (A's), ``dec`` (one decoder over both grids)."""
    if shape.res % 16 or shape.res // 16 * 2 ** (1 + len(shape.dec)) != shape.res:
        raise ValueError(f"resolution {shape.res} does not fit a reference shape with {len(shape.dec)} upscales")
    if shape.arch == "liae":
        return nn.ModuleDict({"convs": _Convs(shape), "inter_ab": _Bottleneck(shape), "inter_a": _Bottleneck(shape),
                              "dec": _Decoder(shape, 2 * shape.up)})
    return nn.ModuleDict({"enc": nn.Sequential(_Convs(shape), _Bottleneck(shape)), "a": _Decoder(shape, shape.up),
                          "b": _Decoder(shape, shape.up)})


def _losses(model: nn.ModuleDict, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    if "convs" in model:  # LIAE: A through its own and the shared code, B through the shared code twice
        ha, hb = model["convs"](xa), model["convs"](xb)
        za = torch.cat([model["inter_a"](ha), model["inter_ab"](ha)], 1)
        ab = model["inter_ab"](hb)
        fa, _ = model["dec"](za)
        fb, _ = model["dec"](torch.cat([ab, ab], 1))
    else:
        fa, _ = model["a"](model["enc"](xa))
        fb, _ = model["b"](model["enc"](xb))
    return F.l1_loss(fa.float(), xa) + F.l1_loss(fb.float(), xb)


def reference_flops(shape: ReferenceShape, device: str | torch.device = "cpu") -> float:
    """FLOPs of forward and backward per example (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_reference(shape).to(device)
    x = torch.rand(2, 3, shape.res, shape.res, device=device)
    with FlopCounterMode(display=False) as fc:
        _losses(model, x[:1], x[1:]).backward()
    return fc.get_total_flops() / 2


def reference_step(model: nn.ModuleDict, optimizer: torch.optim.Optimizer,
                   amp: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One bare step: forward both sides under autocast, L1 loss, backward, optimizer step."""

    def step(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(xa.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = _losses(model, xa, xb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_reference(shape: ReferenceShape, batch: int, device: str | torch.device, *, amp: bool,
                    channels_last: bool, compile: bool, steps: int = 20, warmup: int = 3,
                    seconds: float | None = None) -> dict[str, float | int | bool]:
    """Time the bare step at ``batch`` faces per side: examples/s (one example = one face), ms per step, GFLOP
    per example, achieved TFLOP/s and peak memory. ``seconds`` bounds the timed part instead of ``steps``."""
    device = torch.device(device)
    torch.manual_seed(0)
    gflop = reference_flops(shape, "cpu") / 1e9
    model = build_reference(shape).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(model.parameters(), 5e-5, fused=device.type == "cuda")
    step = reference_step(model, optimizer, amp)
    if compile:
        step = torch.compile(step)  # type: ignore[assignment]
    xs = [torch.rand(batch, 3, shape.res, shape.res, device=device).contiguous(memory_format=fmt) for _ in range(4)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup):
        step(xs[i % 4], xs[(i + 1) % 4])
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    while (n < steps) if seconds is None else (n < 2 or time.perf_counter() - t0 < seconds):
        step(xs[n % 4], xs[(n + 1) % 4])
        n += 1
        if seconds is not None and n % 5 == 0:
            _sync(device)
    _sync(device)
    dt = (time.perf_counter() - t0) / n
    eps = 2 * batch / dt
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"batch": batch, "amp": amp, "channels_last": channels_last, "compile": compile, "steps": n,
            "ms_per_step": dt * 1e3, "examples_per_s": eps, "gflop_per_example": gflop,
            "tflops": eps * gflop / 1e3, "peak_mem_gib": mem}


def describe(shape: ReferenceShape) -> dict[str, object]:
    return asdict(shape)
