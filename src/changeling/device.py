"""Choosing the compute device."""

from __future__ import annotations

from collections.abc import Callable

import torch

from changeling.errors import UserError
from changeling.vocab import DEVICES, check_registry


def _cuda(choice: str = "cuda") -> torch.device:
    if not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no CUDA device is available; use --device cpu")
    return torch.device(choice)


DEVICE_RESOLVERS: dict[str, Callable[[], torch.device]] = {
    "auto": lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"),
    "cpu": lambda: torch.device("cpu"),
    "cuda": _cuda,
}
check_registry("device", DEVICE_RESOLVERS, DEVICES)


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; asking for CUDA without one is a user error. Besides
    the choices of :data:`changeling.vocab.DEVICES`, a torch device name such as ``cuda:1`` is taken as it is."""
    resolve = DEVICE_RESOLVERS.get(choice)
    if resolve is not None:
        return resolve()
    if choice.startswith("cuda"):
        return _cuda(choice)
    return torch.device(choice)
