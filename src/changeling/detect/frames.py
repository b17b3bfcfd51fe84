"""Input checks and device handling shared by the detector, landmarker and tracker."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import numpy as np
import torch
from numpy.typing import NDArray

from changeling.detect.roi import FrameStack
from changeling.device import resolve_device


def as_device(device: str | torch.device) -> torch.device:
    """A torch device; ``"auto"`` picks CUDA when present (see :func:`changeling.device.resolve_device`)."""
    return device if isinstance(device, torch.device) else resolve_device(device)


def check_frames(frames: Sequence[NDArray[np.uint8]]) -> None:
    """Every frame must be an (H, W, 3) uint8 RGB array with H, W >= 1."""
    for i, f in enumerate(frames):
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 \
                or f.shape[0] < 1 or f.shape[1] < 1:
            got = f"{f.dtype} array of shape {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
            raise ValueError(f"frame {i}: expected an (H, W, 3) uint8 RGB array, got {got}")


def stack_frames(frames: Sequence[NDArray[np.uint8]] | FrameStack, device: torch.device) -> FrameStack:
    """Reuse a prepared :class:`FrameStack` or build one after checking the frames."""
    if isinstance(frames, FrameStack):
        return frames
    check_frames(frames)
    return FrameStack.build(frames, device)


@contextmanager
def _cudnn_without_tf32() -> Iterator[None]:
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def exact_fp32(device: torch.device) -> AbstractContextManager[None]:
    """On CUDA, run convolutions in full fp32 rather than TF32 for the duration (the ports promise 1e-3 relative
    agreement with the originals; TF32 alone costs about that). Elsewhere a no-op."""
    return _cudnn_without_tf32() if device.type == "cuda" else nullcontext()


def chunks(count: int, size: int) -> list[slice]:
    """Slices covering range(count) in runs of at most ``size``."""
    return [slice(i, min(i + size, count)) for i in range(0, count, max(size, 1))]
