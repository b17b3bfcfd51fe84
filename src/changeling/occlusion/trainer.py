"""Training the occlusion segmenter on the project's own faces (``changeling masks train``).

Each step draws a batch of faces (a share of them hand-corrected, when there are corrections), pastes random
occluders on them (:mod:`changeling.occlusion.paste`) and fits the network to "outline minus what was pasted"
(a corrected face's target is its correction minus what was pasted) with binary cross-entropy plus a soft Dice
term, counted inside the face outline grown a little (everywhere for a corrected face; see :func:`loss_regions`). A step's randomness depends only on (seed, step), so a resumed run draws what the uninterrupted one
would have. The file is saved every ``save_every`` steps, at the end, when ``max_time`` is up and on Ctrl+C.

A first run trains to ``max_steps``; a later run on a finished segmenter fine-tunes it for ``finetune_steps``
more (on the corrections made since, when there are any); an interrupted run continues to where it was going.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from changeling.config import MasksSettings
from changeling.device import resolve_device
from changeling.errors import InterruptedRun, UserError
from changeling.faces.facefile import FaceFileError, FaceMeta, list_faces, read_face
from changeling.occlusion.corrections import read_correction
from changeling.occlusion.net import OcclusionNet, SegmenterConfig
from changeling.occlusion.paste import make_bank, paste_occluders
from changeling.occlusion.project import outline_mask, source_id
from changeling.occlusion.store import (
    MAX_SOURCES,
    SegmenterInfo,
    check_fits,
    read_segmenter,
    segmenter_path,
    write_segmenter,
)
from changeling.progress import bar
from changeling.project import Project
from changeling.schedule import anneal_factor

log = logging.getLogger(__name__)

WARMUP_STEPS = 50


@dataclass
class TrainingFaces:
    """The faces a segmenter learns from, at its resolution S."""

    images: np.ndarray  # (N, S, S, 3) uint8
    targets: np.ndarray  # (N, S, S) float32: the outline, or the hand correction
    regions: np.ndarray  # (N, S, S) float32: where the loss counts (the outline grown; everywhere if corrected)
    corrected: np.ndarray  # (K,) int64 indices of hand-corrected faces
    face_type: str
    face_size: int
    sources: list[str]


@dataclass
class SegmenterReport:
    path: Path
    step: int  # where the segmenter is now
    steps_run: int  # steps of this run
    seconds: float  # this run's training time (loading excluded)
    faces: int
    corrections: int
    loss: float  # mean loss over this run's last 50 steps
    stopped: str  # "done", "time" or "interrupted"


def _spread(paths: list[Path], most: int) -> list[Path]:
    if len(paths) <= most:
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, most).round().astype(int)]


def _load_one(path: Path, faces_dir: Path, size: int) -> tuple[np.ndarray, np.ndarray, bool, FaceMeta] | None:
    try:
        image, meta = read_face(path)
    except FaceFileError as exc:
        log.warning("skipping %s", exc)
        return None
    interp = cv2.INTER_AREA if size < meta.size else cv2.INTER_CUBIC
    img = np.asarray(cv2.resize(image, (size, size), interpolation=interp), np.uint8)
    corrected = read_correction(faces_dir, meta)
    if corrected is not None:
        target = np.asarray(cv2.resize(corrected, (size, size), interpolation=cv2.INTER_AREA), np.float32)
    else:
        target = outline_mask(meta, size)
    return img, target, corrected is not None, meta


def load_training_faces(project: Project, size: int, max_faces: int = 4000, *, progress: bool = True,
                        workers: int = 4) -> TrainingFaces:
    """Both sides' faces at ``size`` px with their targets; :class:`UserError` when there are fewer than 2 or
    they differ in face type or size."""
    jobs = [(p, project.faces_dir(side)) for side in ("A", "B")
            for p in _spread(list_faces(project.faces_dir(side)), max_faces)]
    if len(jobs) < 2:
        raise UserError(f"needs at least 2 faces to train the occlusion segmenter, found {len(jobs)}; extract "
                        "faces first", project.root / "faces")
    images: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    corrected: list[int] = []
    sources: set[str] = set()
    first: tuple[Path, FaceMeta] | None = None
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            bar(total=len(jobs), desc="loading faces", unit="face", enabled=progress) as pbar:
        for (path, _dir), got in zip(jobs, pool.map(lambda j: _load_one(j[0], j[1], size), jobs), strict=True):
            pbar.update(1)
            if got is None:
                continue
            img, target, is_corrected, meta = got
            if first is None:
                first = (path, meta)
            elif (meta.face_type, meta.size) != (first[1].face_type, first[1].size):
                raise UserError(f"this face is {meta.face_type!r} at {meta.size} px but {first[0].name} is "
                                f"{first[1].face_type!r} at {first[1].size} px; all faces of a project must share "
                                "one face type and size", path)
            if is_corrected:
                corrected.append(len(images))
            images.append(img)
            targets.append(target)
            sources.add(source_id(meta))
    if len(images) < 2 or first is None:
        raise UserError(f"needs at least 2 readable faces, found {len(images)}", project.root / "faces")
    stacked = np.stack(targets)
    return TrainingFaces(np.stack(images), stacked, loss_regions(stacked, corrected), np.asarray(corrected, np.int64),
                         first[1].face_type, first[1].size, sorted(sources)[:MAX_SOURCES])


def loss_regions(targets: np.ndarray, corrected: list[int], grow: float = 0.06) -> np.ndarray:
    """(N, S, S) float32 where each face's loss counts: its outline grown by ``grow`` of the crop. Every user of
    the mask cuts it to the face outline, which the landmarks give, so the network need not learn the outline's
    shape again and spends itself on what covers the face. A hand-corrected face counts everywhere."""
    size = targets.shape[-1]
    r = max(1, int(round(grow * size)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = np.stack([np.asarray(cv2.dilate((t > 0.5).astype(np.uint8), kernel), np.float32) for t in targets])
    out[corrected] = 1.0
    return out


def optimizer_tensors(optimizer: torch.optim.Adam, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Adam's moments and step counts keyed by parameter name."""
    out = {}
    for name, p in net.named_parameters():
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{name}.{key}"] = value
    return out


def load_optimizer_tensors(optimizer: torch.optim.Adam, net: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`optimizer_tensors` saved (parameters missing from it start fresh)."""
    for name, p in net.named_parameters():
        state = {k: tensors[f"{name}.{k}"].to(p.device) for k in ("step", "exp_avg", "exp_avg_sq")
                 if f"{name}.{k}" in tensors}
        if len(state) == 3 and state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape:
            state["step"] = state["step"].to("cpu", torch.float32)
            optimizer.state[p] = state


def learning_rate(step: int, start: int, target: int, lr: float, time_done: float = 0.0) -> float:
    """Warm up over ``WARMUP_STEPS`` from ``start``, then a cosine down to 5% at ``target`` or when the run's
    time is up, whichever comes first (``time_done``: the share of ``max_time`` spent), so a run cut short by
    the clock still ends annealed."""
    k = step - start
    if k < WARMUP_STEPS:
        return lr * (k + 1) / WARMUP_STEPS
    t = min(1.0, max((k - WARMUP_STEPS) / max(1, target - start - WARMUP_STEPS), time_done))
    return lr * anneal_factor(t, 1.0)  # the pair trainer's cosine, over the whole run


def segmenter_loss(logits: torch.Tensor, target: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice of the visible face inside ``where``; (B, 1, S, S) logits, targets
    and regions in [0, 1] (no region: everywhere)."""
    w = torch.ones_like(target) if where is None else where
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum() / w.sum().clamp_min(1)
    p = torch.sigmoid(logits) * w
    t = target * w
    inter = (p * t).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + t.sum(dim=(1, 2, 3)) + 1)
    return bce + dice.mean()


def _batch(faces: TrainingFaces, rng: np.random.Generator, size: int, share: float) -> np.ndarray:
    """(size,) face indices, drawn with replacement; ``share`` of them hand-corrected when there are any."""
    k = int(round(share * size)) if len(faces.corrected) else 0
    picked = [rng.choice(faces.corrected, k)] if k else []
    picked.append(rng.integers(0, len(faces.images), size - k))
    return np.concatenate(picked)


def _jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-face brightness and contrast jitter of (B, 3, S, S) in [0, 1]."""
    b = x.shape[0]
    contrast = 1 + 0.25 * (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1)
    bright = 0.08 * (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp(0, 1)


def _stored_where_default(settings: MasksSettings, stored: SegmenterConfig) -> SegmenterConfig:
    """The shape to train: the settings' resolution and width, each replaced by the stored segmenter's where the
    setting is at its default."""
    defaults = MasksSettings()
    return SegmenterConfig(
        resolution=stored.resolution if settings.resolution == defaults.resolution else settings.resolution,
        width=stored.width if settings.width == defaults.width else settings.width)


def train_segmenter(project: Project, settings: MasksSettings, *, fresh: bool = False, progress: bool = True,
                    on_step: Callable[[int, float], None] | None = None) -> SegmenterReport:
    """Train (or resume, or fine-tune) the project's occlusion segmenter; see the module's docstring."""
    device = resolve_device(settings.device)
    path = segmenter_path(project.root)
    config = SegmenterConfig(resolution=settings.resolution, width=settings.width)
    loaded = read_segmenter(path) if path.exists() and not fresh else None
    if loaded is not None and loaded.info.config != config:
        # a segmenter trained under older defaults goes on in its own shape: only a field set away from its
        # default (a flag or the project's [masks]) is held against the file
        kept = _stored_where_default(settings, loaded.info.config)
        if kept != config:
            log.info("keeping the segmenter's shape (%d px, width %d); `changeling masks train --fresh` trains "
                     "one of the current default shape", kept.resolution, kept.width)
            config = kept
    faces = load_training_faces(project, config.resolution, settings.max_faces, progress=progress)
    with torch.random.fork_rng(devices=[]):  # a seeded start that leaves the caller's RNG alone
        torch.manual_seed(settings.seed)
        net = OcclusionNet(config)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    step, start, target, seconds_before = 0, 0, settings.max_steps, 0.0
    if loaded is not None:
        check_fits(loaded.info, path, face_type=faces.face_type, face_size=faces.face_size, sources=faces.sources,
                   resolution=config.resolution)
        if loaded.info.config != config:
            raise UserError(f"the segmenter has width {loaded.info.config.width}, not {config.width}; train a new "
                            "one with `changeling masks train --fresh`", path)
        net.load_state_dict(loaded.weights)
        load_optimizer_tensors(optimizer, net, loaded.optimizer)
        step, seconds_before = loaded.info.step, loaded.info.seconds
        run_start = loaded.info.settings.get("run_start", 0)
        if step < loaded.info.target_step and isinstance(run_start, int):
            start, target = run_start, loaded.info.target_step  # an interrupted run goes on to its target
            log.info("resuming the segmenter at step %d of %d", step, target)
        else:
            start, target = step, step + settings.finetune_steps
            log.info("fine-tuning the segmenter from step %d to %d (%d hand-corrected faces)", step, target,
                     len(faces.corrected))
    net = net.to(device).to(memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    # (channels-last convolutions train 2-3x faster on the CPU)
    for state in optimizer.state.values():
        for k, v in state.items():
            if k != "step" and isinstance(v, torch.Tensor):
                state[k] = v.to(device)
    bank = make_bank(settings.seed)

    def save(at: int, spent: float) -> None:
        info = SegmenterInfo(config=config, face_type=faces.face_type, face_size=faces.face_size,
                             sources=faces.sources, step=at, target_step=target, corrections=len(faces.corrected),
                             seconds=round(seconds_before + spent, 2),
                             settings={"run_start": start, "lr": settings.lr, "batch_size": settings.batch_size,
                                       "seed": settings.seed})
        write_segmenter(path, info, {k: v for k, v in net.state_dict().items()}, optimizer_tensors(optimizer, net))

    losses: list[float] = []
    first_step, stopped = step, "done"
    t0 = time.perf_counter()
    pbar = bar(total=max(target - step, 0), desc="segmenter", unit="step", enabled=progress)
    try:
        while step < target:
            time_done = (time.perf_counter() - t0) / settings.max_time if settings.max_time else 0.0
            if time_done >= 1.0:
                stopped = "time"
                break
            rng = np.random.default_rng([settings.seed, step])
            g = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
            idx = _batch(faces, rng, settings.batch_size, settings.correction_share)
            images, targets, where = paste_occluders(faces.images[idx], faces.targets[idx], rng, bank,
                                                     regions=faces.regions[idx])
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
            x = _jitter(x, g).to(device).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(targets)[:, None].to(device)
            w = torch.from_numpy(where)[:, None].to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, start, target, settings.lr, time_done)
            loss = segmenter_loss(net(x), y, w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"the segmenter's loss is {value} at step {step}; lower --lr")
            losses.append(value)
            step += 1
            pbar.update(1)
            pbar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            if on_step is not None:
                on_step(step, value)
            if step % settings.save_every == 0 and step < target:
                save(step, time.perf_counter() - t0)
    except KeyboardInterrupt:
        save(step, time.perf_counter() - t0)
        pbar.close()
        raise InterruptedRun(f"stopped at step {step}; saved {path}; run `changeling masks train` again to go on "
                             f"to step {target}") from None
    spent = time.perf_counter() - t0
    save(step, spent)
    pbar.close()
    return SegmenterReport(path=path, step=step, steps_run=step - first_step, seconds=spent, faces=len(faces.images),
                           corrections=len(faces.corrected),
                           loss=float(np.mean(losses[-50:])) if losses else float("nan"), stopped=stopped)
