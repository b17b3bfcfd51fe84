"""What machine a benchmark ran on: CPU model and cores, or GPU name; torch version."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' or 'Intel(R) Xeon(R) ... (2 cores)'."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()} ({len(os.sched_getaffinity(0))} cores)"
