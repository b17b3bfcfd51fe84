"""Building what a trainer trains: the pair model at its seed, its optimizer, the detail stage and its trainer,
a new model's encoder taken from another model, the faces placed on the device, and the settings the losses
and augmentation read."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from changeling.config.train import TrainSettings
from changeling.errors import UserError
from changeling.models import checkpoint as mck
from changeling.models.detail import DetailConfig, DetailStage
from changeling.models.pair import ModelConfig, PairModel
from changeling.models.registry import create_model
from changeling.train import checkpoint as ck
from changeling.train.augment import AugmentSettings
from changeling.train.data import FaceSet
from changeling.train.detail import DetailTrainer
from changeling.train.distributed import DistContext
from changeling.train.losses import LossWeights

log = logging.getLogger(__name__)

DetailFaces = tuple[DetailConfig, FaceSet, FaceSet]  # the stage to train, and the faces at its output size


def loss_weights(s: TrainSettings) -> LossWeights:
    return LossWeights(ssim=s.ssim_weight, l1=s.l1_weight, mse=s.mse_weight, mask=s.mask_weight, eyes=s.eyes_weight,
                       mouth=s.mouth_weight, background=s.background_weight)


def augment_settings(s: TrainSettings) -> AugmentSettings:
    return AugmentSettings(rotation=s.rotation, scale=s.scale, shift=s.shift, flip=s.flip, warp=s.warp,
                           color=s.color_jitter)


def new_model(preset: str, config: ModelConfig, seed: int, device: torch.device, channels_last: bool) -> PairModel:
    """The pair model with its initial weights drawn at ``seed`` (the caller's RNG left alone), on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(preset, config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW without weight decay; the fused kernel where the device has one."""
    params = list(model.parameters())
    try:
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)


def place_faces(faces: FaceSet, device: torch.device) -> FaceSet:
    """Faces in VRAM when they take under a quarter of the free memory, else they stay in RAM."""
    if device.type != "cuda":
        return faces
    free, _ = torch.cuda.mem_get_info(device)
    return faces.to(device) if faces.nbytes < free // 4 else faces


def init_from_encoder(model: PairModel, source: Path, preset: str, config: ModelConfig) -> None:
    """Copy the shared encoder (and shared inter layers) of the model in ``source`` into the new ``model``
    (``preset``, ``config``); :class:`UserError` when they do not fit."""
    mck.refuse_pickle(source)
    folder = source / "model" if (source / "model").is_dir() and not (source / "checkpoints").is_dir() else source
    other = mck.read_checkpoint(mck.find_model_checkpoint(folder), with_optimizer=False)
    prefixes = model.shared_prefixes()
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    theirs = {k: v for k, v in other.weights.items() if k.startswith(prefixes)}
    if set(own) != set(theirs) or any(tuple(own[k].shape) != tuple(theirs[k].shape) for k in own):
        raise UserError(f"its encoder does not fit this model (it is a {other.info.preset!r} model at "
                        f"{other.info.config.resolution} px, this is {preset!r} at "
                        f"{config.resolution} px with other dims)", other.info.path)
    model.load_state_dict(theirs, strict=False)
    log.info("started from the encoder of %s (step %d)", other.info.path, other.info.step)


def make_detail_trainer(detail: DetailFaces, loaded: mck.LoadedCheckpoint | None, seed: int, device: torch.device,
                        channels_last: bool, dist: DistContext | None) -> DetailTrainer:
    """The detail stage (its initial weights drawn at ``seed``, or restored from ``loaded`` when it holds the
    stage) and its trainer."""
    config, faces_a, faces_b = detail
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stage = DetailStage(config).to(device)
    if channels_last:
        stage = stage.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    wrap = None
    if dist is not None:
        ids = [device.index] if device.type == "cuda" else None
        # the critics sit out the steps without the adversarial term
        wrap = lambda m: torch.nn.parallel.DistributedDataParallel(  # noqa: E731
            m, device_ids=ids, find_unused_parameters=True)
    trainer = DetailTrainer(stage, {"A": faces_a.images, "B": faces_b.images},
                            {"A": faces_a.masks[:, :1].clone(), "B": faces_b.masks[:, :1].clone()},
                            device, wrap=wrap)
    if loaded is not None and loaded.detail is not None:
        path = loaded.info.path
        mck.load_weights(stage, loaded.detail.weights, path / mck.DETAIL)
        ck.load_optimizer_tensors(trainer.optimizer, stage, loaded.detail.optimizer, path / mck.DETAIL_OPTIMIZER)
    else:
        log.info("a %dx detail stage starts (%d -> %d px)", config.scale, config.resolution,
                 config.output_resolution)
    return trainer
