"""Benchmark of the full training step: the real :class:`~changeling.train.loop.Trainer` loop (batch gather,
augmentation on the device, forward, masked losses, backward, clip, fused AdamW, loss reads and metrics lines)
on synthetic faces held in memory, against the bare reference step of the same shape in the same process."""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from changeling.config.core import apply
from changeling.config.train import TrainSettings
from changeling.models.reference import bench_reference, reference_shape_for
from changeling.train.data import FaceSet
from changeling.train.distributed import shutdown
from changeling.train.loop import Trainer, TrainPaths, memory_bytes, model_config_for

log = logging.getLogger(__name__)

FACES_PER_SIDE = 64


def synthetic_faces(n: int, resolution: int, seed: int) -> FaceSet:
    """``n`` smooth random faces with an elliptical face mask and eye/mouth regions (benchmark input only)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    images = (torch.nn.functional.interpolate(low, size=(resolution, resolution), mode="bicubic",
                                              align_corners=False).clamp(0, 1) * 255).to(torch.uint8)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, resolution), torch.linspace(-1, 1, resolution), indexing="ij")
    face = ((xx / 0.7) ** 2 + ((yy - 0.05) / 0.85) ** 2 <= 1).float()
    eyes = (((xx.abs() - 0.3) / 0.15) ** 2 + ((yy + 0.15) / 0.07) ** 2 <= 1).float()
    mouth = ((xx / 0.25) ** 2 + ((yy - 0.45) / 0.08) ** 2 <= 1).float()
    masks = (torch.stack([face, eyes, mouth]) * 255).to(torch.uint8).expand(n, 3, resolution, resolution).clone()
    return FaceSet(images, masks, [f"synthetic_{i}" for i in range(n)], "whole")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_process_group(device: torch.device) -> Any:
    """A process group of this process alone (world size 1), for measuring DDP's own cost."""
    import socket

    import torch.distributed as dist

    from changeling.train.distributed import DistContext

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    return DistContext(rank=0, world_size=1, local_rank=device.index or 0, backend=backend)


def _count_flops(trainer: Trainer) -> float:
    """FLOPs of forward, losses and backward per example (one face), counted on the eager loss function."""
    from torch.utils.flop_counter import FlopCounterMode

    from changeling.train.loop import forward_backward, make_loss_fn

    fn = make_loss_fn(trainer.model, trainer.weights, trainer.amp, trainer.channels_last)
    a, b = trainer._batch_of(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), 0)
    with FlopCounterMode(display=False) as fc:
        forward_backward(fn, a, b, 1.0)
    trainer.optimizer.zero_grad(set_to_none=True)
    return float(fc.get_total_flops()) / 2


def bench_train(preset: str, device: str | torch.device, *, seconds: float | None = None, steps: int | None = None,
                repeats: int = 1, resolution: int = 0, e_dims: int = 0, ae_dims: int = 0, d_dims: int = 0,
                batch_size: int = 0, precision: str = "auto", compile: str = "auto", warmup: int = 5,
                reference: bool = True, ddp: bool = False) -> dict[str, Any]:
    """Measure the full training step of ``preset`` on ``device``: ``repeats`` timed windows of ``seconds``
    (default 10) or ``steps`` each after ``warmup`` steps (compilation happens there); the median is reported.

    Returns ``examples_per_s`` (one example = one face of A or B), ``ms_per_step``, ``gflop_per_example``,
    ``tflops`` (achieved), ``peak_memory_mb``, and the same for the bare reference step of the same shape with
    the same batch, precision, memory format and compile setting; ``ratio_to_reference`` = ours / reference
    (``None`` where no reference shape exists, i.e. ``liae``).

    ``ddp``: train through DistributedDataParallel in a one-process group (nccl on CUDA, gloo on the CPU), the
    code path of ``--gpus N``, to measure what DDP itself costs on one device.
    """
    device = torch.device(device)
    if seconds is None and steps is None:
        seconds = 10.0
    repeats = max(1, repeats)
    s = apply(TrainSettings(), {"preset": preset, "resolution": resolution, "e_dims": e_dims, "ae_dims": ae_dims,
                                "d_dims": d_dims, "batch_size": batch_size, "save_every": 10**9, "preview_every": 0,
                                "device": device.type, "precision": precision, "compile": compile}, "bench_train")
    config = model_config_for(s)
    faces_a = synthetic_faces(FACES_PER_SIDE, config.resolution, 1)
    faces_b = synthetic_faces(FACES_PER_SIDE, config.resolution, 2)
    rates: list[float] = []
    ctx = _one_process_group(device) if ddp else None
    try:
        with tempfile.TemporaryDirectory(prefix="changeling-bench-") as tmp:
            root = Path(tmp)
            trainer = Trainer(faces_a, faces_b, TrainPaths(root / "model", root / "previews", root / "logs"), s,
                              progress=False, dist_ctx=ctx)
            gflop = _count_flops(trainer) / 1e9
            t_warm = time.perf_counter()
            trainer.train_steps(until=trainer.step + warmup)
            _sync(device)
            t_warm = time.perf_counter() - t_warm
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(repeats):
                start_step = trainer.step
                t0 = time.perf_counter()
                if steps is not None:
                    trainer.train_steps(until=start_step + steps)
                else:
                    while trainer.step - start_step < 2 or time.perf_counter() - t0 < (seconds or 0):
                        trainer.train_steps(until=trainer.step + 10)
                _sync(device)
                rates.append(2 * trainer.batch_size * (trainer.step - start_step) / (time.perf_counter() - t0))
            trainer.metrics.close()
    finally:
        shutdown(ctx)
    eps = statistics.median(rates)
    out: dict[str, Any] = {
        "preset": preset, "device": str(device), "resolution": config.resolution, "batch": trainer.batch_size,
        "micro_batch": trainer.micro_batch, "ddp": ddp, "amp_bf16": trainer.amp, "compile": trainer.compile,
        "runs": [round(r, 1) for r in rates], "warmup_s": round(t_warm, 2), "ms_per_step": 2e3 * trainer.batch_size / eps,
        "examples_per_s": eps, "gflop_per_example": gflop, "tflops": eps * gflop / 1e3,
        "peak_memory_mb": memory_bytes(device) / 2**20,
        "reference_examples_per_s": None, "reference_tflops": None, "ratio_to_reference": None,
    }
    del trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    shape = reference_shape_for(config)
    if reference and shape is not None:
        ref_rates = []
        for _ in range(repeats):
            ref = bench_reference(shape, out["batch"], device, amp=out["amp_bf16"], channels_last=True,
                                  compile=out["compile"], steps=steps or 20, warmup=warmup, seconds=seconds)
            ref_rates.append(ref["examples_per_s"])
        ref_eps = statistics.median(ref_rates)
        out.update(reference_examples_per_s=ref_eps, reference_tflops=ref_eps * ref["gflop_per_example"] / 1e3,
                   reference_gflop_per_example=ref["gflop_per_example"],
                   reference_peak_memory_mb=ref["peak_mem_gib"] * 1024, ratio_to_reference=eps / ref_eps)
    out.update(value=eps, unit="examples/s", detail_keys=(
        "batch", "amp_bf16", "compile", "gflop_per_example", "tflops", "peak_memory_mb", "reference_examples_per_s",
        "ratio_to_reference"))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m changeling.bench.train_bench PRESET[:RES[:E:AE:D]][@BATCH] ... --device cuda``: one JSON line
    per case (for runs outside ``changeling bench``)."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("cases", nargs="+", help="e.g. tiny, df:256:96:256:96@64, liae:128")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=10.0, help="length of one timed window")
    p.add_argument("--repeats", type=int, default=1, help="timed windows; the median is reported")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens there)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--no-reference", action="store_true")
    args = p.parse_args(argv)
    for case in args.cases:
        spec, _, batch = case.partition("@")
        name, *nums = spec.split(":")
        dims: dict[str, Any] = dict(zip(("resolution", "e_dims", "ae_dims", "d_dims"), (int(v) for v in nums), strict=False))
        try:
            r = bench_train(name, args.device, seconds=args.seconds, repeats=args.repeats, batch_size=int(batch or 0),
                            warmup=args.warmup, **dims,
                            precision=args.precision, compile=args.compile, reference=not args.no_reference)
            r.pop("detail_keys", None)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next case
            r = {"case": case, "error": repr(exc)[:500]}
        print(json.dumps({"case": case, **r}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
