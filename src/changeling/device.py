"""Choosing the compute device."""

from __future__ import annotations

import torch

from changeling.errors import UserError


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; asking for CUDA without one is a user error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no CUDA device is available; use --device cpu")
    return torch.device(choice)
