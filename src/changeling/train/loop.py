"""The trainer: one readable loop over (learning rate, batch, forward under autocast, backward, clip, step,
zero_grad, EMA, log), plus what keeps the user's work safe: a lock per model folder, checkpoints, exact
resume, rollback on a non-finite loss, and memory fitting (out of memory halves the micro-batch and
accumulates gradients, so the effective batch stays the same).

Exact resume: the data order is an epoch permutation from (seed, side, epoch), the augmentation of step ``s``
draws from a generator seeded with (seed, s), and the checkpoint holds the weights, the optimizer moments,
the sampler positions and the global RNG states; so on the CPU in float32 a resumed run is bit-identical to
an uninterrupted one.

This module holds the step and the loop; the trainer's other concerns live beside it (see
``docs/where-things-live.md``): the model's shape and the checkpoint it resumes from (:mod:`.shape`), building
the model and the detail stage (:mod:`.setup`), the device and precision (:mod:`.precision`), the step's batch
and update (:mod:`.stepping`), checkpoints and rollback (:mod:`.saving`), losses, metrics and previews
(:mod:`.report`), why a run stops (:mod:`.stopping`) and the model folder's lock (:mod:`.lock`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from changeling.config.train import TrainSettings
from changeling.device import resolve_device
from changeling.errors import UserError
from changeling.models import checkpoint as mck
from changeling.models.registry import PRESETS
from changeling.progress import bar
from changeling.project import Project
from changeling.schedule import anneal_factor, run_progress
from changeling.train.augment import Augmented, apply_draws
from changeling.train.data import EpochSampler, FaceSet, check_pair, load_faces
from changeling.train.detail import BATCH as DETAIL_BATCH
from changeling.train.detail import LR as DETAIL_LR
from changeling.train.distributed import (
    DDPPair,
    DistContext,
    agree_max,
    agree_min,
    barrier,
    init_distributed,
    shutdown,
)
from changeling.train.events import EventLog
from changeling.train.frame_preview import FramePreview
from changeling.train.lock import LOCK_NAME, TrainLock
from changeling.train.logs import MetricsLog
from changeling.train.precision import cpu_amp, memory_bytes, train_device, use_bf16
from changeling.train.preview import sample_indices
from changeling.train.report import PREVIEW_SAMPLES, Reporting, clock
from changeling.train.saving import Checkpointing
from changeling.train.setup import (
    DetailFaces,
    augment_settings,
    init_from_encoder,
    loss_weights,
    make_detail_trainer,
    make_optimizer,
    new_model,
    place_faces,
)
from changeling.train.shape import ModelPlan, check_face_type, model_config_for, plan_model, resolve_detail
from changeling.train.state import LossFn, NonFiniteLoss, TrainPaths
from changeling.train.stepping import StepParts, chunk, is_oom, make_loss_fn, rank_seed, step_seed
from changeling.train.stopping import StopReason, agreed_stop_reason, ctrl_c_requests_stop, local_stop_reason

# names other modules and the tests import from here
__all__ = ["BUDGET_CLOCK", "DETAIL_SALT", "GAN_WARMUP", "LOCK_NAME", "NonFiniteLoss", "TrainLock", "TrainPaths",
           "TrainResult", "Trainer", "forward_backward", "make_loss_fn", "memory_bytes", "model_config_for", "train"]

log = logging.getLogger(__name__)

CHECK_EVERY = 10  # steps between reads of the losses (non-finite check, progress, metrics line)
CPU_BATCH = 16  # faces per side on the CPU when the batch size is left to us
DETAIL_SALT = 7  # the detail stage's random draws use their own seed
GAN_WARMUP = 200  # steps of the detail stage before its adversarial term joins (its critics learn meanwhile)

# What --max-time counts. Wall time for a user; the quality bench swaps in the process's CPU time so that variants
# trained one after another on a shared, noisy machine get the same compute rather than the same wall time.
BUDGET_CLOCK: Callable[[], float] = time.perf_counter


@dataclass
class TrainResult:
    """How a training run ended."""

    step: int
    stopped: StopReason
    checkpoint: Path | None
    examples_per_s: float
    loss_a: float
    loss_b: float
    rollbacks: int = 0
    changed_settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def forward_backward(loss_fn: LossFn, a: Augmented, b: Augmented, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one micro-batch; gradients accumulate scaled by ``scale``. Returns the detached
    losses of A and B. (A module-level function so that tests can patch it to simulate faults.)"""
    loss_a, loss_b = loss_fn(a.input, b.input, a.target, b.target, a.masks, b.masks)
    ((loss_a + loss_b) * scale).backward()
    return loss_a.detach(), loss_b.detach()


class Trainer(StepParts, Checkpointing, Reporting):
    """Trains one pair model on two face sets; see the module docstring. Construct, then :meth:`run`.

    ``plan`` is the model to train (:func:`~changeling.train.shape.plan_model`; read from the model folder
    when not given), ``detail`` the detail stage with its faces."""

    def __init__(self, faces_a: FaceSet, faces_b: FaceSet, paths: TrainPaths, settings: TrainSettings, *,
                 init_from: Path | None = None, progress: bool = True, frame_preview: FramePreview | None = None,
                 should_stop: Callable[[], bool] | None = None, dist_ctx: DistContext | None = None,
                 detail: DetailFaces | None = None, plan: ModelPlan | None = None) -> None:
        self.dist = dist_ctx
        self.is_main = dist_ctx is None or dist_ctx.is_main
        self.world = dist_ctx.world_size if dist_ctx is not None else 1
        self.paths, self.settings, self.progress = paths, settings, progress and self.is_main
        self.frame_preview = frame_preview
        self.should_stop = should_stop or (lambda: False)
        self.stop_flag = threading.Event()
        self.face_type = check_pair(faces_a, faces_b)
        self.device = train_device(settings.device, dist_ctx)
        self.amp = use_bf16(self.device, settings.precision)
        self.channels_last = True
        self.compile = settings.compile == "on" or (settings.compile == "auto" and self.device.type == "cuda")
        if plan is None:
            plan = plan_model(paths.model_dir, settings, mck.latest_checkpoint(paths.model_dir))
        loaded = plan.loaded
        if loaded is not None:
            check_face_type(paths.model_dir, loaded.info, self.face_type)
        self.preset, self.config = settings.preset, plan.config
        if faces_a.resolution != self.config.resolution or faces_b.resolution != self.config.resolution:
            raise UserError(f"faces were loaded at {faces_a.resolution} px but the model works at "
                            f"{self.config.resolution} px")
        self._setup_model(faces_a, faces_b, loaded, init_from)
        self._setup_detail(detail, loaded)
        if settings.precision == "auto" and self.device.type == "cpu" and self.amp and self.dist is None:
            # a CPU that announces bf16 may run it slower: a resumed run keeps its first run's measured choice
            saved = loaded.state.get("trainer", {}).get("amp") if loaded is not None else None
            self.amp = cpu_amp(saved, self.model, settings.batch_size or CPU_BATCH, self.channels_last)
        self._setup_step(faces_a, faces_b)
        self._setup_reporting(loaded)
        log.info("model %s (%d px, %s), %d faces of A, %d of B, batch %d per side, %s%s on %s",
                 self.preset, self.config.resolution, self.face_type, len(faces_a), len(faces_b), self.batch_size,
                 "bf16" if self.amp else "fp32", ", compiled" if self.compile else "", self.device)

    def _setup_model(self, faces_a: FaceSet, faces_b: FaceSet, loaded: mck.LoadedCheckpoint | None,
                     init_from: Path | None) -> None:
        """The pair model, its optimizer and EMA copy, and where the run is: new, resumed from ``loaded``, or
        started from the encoder of ``init_from``."""
        s = self.settings
        self.model = new_model(self.preset, self.config, s.seed, self.device, self.channels_last)
        self.optimizer = make_optimizer(self.model, s.lr)
        self.ema = None
        self.step, self.lr_scale, self.history, self.elapsed_before, self.rollbacks = 0, 1.0, [], 0.0, 0
        self.anneal = 1.0
        self.sampler_a = EpochSampler(len(faces_a), s.seed, 1)
        self.sampler_b = EpochSampler(len(faces_b), s.seed, 2)
        self.changed = {}
        self.detail = None
        if loaded is not None:
            self._restore(loaded, first=True)
        elif init_from is not None:
            init_from_encoder(self.model, Path(init_from), self.preset, self.config)
        if self.ema is None and s.ema > 0:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)

    def _setup_detail(self, detail: DetailFaces | None, loaded: mck.LoadedCheckpoint | None) -> None:
        self.detail_lr, self.detail_batch = DETAIL_LR, DETAIL_BATCH
        if detail is not None:
            self.detail = make_detail_trainer(detail, loaded, self.settings.seed + DETAIL_SALT, self.device,
                                              self.channels_last, self.dist)
        elif not self.settings.train_pair:
            raise UserError("train_pair is off but this model has no detail stage to train; turn train_pair on, or "
                            "set detail to auto, 2x or 4x", self.paths.model_dir)

    def _setup_step(self, faces_a: FaceSet, faces_b: FaceSet) -> None:
        """The faces on the device, the losses, the augmentation, the (compiled) step and the batch size."""
        self.faces_a, self.faces_b = place_faces(faces_a, self.device), place_faces(faces_b, self.device)
        self.preview_a = faces_a.images[sample_indices(len(faces_a), PREVIEW_SAMPLES)]
        self.preview_b = faces_b.images[sample_indices(len(faces_b), PREVIEW_SAMPLES)]
        self.weights = loss_weights(self.settings)
        self.augment = augment_settings(self.settings)
        self.gen = torch.Generator(device=self.device)
        # with several processes the forward runs through DistributedDataParallel (gradients averaged)
        self.pair = DDPPair(self.model, self.dist, self.device) if self.dist is not None else None
        loss_fn = make_loss_fn(self.pair or self.model, self.weights, self.amp,  # type: ignore[arg-type]
                               self.channels_last)
        self.loss_fn = torch.compile(loss_fn) if self.compile else loss_fn  # type: ignore[assignment]
        # the augmentation's pure part too: uncompiled its dozens of small kernels bound a small model's GPU step
        self.apply_augment = torch.compile(apply_draws) if self.compile else apply_draws  # type: ignore[assignment]
        # and the update (clipping, optimizer, EMA), as the reference step compiles its optimizer: eager, its
        # per-tensor kernels are most of a small model's step on a GPU
        self._compiled_update = torch.compile(self._update)
        # an annealed rate changes every step, and a compiled optimizer step compiles again for each new float
        # rate until the recompile limit: annealed runs keep the eager update (a tensor rate: next GPU slot)
        self._update_fn = self._first_update if self.compile and not self.settings.lr_anneal else self._update
        self.batch_size = self.settings.batch_size or agree_min(self._fit_batch(), self.dist, self.device)
        self.micro_batch = self.batch_size

    def _setup_reporting(self, loaded: mck.LoadedCheckpoint | None) -> None:
        self.metrics = MetricsLog(self.paths.logs_dir)
        self.events = EventLog(self.paths.logs_dir, enabled=self.is_main)
        self.pending, self.pending_detail = [], []
        self.last_detail_losses = self.last_losses = (math.nan, math.nan)
        self.examples_per_s = 0.0
        self.last_saved_step = self.step if loaded is not None else -1
        self.last_saved_path = loaded.info.path if loaded is not None else None
        self._t_start = time.perf_counter()

    def _fit_batch(self) -> int:
        """The largest batch (faces per side, at most the preset's cap) whose step fits in memory."""
        cap = PRESETS[self.preset].max_batch
        if self.device.type != "cuda":
            return min(cap, CPU_BATCH)
        b = cap
        while True:
            try:
                a, bb = self._batch_of(torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long), 0)
                forward_backward(self.loss_fn, a, bb, 1.0)
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.synchronize(self.device)
                log.info("batch size %d per side fits in memory", b)
                return b
            except Exception as exc:  # noqa: BLE001 - only memory errors are handled
                if not is_oom(exc):
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if b == 1:
                    raise UserError("even one face per side does not fit in GPU memory; use a smaller preset "
                                    "or --device cpu") from None
                b //= 2

    # ------------------------------------------------------------------------------------------ the step

    def _accumulate(self, a: Augmented, b: Augmented) -> torch.Tensor:
        """Forward and backward over micro-batches; on out-of-memory halve the micro-batch and redo. (2,) losses."""
        n = a.input.shape[0]
        while True:
            try:
                total = torch.zeros(2, device=self.device)
                for i in range(0, n, self.micro_batch):
                    sl = slice(i, min(n, i + self.micro_batch))
                    part = (sl.stop - sl.start) / n
                    # DDP: gradients are exchanged once per step, on the last micro-batch
                    last = sl.stop >= n
                    with self.pair.no_sync() if self.pair is not None and not last else contextlib.nullcontext():
                        la, lb = forward_backward(self.loss_fn, chunk(a, sl), chunk(b, sl), part)
                    total = total + torch.stack([la, lb]).float() * part
                return total
            except Exception as exc:  # noqa: BLE001 - only memory errors are handled
                if not is_oom(exc):
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.micro_batch == 1:
                    raise UserError("out of memory even with one face per micro-batch; use a smaller preset, "
                                    "a lower resolution or --device cpu") from None
                self.micro_batch = max(1, self.micro_batch // 2)
                log.warning("out of memory: micro-batch now %d, accumulating %d micro-batches per step "
                            "(effective batch stays %d)", self.micro_batch, math.ceil(n / self.micro_batch), n)

    def train_step(self) -> None:
        """One optimisation step: the pair model's (unless ``train_pair`` is off), then the detail stage's when
        it is due."""
        if self.settings.train_pair:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr()
            a, b = self.next_batch()
            losses = self._accumulate(a, b)
            self._update_fn()
            self.optimizer.zero_grad(set_to_none=True)
            self.pending.append(losses)
        if self.detail is not None and self._detail_due():
            self.detail.set_lr(self.lr_scale * self.anneal)
            seed = step_seed(self.settings.seed + DETAIL_SALT, self.step)
            if self.dist is not None:
                seed = rank_seed(seed, self.dist.rank)
            gan = self.settings.detail_gan if self.step >= self.settings.detail_start + GAN_WARMUP else 0.0
            self.pending_detail.append(self.detail.step(self._reconstruct, seed, amp=self.amp,
                                                        clip=self.settings.grad_clip, gan=gan))
        self.step += 1

    def _detail_due(self) -> bool:
        s = self.settings
        return not s.train_pair or (self.step >= s.detail_start and self.step % s.detail_every == 0)

    # ------------------------------------------------------------------------------------------ the loop

    def _stop_reason(self, t0: float, until: int | None) -> StopReason | None:
        """Why to stop now, if at all; with several processes the ranks agree (any rank's reason stops all)."""
        reason = local_stop_reason(self.step, until, self.settings, lambda: BUDGET_CLOCK() - t0,
                                   lambda: self.stop_flag.is_set() or self.should_stop())
        return agreed_stop_reason(reason, self.dist, self.device)

    def _anneal(self, used_s: float) -> float:
        """The schedule's multiplier now (``changeling.schedule``); with several processes the ranks agree on the
        furthest progress, so every replica takes the same step."""
        s = self.settings
        progress = run_progress(self.step, s.max_steps, used_s, s.max_time)
        if self.dist is not None:
            progress = agree_max(int(progress * 1_000_000), self.dist, self.device) / 1_000_000
        return anneal_factor(progress, s.lr_anneal)

    def train_steps(self, until: int | None = None) -> StopReason:
        """The loop: steps until ``until`` (a total step count), the settings' limits, or a stop request.
        Checkpoints, previews and logs happen at their intervals; no final save (see :meth:`run`)."""
        s = self.settings
        t0, t_mark = BUDGET_CLOCK(), time.perf_counter()
        examples = 0
        with bar(total=s.max_steps or None, desc="training", unit="step", enabled=self.progress) as pbar:
            pbar.update(self.step)
            while True:
                reason = self._stop_reason(t0, until)
                if reason is not None:
                    try:
                        self._flush(pbar, t_mark, examples)
                    except NonFiniteLoss as exc:
                        self.rollback(str(exc))
                        continue
                    return reason
                if s.lr_anneal > 0:  # after the stop check, which every rank passes alike
                    self.anneal = self._anneal(BUDGET_CLOCK() - t0)
                try:
                    self.train_step()
                    examples += 2 * (self.batch_size if self.settings.train_pair else self.detail_batch) * self.world
                    due_save = self.step % s.save_every == 0
                    due_preview = s.preview_every > 0 and self.step % s.preview_every == 0
                    if self.step % CHECK_EVERY == 0 or due_save or due_preview:
                        self._flush(pbar, t_mark, examples)
                        t_mark, examples = time.perf_counter(), 0
                    # the preview first: a checkpoint's training time then counts it, so a run stopped by
                    # max_time right after a save (no final save) does not look short to a resumed one; but
                    # no preview of weights that the save would refuse
                    if due_save:
                        self._check_finite()
                    if due_preview:
                        self.preview()
                    if due_save:
                        self.save()
                        log.info("step %d  loss A %.4f  loss B %.4f  %.1f ex/s  %s  saved", self.step,
                                 *self.last_losses, self.examples_per_s, clock(BUDGET_CLOCK() - t0))
                except NonFiniteLoss as exc:
                    self.rollback(str(exc))
                    t_mark, examples = time.perf_counter(), 0

    def run(self) -> TrainResult:
        """Train until a limit or a stop request, then save, preview and return how it ended."""
        self._t_start = time.perf_counter()
        try:
            if self.last_saved_step < 0:
                self.save()  # a new model: step 0 is the first rollback point
            with ctrl_c_requests_stop(self.stop_flag):
                reason = self.train_steps()
            if self.step != self.last_saved_step:
                try:
                    self.pending, self.pending_detail = [], []
                    self.save()
                except NonFiniteLoss:
                    log.warning("not saving step %d: its weights are not finite; the last checkpoint stays",
                                self.step)
            path = self.last_saved_path
            if self.settings.preview_every > 0:
                self.preview()
        finally:
            self.metrics.close()
            self.events.close()
        log.info("stopped (%s) at step %d; model saved in %s", reason.replace("_", " "), self.step, path)
        return TrainResult(step=self.step, stopped=reason, checkpoint=path, examples_per_s=self.examples_per_s,
                           loss_a=self.last_losses[0], loss_b=self.last_losses[1], rollbacks=self.rollbacks,
                           changed_settings=self.changed)


def train(project: Project, settings: TrainSettings, *, init_from: Path | None = None, progress: bool = True,
          frame_preview: FramePreview | None = None, should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train (or resume) the project's model on ``faces/A`` and ``faces/B``; holds the project's training lock.

    Started by ``torchrun`` with several processes, it trains with DistributedDataParallel (see
    :mod:`changeling.train.distributed`): rank 0 holds the lock and writes; every rank trains."""
    paths = TrainPaths.of(project)
    ctx = init_distributed(resolve_device(settings.device).type)
    try:
        if ctx is None or ctx.is_main:
            project.ensure_dirs()
        barrier(ctx)
        with TrainLock(paths.model_dir) if ctx is None or ctx.is_main else contextlib.nullcontext():
            trainer = _prepare(project, paths, settings, init_from, progress, frame_preview, should_stop, ctx)
            result = trainer.run()
        barrier(ctx)  # leave together: a rank tearing the group down while another still talks to it aborts
        return result
    finally:
        shutdown(ctx)


def _prepare(project: Project, paths: TrainPaths, settings: TrainSettings, init_from: Path | None, progress: bool,
             frame_preview: FramePreview | None, should_stop: Callable[[], bool] | None,
             ctx: DistContext | None) -> Trainer:
    """The trainer of the project's model: the newest checkpoint read and checked once, the faces loaded at the
    model's size (and the detail stage's). (The checkpoint's tensors are dropped on return, before training.)"""
    latest = mck.latest_checkpoint(paths.model_dir)
    if init_from is not None and latest is not None:
        raise UserError("--init-from only starts a new model, and this project already has one; move its "
                        "model folder away first", paths.model_dir)
    plan = plan_model(paths.model_dir, settings, latest)
    faces_a = load_faces(project.faces_dir("A"), plan.config.resolution, side="A", progress=progress)
    faces_b = load_faces(project.faces_dir("B"), plan.config.resolution, side="B", progress=progress)
    check_pair(faces_a, faces_b, project.faces_dir("B"))
    stored = min(faces_a.stored_size, faces_b.stored_size)
    saved_detail = plan.loaded.info.detail if plan.loaded is not None else None
    detail_config = resolve_detail(settings, plan.config, stored, saved_detail, paths.model_dir)
    detail = None
    if detail_config is not None:
        size = detail_config.output_resolution
        detail = (detail_config, load_faces(project.faces_dir("A"), size, side="A", progress=progress),
                  load_faces(project.faces_dir("B"), size, side="B", progress=progress))
    return Trainer(faces_a, faces_b, paths, settings, init_from=init_from, progress=progress,
                   frame_preview=frame_preview, should_stop=should_stop, dist_ctx=ctx, detail=detail, plan=plan)
