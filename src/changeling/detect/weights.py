"""Loading the converted MediaPipe weights that ship inside the package (``changeling/assets/models``)."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Literal, TypeVar

import torch
from safetensors.torch import load as load_safetensors
from torch import nn

log = logging.getLogger(__name__)

ModelName = Literal["face_detection_short", "face_detection_full", "face_landmark", "iris_landmark"]
M = TypeVar("M", bound=nn.Module)


def read_weights(name: ModelName) -> dict[str, torch.Tensor]:
    """The state dict stored in ``assets/models/<name>.safetensors``, as float32 CPU tensors."""
    resource = resources.files("changeling").joinpath("assets", "models", f"{name}.safetensors")
    try:
        data = resource.read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"the packaged weights {name}.safetensors are missing; reinstall changeling "
                                f"or regenerate them with tools/convert_mediapipe.py") from e
    return {k: v.float() for k, v in load_safetensors(data).items()}


def load_network(model: M, name: ModelName, device: torch.device) -> M:
    """Fill ``model`` with the packaged weights (strictly), freeze it and move it to ``device`` for inference."""
    model.load_state_dict(read_weights(name), strict=True)
    model.eval().requires_grad_(False)
    log.debug("loaded %s onto %s", name, device)
    model.to(device)
    return set_memory_format(model, torch.channels_last)


def set_memory_format(model: M, memory_format: torch.memory_format) -> M:
    """Lay out the 4-D convolution kernels in ``memory_format`` (channels-last is what the CPU convolutions run
    fastest on; inputs should match)."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=memory_format)
    return model
