"""Loading a trained model for inference (convert, evaluate, previews): the newest checkpoint of a model folder,
verified, in eval mode, behind its detail stage when it has one."""

from __future__ import annotations

from pathlib import Path

import torch

from changeling.models.checkpoint import (
    DETAIL,
    EMA,
    WEIGHTS,
    ModelInfo,
    find_model_checkpoint,
    load_weights,
    read_checkpoint,
)
from changeling.models.detail import DetailedModel, DetailStage
from changeling.models.registry import create_model


def load_for_inference(model_dir: Path, device: torch.device | str, *, detail: bool = True
                       ) -> tuple[torch.nn.Module, ModelInfo]:
    """The newest trained model of a model folder, in eval mode on ``device`` (EMA weights when stored), behind
    its detail stage when it has one and ``detail`` is on (a :class:`DetailedModel`, whose ``swap`` returns the
    larger faces); a model trained before detail stages existed loads as it is.

    Raises :class:`UserError` for a missing, damaged, tampered or pickle checkpoint.
    """
    ckpt = read_checkpoint(find_model_checkpoint(model_dir), with_optimizer=False)
    model: torch.nn.Module = create_model(ckpt.info.preset, ckpt.info.config)
    source = ckpt.info.path / (EMA if ckpt.ema is not None else WEIGHTS)
    load_weights(model, ckpt.ema if ckpt.ema is not None else ckpt.weights, source)
    if detail and ckpt.detail is not None and ckpt.info.detail is not None:
        stage = DetailStage(ckpt.info.detail)
        load_weights(stage, ckpt.detail.weights, ckpt.info.path / DETAIL)
        model = DetailedModel(model, stage)
    model.eval().requires_grad_(False)
    return model.to(device), ckpt.info


