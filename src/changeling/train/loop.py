"""The trainer: one readable loop over (learning rate, batch, forward under autocast, backward, clip, step,
zero_grad, EMA, log), plus what keeps the user's work safe: a lock per model folder, checkpoints, exact
resume, rollback on a non-finite loss, and memory fitting (out of memory halves the micro-batch and
accumulates gradients, so the effective batch stays the same).

Exact resume: the data order is an epoch permutation from (seed, side, epoch), the augmentation of step ``s``
draws from a generator seeded with (seed, s), and the checkpoint holds the weights, the optimizer moments,
the sampler positions and the global RNG states; so on the CPU in float32 a resumed run is bit-identical to
an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import numpy as np
import torch

from changeling.config.train import TrainSettings
from changeling.device import resolve_device
from changeling.errors import ChangelingError, UserError
from changeling.locks import ProcessLock
from changeling.models import checkpoint as mck
from changeling.models.detail import DetailConfig, DetailedModel, DetailStage
from changeling.models.pair import ModelConfig, PairModel
from changeling.models.registry import PRESETS, Dims, create_model, preset_config
from changeling.progress import bar
from changeling.project import Project
from changeling.train import checkpoint as ck
from changeling.train.augment import ApplyFn, Augmented, AugmentSettings, apply_draws, augment
from changeling.train.data import EpochSampler, FaceSet, check_pair, load_faces
from changeling.train.detail import BATCH as DETAIL_BATCH
from changeling.train.detail import LR as DETAIL_LR
from changeling.train.detail import DetailTrainer, detail_config_for
from changeling.train.distributed import (
    DDPPair,
    DistContext,
    agree_max,
    agree_min,
    barrier,
    init_distributed,
    mean_across,
    rank_slice,
    shutdown,
)
from changeling.train.events import EventLog
from changeling.train.frame_preview import FramePreview
from changeling.train.logs import MetricsLog, plot_losses
from changeling.train.losses import LossWeights, face_loss
from changeling.train.preview import sample_indices, write_preview
from changeling.types import Side

log = logging.getLogger(__name__)

DetailFaces = tuple[DetailConfig, FaceSet, FaceSet]  # the stage to train, and the faces at its output size
StopReason = Literal["max_steps", "max_time", "interrupted", "steps_done"]

CHECK_EVERY = 10  # steps between reads of the losses (non-finite check, progress, metrics line)
CPU_BATCH = 16  # faces per side on the CPU when the batch size is left to us
PREVIEW_SAMPLES = 4  # sample faces per side in the preview grid
MAX_ROLLBACKS = 6  # consecutive rollbacks before giving up
HISTORY_KEEP = 20_000  # loss history entries kept in the checkpoint
SHAPE_FIELDS = ("preset", "resolution", "e_dims", "ae_dims", "d_dims")
LOCK_NAME = ".train.lock"
DETAIL_SALT = 7  # the detail stage's random draws use their own seed
GAN_WARMUP = 200  # steps of the detail stage before its adversarial term joins (its critics learn meanwhile)

# What --max-time counts. Wall time for a user; the quality bench swaps in the process's CPU time so that variants
# trained one after another on a shared, noisy machine get the same compute rather than the same wall time.
BUDGET_CLOCK: Callable[[], float] = time.perf_counter


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


# ---------------------------------------------------------------------------------------------- small helpers


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast is much faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast: always when asked; on ``auto`` where the device computes bf16 natively."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def cpu_bf16_pays(model: PairModel, batch: int, channels_last: bool = True, margin: float = 1.1) -> bool:
    """Whether bf16 autocast makes a forward and backward pass of ``model`` (``batch`` faces per side) at least
    ``margin`` times faster than float32 on this CPU, timed on random faces (best of two after a warm-up each).

    Measured rather than read off the CPU flags: a CPU that announces bf16 instructions may still run these
    convolutions slower in bf16 (5x slower on a 2-core Xeon VM with AVX512-BF16 and no AMX; see
    bench/RESULTS.md). The model's gradients are cleared afterwards; no RNG state is touched."""
    r = model.config.resolution
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2 * batch, 3, r, r, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def best_seconds(amp: bool) -> float:
        best = math.inf
        for i in range(3):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out_a, out_b = model.forward_pair(x[:batch], x[batch:])
            (out_a.face.float().mean() + out_b.face.float().mean()).backward()
            if i:
                best = min(best, time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        return best

    fp32 = best_seconds(False)
    bf16 = best_seconds(True)
    log.info("bf16 autocast on this CPU: %.0f ms per step against %.0f ms in float32", 1000 * bf16, 1000 * fp32)
    return bf16 * margin < fp32


def shape_dims(settings: TrainSettings) -> Dims:
    """The model-shape knobs of the settings (0: not given)."""
    return Dims(settings.resolution, settings.e_dims, settings.ae_dims, settings.d_dims)


def model_config_for(settings: TrainSettings, saved_state: dict[str, Any] | None = None) -> ModelConfig:
    """The model config the settings ask for. Dims left at 0 keep the saved model's (from its checkpoint state),
    else the preset's."""
    dims = shape_dims(settings)
    if saved_state is not None:
        saved = saved_state.get("settings", {})
        dims = dims.over(Dims(*(int(saved.get(k) or 0) for k in SHAPE_FIELDS[1:])))
    try:
        return preset_config(settings.preset, dims)
    except ValueError as exc:
        raise UserError(f"bad model shape: {exc}") from None


def loss_weights(s: TrainSettings) -> LossWeights:
    return LossWeights(ssim=s.ssim_weight, l1=s.l1_weight, mse=s.mse_weight, mask=s.mask_weight, eyes=s.eyes_weight,
                       mouth=s.mouth_weight, background=s.background_weight)


def augment_settings(s: TrainSettings) -> AugmentSettings:
    return AugmentSettings(rotation=s.rotation, scale=s.scale, shift=s.shift, flip=s.flip, warp=s.warp,
                           color=s.color_jitter)


def step_seed(seed: int, step: int) -> int:
    """Seed of the augmentation generator for one step."""
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def _chunk(x: Augmented, sl: slice) -> Augmented:
    return Augmented(x.input[sl], x.target[sl], x.masks[sl])


def forward_backward(loss_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], a: Augmented, b: Augmented,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one micro-batch; gradients accumulate scaled by ``scale``. Returns the detached
    losses of A and B. (A module-level function so that tests can patch it to simulate faults.)"""
    loss_a, loss_b = loss_fn(a.input, b.input, a.target, b.target, a.masks, b.masks)
    ((loss_a + loss_b) * scale).backward()
    return loss_a.detach(), loss_b.detach()


def make_loss_fn(model: PairModel, weights: LossWeights, amp: bool,
                 channels_last: bool) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The forward pass and both sides' losses as one function (what ``torch.compile`` compiles)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def losses(a_in: torch.Tensor, b_in: torch.Tensor, a_tgt: torch.Tensor, b_tgt: torch.Tensor,
               a_masks: torch.Tensor, b_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(a_in.device.type, dtype=torch.bfloat16, enabled=amp):
            out_a, out_b = model.forward_pair(a_in.contiguous(memory_format=fmt), b_in.contiguous(memory_format=fmt))
        return face_loss(out_a, a_tgt, a_masks, weights), face_loss(out_b, b_tgt, b_masks, weights)

    return losses


def memory_bytes(device: torch.device) -> int:
    """Peak memory so far: allocated on a CUDA device, resident set size on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return 0


def check_same_model(model_dir: Path, info: mck.ModelInfo, state: dict[str, Any], settings: TrainSettings,
                     face_type: str | None) -> ModelConfig:
    """The saved model's config if the settings and faces fit it; else :class:`UserError` saying what differs."""
    if info.preset != settings.preset:
        raise UserError(
            f"this model folder holds a {info.preset!r} model ({info.config.resolution} px) but the settings ask "
            f"for {settings.preset!r}; the model shape cannot change on resume. Use --preset {info.preset}, or "
            "move the model folder away to start a new model", model_dir)
    if shape_dims(settings) == Dims():  # no shape asked for: the saved model's, whatever the preset's defaults
        want = info.config
    else:
        want = model_config_for(settings, state)
    if want != info.config:
        diffs = [f"{k} {getattr(info.config, k)} -> {getattr(want, k)}"
                 for k in ModelConfig.__dataclass_fields__ if getattr(info.config, k) != getattr(want, k)]
        raise UserError("the model shape cannot change on resume (" + ", ".join(diffs) + "); leave resolution "
                        "and the dims unset, or move the model folder away to start a new model", model_dir)
    if face_type is not None and info.face_type != face_type:
        raise UserError(f"this model was trained on {info.face_type!r} faces but the faces now are "
                        f"{face_type!r}; extract with the same face type", model_dir)
    return info.config


class TrainLock(ProcessLock):
    """An exclusive lock on a model folder (``flock``, see :mod:`changeling.locks`; released when the process
    dies)."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__(Path(model_dir) / LOCK_NAME, lambda pid: f"another trainer (process {pid}) is training "
                         "this model; stop it first or wait", Path(model_dir))

    def __enter__(self) -> TrainLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__enter__()
        return self


@contextmanager
def ctrl_c_requests_stop(flag: threading.Event) -> Iterator[None]:
    """While active, the first Ctrl+C sets ``flag`` (the loop saves and stops); a second one interrupts at once.
    Outside the main thread this does nothing (the caller stops the run through ``should_stop``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.set()
        log.warning("stopping after this step and saving (press Ctrl+C again to abort without saving)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------------------------ the trainer


class Trainer:
    """Trains one pair model on two face sets; see the module docstring. Construct, then :meth:`run`."""

    def __init__(self, faces_a: FaceSet, faces_b: FaceSet, paths: TrainPaths, settings: TrainSettings, *,
                 init_from: Path | None = None, progress: bool = True, frame_preview: FramePreview | None = None,
                 should_stop: Callable[[], bool] | None = None, dist_ctx: DistContext | None = None,
                 detail: DetailFaces | None = None) -> None:
        self.dist = dist_ctx
        self.is_main = dist_ctx is None or dist_ctx.is_main
        self.world = dist_ctx.world_size if dist_ctx is not None else 1
        progress = progress and self.is_main
        self.paths, self.settings, self.progress = paths, settings, progress
        self.frame_preview = frame_preview
        self.should_stop = should_stop or (lambda: False)
        self.stop_flag = threading.Event()
        self.face_type = check_pair(faces_a, faces_b)
        self.device = resolve_device(settings.device)
        if dist_ctx is not None:
            self.device = dist_ctx.device(self.device)
        self.amp = use_bf16(self.device, settings.precision)
        self.channels_last = True
        self.compile = settings.compile == "on" or (settings.compile == "auto" and self.device.type == "cuda")
        if self.device.type == "cuda":  # process-wide switches: fixed input shapes, TF32 where fp32 remains
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        latest = mck.latest_checkpoint(paths.model_dir)
        loaded = mck.read_checkpoint(latest) if latest is not None else None
        self.preset = settings.preset
        self.config = check_same_model(paths.model_dir, loaded.info, loaded.state, settings, self.face_type) \
            if loaded is not None else model_config_for(settings)
        if faces_a.resolution != self.config.resolution or faces_b.resolution != self.config.resolution:
            raise UserError(f"faces were loaded at {faces_a.resolution} px but the model works at "
                            f"{self.config.resolution} px")

        with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's RNG left alone
            torch.manual_seed(settings.seed)
            self.model = create_model(self.preset, self.config).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = self._make_optimizer()
        self.ema: PairModel | None = None
        self.step = 0
        self.lr_scale = 1.0
        self.history: list[tuple[int, float, float]] = []
        self.elapsed_before = 0.0  # training seconds of earlier runs
        self.rollbacks = 0
        self.sampler_a = EpochSampler(len(faces_a), settings.seed, 1)
        self.sampler_b = EpochSampler(len(faces_b), settings.seed, 2)
        self.changed: dict[str, tuple[Any, Any]] = {}
        self.detail: DetailTrainer | None = None
        if loaded is not None:
            self._restore(loaded, first=True)
        elif init_from is not None:
            self._init_from(Path(init_from))
        if self.ema is None and settings.ema > 0:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.detail_lr = DETAIL_LR
        self.detail_batch = DETAIL_BATCH
        if detail is not None:
            self.detail = self._make_detail(detail, loaded)
        elif not settings.train_pair:
            raise UserError("train_pair is off but this model has no detail stage to train; turn train_pair on, or "
                            "set detail to auto, 2x or 4x", paths.model_dir)
        if (settings.precision == "auto" and self.device.type == "cpu" and self.amp and self.dist is None):
            # a CPU that announces bf16 may run it slower: a resumed run keeps its first run's measured choice
            saved = loaded.state.get("trainer", {}).get("amp") if loaded is not None else None
            self.amp = saved if isinstance(saved, bool) else cpu_bf16_pays(
                self.model, settings.batch_size or CPU_BATCH, self.channels_last)

        self.faces_a, self.faces_b = self._place(faces_a), self._place(faces_b)
        self.preview_a = faces_a.images[sample_indices(len(faces_a), PREVIEW_SAMPLES)]
        self.preview_b = faces_b.images[sample_indices(len(faces_b), PREVIEW_SAMPLES)]
        self.weights = loss_weights(settings)
        self.augment = augment_settings(settings)
        self.gen = torch.Generator(device=self.device)
        # with several processes the forward runs through DistributedDataParallel (gradients averaged)
        self.pair = DDPPair(self.model, dist_ctx, self.device) if dist_ctx is not None else None
        loss_fn = make_loss_fn(self.pair or self.model, self.weights, self.amp,  # type: ignore[arg-type]
                               self.channels_last)
        self.loss_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] = (
            torch.compile(loss_fn) if self.compile else loss_fn)  # type: ignore[assignment]
        # the augmentation's pure part too: uncompiled its dozens of small kernels bound a small model's GPU step
        self.apply_augment: ApplyFn = torch.compile(apply_draws) if self.compile else apply_draws  # type: ignore[assignment]
        # and the update (clipping, optimizer, EMA), as the reference step compiles its optimizer: eager, its
        # per-tensor kernels are most of a small model's step on a GPU
        self._compiled_update: Callable[[], None] = torch.compile(self._update)
        self._update_fn: Callable[[], None] = self._first_update if self.compile else self._update
        self.batch_size = settings.batch_size or agree_min(self._fit_batch(), dist_ctx, self.device)
        self.micro_batch = self.batch_size
        self.metrics = MetricsLog(paths.logs_dir)
        self.events = EventLog(paths.logs_dir, enabled=self.is_main)
        self.pending: list[torch.Tensor] = []
        self.pending_detail: list[torch.Tensor] = []
        self.last_detail_losses = (math.nan, math.nan)
        self.last_losses = (math.nan, math.nan)
        self.examples_per_s = 0.0
        self.last_saved_step = self.step if loaded is not None else -1
        self.last_saved_path: Path | None = loaded.info.path if loaded is not None else None
        self._t_start = time.perf_counter()
        log.info("model %s (%d px, %s), %d faces of A, %d of B, batch %d per side, %s%s on %s",
                 self.preset, self.config.resolution, self.face_type, len(faces_a), len(faces_b), self.batch_size,
                 "bf16" if self.amp else "fp32", ", compiled" if self.compile else "", self.device)

    # ------------------------------------------------------------------------------------- setup helpers

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self.model.parameters())
        try:
            return torch.optim.AdamW(params, lr=self.settings.lr, betas=(0.9, 0.999), weight_decay=0.0, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(params, lr=self.settings.lr, betas=(0.9, 0.999), weight_decay=0.0)

    def _place(self, faces: FaceSet) -> FaceSet:
        """Faces in VRAM when they take under a quarter of the free memory, else they stay in RAM."""
        if self.device.type != "cuda":
            return faces
        free, _ = torch.cuda.mem_get_info(self.device)
        return faces.to(self.device) if faces.nbytes < free // 4 else faces

    def _restore(self, loaded: mck.LoadedCheckpoint, *, first: bool) -> None:
        """Load weights, optimizer, RNG and trainer state from a verified checkpoint."""
        path = loaded.info.path
        mck.load_weights(self.model, loaded.weights, path / mck.WEIGHTS)
        ck.load_optimizer_tensors(self.optimizer, self.model, loaded.optimizer, path / mck.OPTIMIZER)
        ck.restore_rng(loaded.optimizer)
        self.ema = None
        if self.settings.ema > 0:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
            if loaded.ema is not None:
                mck.load_weights(self.ema, loaded.ema, path / mck.EMA)
        if self.detail is not None and loaded.detail is not None:
            mck.load_weights(self.detail.stage, loaded.detail.weights, path / mck.DETAIL)
            ck.load_optimizer_tensors(self.detail.optimizer, self.detail.stage, loaded.detail.optimizer,
                                      path / mck.DETAIL_OPTIMIZER)
        trainer = loaded.state.get("trainer", {})
        self.step = loaded.info.step
        saved_settings = loaded.state.get("settings", {})
        self.lr_scale = float(trainer.get("lr_scale", 1.0))
        if first and saved_settings.get("lr") != self.settings.lr:
            self.lr_scale = 1.0  # the user chose a new learning rate: use it as given
        self.history = [(int(h[0]), float(h[1]), float(h[2])) for h in trainer.get("history", [])]
        self.elapsed_before = float(trainer.get("elapsed", 0.0))
        samplers = trainer.get("samplers", {})
        if "A" in samplers:
            self.sampler_a.load_state(samplers["A"])
        if "B" in samplers:
            self.sampler_b.load_state(samplers["B"])
        if first:
            now = dataclasses.asdict(self.settings)
            self.changed = {k: (saved_settings[k], v) for k, v in now.items()
                            if k in saved_settings and saved_settings[k] != v and k not in ("max_steps", "max_time")}
            if self.changed:
                log.info("settings changed on resume: %s",
                         ", ".join(f"{k} {a} -> {b}" for k, (a, b) in self.changed.items()))
            log.info("resuming at step %d from %s", self.step, path)

    def _init_from(self, source: Path) -> None:
        """Copy the shared encoder (and shared inter layers) of another model into this new one."""
        mck.refuse_pickle(source)
        folder = source / "model" if (source / "model").is_dir() and not (source / "checkpoints").is_dir() else source
        other = mck.read_checkpoint(mck.find_model_checkpoint(folder), with_optimizer=False)
        prefixes = self.model.shared_prefixes()
        own = {k: v for k, v in self.model.state_dict().items() if k.startswith(prefixes)}
        theirs = {k: v for k, v in other.weights.items() if k.startswith(prefixes)}
        if set(own) != set(theirs) or any(tuple(own[k].shape) != tuple(theirs[k].shape) for k in own):
            raise UserError(f"its encoder does not fit this model (it is a {other.info.preset!r} model at "
                            f"{other.info.config.resolution} px, this is {self.preset!r} at "
                            f"{self.config.resolution} px with other dims)", other.info.path)
        self.model.load_state_dict(theirs, strict=False)
        log.info("started from the encoder of %s (step %d)", other.info.path, other.info.step)

    def _make_detail(self, detail: DetailFaces, loaded: mck.LoadedCheckpoint | None) -> DetailTrainer:
        """The detail stage (restored from the checkpoint when it has one) and its trainer."""
        config, faces_a, faces_b = detail
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed + DETAIL_SALT)
            stage = DetailStage(config).to(self.device)
        if self.channels_last:
            stage = stage.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        wrap = None
        if self.dist is not None:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # the critics sit out the steps without the adversarial term
            wrap = lambda m: torch.nn.parallel.DistributedDataParallel(  # noqa: E731
                m, device_ids=ids, find_unused_parameters=True)
        trainer = DetailTrainer(stage, {"A": faces_a.images, "B": faces_b.images},
                                {"A": faces_a.masks[:, :1].clone(), "B": faces_b.masks[:, :1].clone()},
                                self.device, wrap=wrap)
        if loaded is not None and loaded.detail is not None:
            path = loaded.info.path
            mck.load_weights(stage, loaded.detail.weights, path / mck.DETAIL)
            ck.load_optimizer_tensors(trainer.optimizer, stage, loaded.detail.optimizer, path / mck.DETAIL_OPTIMIZER)
        else:
            log.info("a %dx detail stage starts (%d -> %d px)", config.scale, config.resolution,
                     config.output_resolution)
        return trainer

    def _preview_stored(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The preview's sample faces at the detail stage's size, as stored (None without a stage)."""
        if self.detail is None:
            return None, None
        return (self.detail.faces["A"][sample_indices(self.detail.faces["A"].shape[0], PREVIEW_SAMPLES)],
                self.detail.faces["B"][sample_indices(self.detail.faces["B"].shape[0], PREVIEW_SAMPLES)])

    def inference_model(self) -> torch.nn.Module:
        """What the previews render with: the EMA weights when kept, behind the detail stage when there is one."""
        model = self.ema if self.ema is not None else self.model
        return DetailedModel(model, self.detail.stage) if self.detail is not None else model

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
                if not _is_oom(exc):
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if b == 1:
                    raise UserError("even one face per side does not fit in GPU memory; use a smaller preset "
                                    "or --device cpu") from None
                b //= 2

    # ------------------------------------------------------------------------------------------ the loop

    def lr(self) -> float:
        return self.settings.lr * self.lr_scale

    def _batch_of(self, ia: torch.Tensor, ib: torch.Tensor, step: int) -> tuple[Augmented, Augmented]:
        xa, ma = self.faces_a.gather(ia, self.device)
        xb, mb = self.faces_b.gather(ib, self.device)
        seed = step_seed(self.settings.seed, step)
        if self.dist is not None:  # each rank augments its own slice with its own random numbers
            seed = (seed + 1_000_003 * self.dist.rank) % 2**63
        self.gen.manual_seed(seed)
        out = augment(torch.cat([xa, xb]), torch.cat([ma, mb]), self.augment, self.gen, self.apply_augment)
        n = xa.shape[0]
        return _chunk(out, slice(0, n)), _chunk(out, slice(n, None))

    def next_batch(self) -> tuple[Augmented, Augmented]:
        """The augmented batch of the next step (advances the samplers)."""
        n = self.batch_size * self.world  # the global batch: every rank draws it and takes its own slice
        ia, ib = self.sampler_a.next(n), self.sampler_b.next(n)
        return self._batch_of(rank_slice(ia, self.dist), rank_slice(ib, self.dist), self.step)

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
                        la, lb = forward_backward(self.loss_fn, _chunk(a, sl), _chunk(b, sl), part)
                    total = total + torch.stack([la, lb]).float() * part
                return total
            except Exception as exc:  # noqa: BLE001 - only memory errors are handled
                if not _is_oom(exc):
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
            self.detail.set_lr(self.lr_scale)
            seed = step_seed(self.settings.seed + DETAIL_SALT, self.step)
            if self.dist is not None:
                seed = (seed + 1_000_003 * self.dist.rank) % 2**63
            gan = self.settings.detail_gan if self.step >= self.settings.detail_start + GAN_WARMUP else 0.0
            self.pending_detail.append(self.detail.step(self._reconstruct, seed, amp=self.amp,
                                                        clip=self.settings.grad_clip, gan=gan))
        self.step += 1

    def _detail_due(self) -> bool:
        s = self.settings
        return not s.train_pair or (self.step >= s.detail_start and self.step % s.detail_every == 0)

    def _reconstruct(self, faces: torch.Tensor, side: Side) -> torch.Tensor:
        """The pair model's rendering of ``faces`` as ``side`` (the detail stage's input; no gradients)."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.no_grad(), torch.autocast(faces.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model(faces.contiguous(memory_format=fmt), side).face

    def _first_update(self) -> None:
        """The first compiled update; from then on the compiled one, or the eager one if it cannot compile."""
        before = self._optimizer_steps()
        try:
            self._compiled_update()
            self._update_fn = self._compiled_update
        except Exception as exc:  # noqa: BLE001 - compiler failures have many types; memory errors do not fall back
            if _is_oom(exc):
                raise
            log.warning("the compiled optimizer step failed (%s: %s); using the eager one", type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
            self._update_fn = self._update
            # the compiled code runs in pieces: if the optimizer's piece ran before the failure, this step's
            # update is in (the EMA may lag one step); else do it eagerly
            if self._optimizer_steps() == before:
                self._update()

    def _optimizer_steps(self) -> float:
        """The optimizer's step count summed over its parameters (a sync; read once, at the first update)."""
        return sum(float(st["step"]) for st in self.optimizer.state.values() if "step" in st)

    def _update(self) -> None:
        """Clip the gradients, step the optimizer, follow with the EMA weights (compiled with the step on GPUs)."""
        if self.settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip, foreach=True)
        self.optimizer.step()
        if self.ema is not None:
            ema_p: list[torch.Tensor] = list(self.ema.parameters())
            torch._foreach_lerp_(ema_p, [p.detach() for p in self.model.parameters()], 1 - self.settings.ema)

    def _flush(self, bar_: Any, t_mark: float, examples: int) -> None:
        """Read the pending losses (one sync); raise :class:`NonFiniteLoss` if any is not finite; log them."""
        if not self.pending and not self.pending_detail:
            return
        pair, detail = self._read_pending(self.pending), self._read_pending(self.pending_detail)
        self.pending, self.pending_detail = [], []
        dt = max(1e-9, time.perf_counter() - t_mark)
        self.examples_per_s = examples / dt
        record: dict[str, Any] = {"step": self.step, "time": time.time()}
        if pair is not None:
            la, lb = pair
            self.last_losses = (la, lb)
            self.history.append((self.step, la, lb))
            del self.history[:-HISTORY_KEEP]
            record.update(loss_a=la, loss_b=lb, lr=self.lr())
        if detail is not None:
            self.last_detail_losses = detail
            record.update(detail_a=detail[0], detail_b=detail[1])
        if self.is_main:
            record.update(examples_per_s=self.examples_per_s, batch_size=self.batch_size * self.world,
                          micro_batch=self.micro_batch, world_size=self.world,
                          memory_mb=memory_bytes(self.device) / 2**20)
            self.metrics.write(record)
            self.events.scalars(self.step, {k: v for k, v in record.items() if k not in ("step", "time")}, "train/")
        bar_.update(self.step - bar_.n)
        shown = [f"loss A {pair[0]:.4f} B {pair[1]:.4f}"] if pair is not None else []
        if detail is not None:
            shown.append(f"detail A {detail[0]:.4f} B {detail[1]:.4f}")
        bar_.set_postfix_str(" ".join(shown) + f" {self.examples_per_s:.1f} ex/s")

    def _read_pending(self, pending: list[torch.Tensor]) -> tuple[float, float] | None:
        """The mean of pending (2,) losses over the steps and ranks; :class:`NonFiniteLoss` if any is not
        finite; ``None`` when there are none."""
        if not pending:
            return None
        vals = mean_across(torch.stack(pending), self.dist).cpu()  # (k, 2), averaged over the ranks
        if not bool(torch.isfinite(vals).all()):
            raise NonFiniteLoss(f"loss is not finite by step {self.step}")
        a, b = (float(v) for v in vals.mean(0))
        return a, b

    def _check_finite(self) -> None:
        """Raise :class:`NonFiniteLoss` if any weight is not finite (one sync)."""
        params = list(self.model.parameters()) + (list(self.detail.stage.parameters()) if self.detail else [])
        if not bool(torch.stack([p.detach().isfinite().all() for p in params]).all()):
            raise NonFiniteLoss(f"weights are not finite at step {self.step}")

    def save(self) -> Path | None:
        """Write a checkpoint of the current state (not if the weights are not finite)."""
        self._check_finite()
        trainer = {"lr_scale": self.lr_scale, "history": [list(h) for h in self.history],
                   "samplers": {"A": self.sampler_a.state(), "B": self.sampler_b.state()},
                   "elapsed": self.elapsed_before + (time.perf_counter() - self._t_start),
                   "batch_size": self.batch_size, "micro_batch": self.micro_batch, "rollbacks": self.rollbacks,
                   "amp": self.amp}
        path: Path | None = None
        if self.is_main:  # with several processes rank 0 writes; the weights are the same on every rank
            req = ck.SaveRequest(step=self.step, weights=self.model.state_dict(),
                                 optimizer={**ck.optimizer_tensors(self.optimizer, self.model), **ck.rng_tensors()},
                                 ema=self.ema.state_dict() if self.ema is not None else None, trainer=trainer,
                                 settings=dataclasses.asdict(self.settings), detail=self._detail_save())
            path = ck.save_checkpoint(self.paths.model_dir, self.preset, self.config, self.face_type, req,
                                      keep_last=self.settings.keep_last, snapshot_every=self.settings.snapshot_every)
            try:
                plot_losses(self.history, self.paths.logs_dir / "loss.png")
            except OSError as exc:
                log.warning("could not write the loss plot (%s)", exc.strerror or exc)
        barrier(self.dist)  # the other ranks may read this checkpoint (rollback) only once it exists
        if path is None:
            path = mck.latest_checkpoint(self.paths.model_dir)
        self.last_saved_step, self.last_saved_path = self.step, path
        return path

    def _detail_save(self) -> ck.DetailSave | None:
        if self.detail is None:
            return None
        stage = self.detail.stage
        return ck.DetailSave(config=stage.config, weights=stage.state_dict(),
                             optimizer=ck.optimizer_tensors(self.detail.optimizer, stage))

    def rollback(self, reason: str) -> None:
        """Return to the newest checkpoint and halve the learning rate."""
        self.rollbacks += 1
        self.pending, self.pending_detail = [], []
        self.optimizer.zero_grad(set_to_none=True)
        if self.rollbacks > MAX_ROLLBACKS:
            raise ChangelingError(f"{reason}; {MAX_ROLLBACKS} rollbacks did not help (learning rate now "
                                  f"{self.lr():.2e}); lower --lr or check the faces")
        latest = mck.latest_checkpoint(self.paths.model_dir)
        if latest is None:
            raise ChangelingError(f"{reason} and there is no checkpoint to roll back to")
        scale = self.lr_scale
        bad_step = self.step
        now = time.perf_counter()
        elapsed = self.elapsed_before + (now - self._t_start)  # training time counts the lost steps too
        self._restore(mck.read_checkpoint(latest), first=False)
        self.elapsed_before, self._t_start = elapsed, now
        self.lr_scale = min(scale, self.lr_scale) * 0.5
        log.warning("%s at step %d: rolled back to step %d and lowered the learning rate to %.2e", reason, bad_step,
                    self.step, self.lr())

    def preview(self) -> None:
        """Write the preview grid and timelapse frame, then call the frame preview hook (errors there are logged)."""
        if not self.is_main:
            return
        model = self.inference_model()
        try:
            grid = write_preview(model, self.preview_a, self.preview_b, self.paths.previews_dir, self.step,
                                 *self._preview_stored())
            if self.events.active:
                from PIL import Image

                with Image.open(grid) as img:
                    self.events.image("preview", np.asarray(img.convert("RGB")), self.step)
        except OSError as exc:
            log.warning("could not write the preview of step %d (%s)", self.step, exc.strerror or exc)
        if self.frame_preview is not None:
            try:
                self.frame_preview(model, self.step, self.paths.previews_dir)
            except Exception:  # noqa: BLE001 - a preview must never stop training
                log.exception("frame preview failed at step %d", self.step)

    def _stop_reason(self, t0: float, until: int | None) -> StopReason | None:
        """Why to stop now, if at all; with several processes the ranks agree (any rank's reason stops all)."""
        reason = self._local_stop_reason(t0, until)
        if self.dist is None:
            return reason
        code = agree_max(_STOP_CODES.index(reason) if reason else 0, self.dist, self.device)
        return _STOP_CODES[code] if code else None

    def _local_stop_reason(self, t0: float, until: int | None) -> StopReason | None:
        s = self.settings
        if until is not None and self.step >= until:
            return "steps_done"
        if s.max_steps and self.step >= s.max_steps:
            return "max_steps"
        if s.max_time and BUDGET_CLOCK() - t0 >= s.max_time:
            return "max_time"
        if self.stop_flag.is_set() or self.should_stop():
            return "interrupted"
        return None

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
                                 *self.last_losses, self.examples_per_s, _clock(BUDGET_CLOCK() - t0))
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


_STOP_CODES: tuple[StopReason | None, ...] = (None, "steps_done", "max_steps", "max_time", "interrupted")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


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
            result = _train_locked(project, paths, settings, init_from, progress, frame_preview, should_stop, ctx)
        barrier(ctx)  # leave together: a rank tearing the group down while another still talks to it aborts
        return result
    finally:
        shutdown(ctx)


def _train_locked(project: Project, paths: TrainPaths, settings: TrainSettings, init_from: Path | None,
                  progress: bool, frame_preview: FramePreview | None, should_stop: Callable[[], bool] | None,
                  ctx: DistContext | None) -> TrainResult:
    latest = mck.latest_checkpoint(paths.model_dir)
    if init_from is not None and latest is not None:
        raise UserError("--init-from only starts a new model, and this project already has one; move its "
                        "model folder away first", paths.model_dir)
    if latest is not None:
        info, state = mck.read_state(latest)
        config = check_same_model(paths.model_dir, info, state, settings, None)
    else:
        config = model_config_for(settings)
    faces_a = load_faces(project.faces_dir("A"), config.resolution, side="A", progress=progress)
    faces_b = load_faces(project.faces_dir("B"), config.resolution, side="B", progress=progress)
    check_pair(faces_a, faces_b, project.faces_dir("B"))
    stored = min(faces_a.stored_size, faces_b.stored_size)
    detail_config = resolve_detail(settings, config, stored, info.detail if latest is not None else None,
                                   paths.model_dir)
    detail = None
    if detail_config is not None:
        size = detail_config.output_resolution
        detail = (detail_config, load_faces(project.faces_dir("A"), size, side="A", progress=progress),
                  load_faces(project.faces_dir("B"), size, side="B", progress=progress))
    trainer = Trainer(faces_a, faces_b, paths, settings, init_from=init_from, progress=progress,
                      frame_preview=frame_preview, should_stop=should_stop, dist_ctx=ctx, detail=detail)
    return trainer.run()


def resolve_detail(settings: TrainSettings, config: ModelConfig, stored_size: int, saved: DetailConfig | None,
                   model_dir: Path) -> DetailConfig | None:
    """The detail stage to train: the saved model's when it has one (its scale cannot change, nor can it be
    removed), else what the ``detail`` setting asks for; :class:`UserError` saying what does not fit."""
    choice = settings.detail
    if saved is not None:
        if saved.resolution != config.resolution:
            raise UserError(f"the detail stage takes {saved.resolution} px faces but the pair model makes "
                            f"{config.resolution} px faces", model_dir)
        if choice == "off":
            raise UserError(f"this model has a {saved.scale}x detail stage, which stays once made; set detail to "
                            f"auto or {saved.scale}x (--detail-every N trains it less often)", model_dir)
        if choice != "auto" and int(choice.rstrip("x")) != saved.scale:
            raise UserError(f"this model has a {saved.scale}x detail stage and its scale cannot change on resume "
                            f"(asked for {choice}); set detail to auto or {saved.scale}x", model_dir)
        if saved.output_resolution > stored_size:
            raise UserError(f"the {saved.scale}x detail stage learns from faces of {saved.output_resolution} px but "
                            f"these faces are stored at {stored_size} px; extract with --size "
                            f"{saved.output_resolution}", model_dir)
        return saved
    try:
        return detail_config_for(choice, config.resolution, stored_size)
    except ValueError as exc:
        raise UserError(str(exc), model_dir) from None
