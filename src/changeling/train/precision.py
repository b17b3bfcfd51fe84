"""The device a run trains on and the arithmetic it uses there: bf16 autocast where it pays, the CUDA switches,
and the peak memory a run reports."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from changeling.device import resolve_device
from changeling.models.pair import PairModel
from changeling.train.distributed import DistContext

log = logging.getLogger(__name__)


def train_device(choice: str, dist_ctx: DistContext | None) -> torch.device:
    """The device of this process (its own GPU under several processes). On CUDA it sets the process-wide
    switches training wants: fixed input shapes (cuDNN benchmark), TF32 where float32 remains."""
    device = resolve_device(choice)
    if dist_ctx is not None:
        device = dist_ctx.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast is much faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast: always when asked; on ``auto`` where the device computes bf16 natively."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def cpu_bf16_pays(model: PairModel, batch: int, channels_last: bool = True, margin: float = 1.1) -> bool:
    """Whether bf16 autocast makes a forward and backward pass of ``model`` (``batch`` faces per side) at least
    ``margin`` times faster than float32 on this CPU, timed on random faces (best of two after a warm-up each).

    Measured rather than read off the CPU flags: a CPU that announces bf16 instructions may still run these
    convolutions slower in bf16 (5x slower on a 2-core Xeon VM with AVX512-BF16 and no AMX; see
    bench/RESULTS.md). The model's gradients are cleared afterwards; no RNG state is touched."""
    r = model.config.resolution
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2 * batch, 3, r, r, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def best_seconds(amp: bool) -> float:
        best = math.inf
        for i in range(3):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out_a, out_b = model.forward_pair(x[:batch], x[batch:])
            (out_a.face.float().mean() + out_b.face.float().mean()).backward()
            if i:
                best = min(best, time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        return best

    fp32 = best_seconds(False)
    bf16 = best_seconds(True)
    log.info("bf16 autocast on this CPU: %.0f ms per step against %.0f ms in float32", 1000 * bf16, 1000 * fp32)
    return bf16 * margin < fp32


def cpu_amp(saved: object, model: PairModel, batch: int, channels_last: bool) -> bool:
    """bf16 autocast on a CPU that announces bf16 (precision ``auto``): a resumed run keeps its first run's
    measured choice (``saved``, from the checkpoint), else it is measured (:func:`cpu_bf16_pays`)."""
    return saved if isinstance(saved, bool) else cpu_bf16_pays(model, batch, channels_last)


def memory_bytes(device: torch.device) -> int:
    """Peak memory so far: allocated on a CUDA device, resident set size on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return 0
