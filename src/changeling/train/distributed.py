"""Multi-process training with PyTorch's DistributedDataParallel, launched by ``torchrun``.

One process per device (``torchrun --nproc-per-node N -m changeling train ...``, or ``changeling train --gpus
N`` on one machine). Every rank holds the whole face set, draws the same global batch of face indices
(``batch_size`` per rank times the world size) and takes its own slice of it, and augments its slice on its
own device with a rank-dependent seed. DDP averages the gradients, so a step equals a single-process step on
the global batch. Rank 0 alone writes checkpoints, previews and logs, in the single-process format, so a model
trained on 8 GPUs resumes on 1 and the reverse. gloo on the CPU, nccl on CUDA, chosen automatically.

Learning rate and a changed global batch: the step averages the loss over the global batch, so the gradient's
scale does not grow with the world size; keep ``lr`` when you keep the global batch (e.g. 1 GPU at batch 32 or
4 GPUs at batch 8), and when you grow the global batch k times, raise ``lr`` by up to sqrt(k) (Adam-family
optimisers follow the square-root rule better than the linear one) and watch the first hundred steps.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from changeling.errors import UserError

log = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(seconds=120)  # a rank that does not answer a collective for this long ends the job


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """This rank's device: ``cuda:local_rank`` when training on CUDA, the CPU otherwise."""
        if requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> DistContext | None:
    """Join the process group when started by torchrun with more than one process; ``None`` otherwise."""
    if not launched_by_torchrun():
        return None
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    ctx = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                      local_rank=int(os.environ.get("LOCAL_RANK", "0")), backend=dist.get_backend())
    if not ctx.is_main:
        logging.getLogger("changeling").setLevel(logging.WARNING)
    return ctx


def shutdown(ctx: DistContext | None) -> None:
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()


class PairForward(nn.Module):
    """The pair model's two-sided forward as one module, so DDP sees one forward per backward and every
    parameter (encoder, both decoders) used in it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[object, object]:
        return self.model.forward_pair(a, b)  # type: ignore[operator, no-any-return]


class DDPPair:
    """Gives the trainer's loss function a ``forward_pair`` that runs through DistributedDataParallel."""

    def __init__(self, model: nn.Module, ctx: DistContext, device: torch.device) -> None:
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(PairForward(model), device_ids=ids)

    def forward_pair(self, a: torch.Tensor, b: torch.Tensor) -> tuple[object, object]:
        return self.ddp(a, b)  # type: ignore[no-any-return]

    def no_sync(self):  # type: ignore[no-untyped-def]
        return self.ddp.no_sync()


def rank_slice(indices: torch.Tensor, ctx: DistContext | None) -> torch.Tensor:
    """This rank's share of a global batch of indices (equal contiguous slices)."""
    if ctx is None:
        return indices
    per = indices.shape[0] // ctx.world_size
    return indices[ctx.rank * per:(ctx.rank + 1) * per]


def mean_across(values: torch.Tensor, ctx: DistContext | None) -> torch.Tensor:
    """The mean of a tensor over all ranks (the logged losses)."""
    if ctx is None:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def agree_max(value: int, ctx: DistContext | None, device: torch.device) -> int:
    """The largest of one integer over all ranks (stop requests, so every rank stops at the same step)."""
    if ctx is None:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def agree_min(value: int, ctx: DistContext | None, device: torch.device) -> int:
    if ctx is None:
        return value
    return -agree_max(-value, ctx, device)


def barrier(ctx: DistContext | None) -> None:
    if ctx is not None:
        dist.barrier()


def launch(gpus: int, argv: Sequence[str]) -> int:
    """Re-run this ``changeling train`` command under torchrun with ``gpus`` processes on this machine."""
    if gpus < 2:
        raise UserError("--gpus needs 2 or more; for one device just leave it out")
    if "--device" not in argv and "cpu" not in argv and torch.cuda.is_available() \
            and torch.cuda.device_count() < gpus:
        raise UserError(f"--gpus {gpus} asked for, but this machine has {torch.cuda.device_count()} CUDA devices")
    args = list(argv)
    cleaned = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--gpus":
            skip = True
            continue
        if a.startswith("--gpus="):
            continue
        cleaned.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
           "-m", "changeling", *cleaned]
    log.info("launching: %s", " ".join(cmd))
    if shutil.which(sys.executable) is None:  # pragma: no cover - the interpreter always exists
        raise UserError("cannot find the Python interpreter to launch torchrun")
    return subprocess.call(cmd)
