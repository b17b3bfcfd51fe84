"""What a :class:`~changeling.train.loop.Trainer` holds, declared once for the modules that each handle one
concern of it (the step's parts in :mod:`~changeling.train.stepping`, checkpoints and rollback in
:mod:`~changeling.train.saving`, losses, metrics and previews in :mod:`~changeling.train.report`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from changeling.config.train import TrainSettings
from changeling.errors import ChangelingError
from changeling.models.pair import ModelConfig, PairModel
from changeling.project import Project
from changeling.train.augment import ApplyFn, AugmentSettings
from changeling.train.data import EpochSampler, FaceSet
from changeling.train.detail import DetailTrainer
from changeling.train.distributed import DDPPair, DistContext
from changeling.train.events import EventLog
from changeling.train.frame_preview import FramePreview
from changeling.train.logs import MetricsLog
from changeling.train.losses import LossWeights

LossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (a_in, b_in, a_tgt, b_tgt, a_masks, b_masks) -> losses


class NonFiniteLoss(ChangelingError):
    """The loss became NaN or infinite (handled by a rollback)."""


@dataclass(frozen=True)
class TrainPaths:
    """Where the trainer writes: the model folder, previews and logs."""

    model_dir: Path
    previews_dir: Path
    logs_dir: Path

    @classmethod
    def of(cls, project: Project) -> TrainPaths:
        return cls(project.model_dir, project.previews_dir, project.logs_dir)


class TrainerState:
    """The trainer's attributes (set by ``Trainer.__init__``) and the learning rate they give."""

    # the run: where, how, and who asks it to stop
    paths: TrainPaths
    settings: TrainSettings
    progress: bool
    dist: DistContext | None
    is_main: bool  # rank 0 (or the only process): writes checkpoints, logs and previews
    world: int  # processes training together
    device: torch.device
    amp: bool  # bf16 autocast
    channels_last: bool
    compile: bool
    should_stop: Callable[[], bool]
    stop_flag: threading.Event
    frame_preview: FramePreview | None
    # the model and its training
    preset: str
    config: ModelConfig
    face_type: str
    model: PairModel
    ema: PairModel | None
    optimizer: torch.optim.Optimizer
    detail: DetailTrainer | None
    detail_lr: float
    detail_batch: int
    pair: DDPPair | None  # the model behind DistributedDataParallel, with several processes
    loss_fn: LossFn
    apply_augment: ApplyFn
    weights: LossWeights
    augment: AugmentSettings
    gen: torch.Generator  # the augmentation's generator, seeded per step
    _compiled_update: Callable[[], None]
    _update_fn: Callable[[], None]
    # the faces
    faces_a: FaceSet
    faces_b: FaceSet
    preview_a: torch.Tensor
    preview_b: torch.Tensor
    batch_size: int  # faces per side and process
    micro_batch: int
    # where the run is (what a checkpoint keeps)
    step: int
    lr_scale: float  # halved by each rollback
    history: list[tuple[int, float, float]]  # (step, loss A, loss B)
    elapsed_before: float  # training seconds of earlier runs
    rollbacks: int
    anneal: float  # the learning rate's multiplier from the run's schedule (changeling.schedule)
    sampler_a: EpochSampler
    sampler_b: EpochSampler
    changed: dict[str, tuple[Any, Any]]  # settings changed on resume: name -> (saved, now)
    last_saved_step: int
    last_saved_path: Path | None
    _t_start: float
    # what is reported
    metrics: MetricsLog
    events: EventLog
    pending: list[torch.Tensor]  # (2,) losses of the steps since the last read
    pending_detail: list[torch.Tensor]
    last_losses: tuple[float, float]
    last_detail_losses: tuple[float, float]
    examples_per_s: float

    def lr(self) -> float:
        return self.settings.lr * self.lr_scale * self.anneal
