"""Writing checkpoints, and the optimizer and RNG state that make a resumed run exact.

A checkpoint folder is written under a temporary name and renamed when complete, so a crash never leaves a
half-written checkpoint under a final name, and nothing is overwritten. The folder layout, ``state.json`` and the
verified reading are :mod:`changeling.models.checkpoint`'s.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from changeling.errors import UserError
from changeling.fileio import fsync_dir
from changeling.models.checkpoint import latest_checkpoint, list_checkpoints, step_name
from changeling.models.checkpoint_state import (
    DETAIL,
    DETAIL_OPTIMIZER,
    EMA,
    FORMAT,
    KIND,
    OPTIMIZER,
    STATE,
    WEIGHTS,
    sha256_hex,
    state_digest,
)
from changeling.models.detail import DetailConfig
from changeling.models.pair import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class DetailSave:
    """A detail stage to store beside the pair model."""

    config: DetailConfig
    weights: Mapping[str, torch.Tensor]
    optimizer: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class SaveRequest:
    """Everything a checkpoint holds besides the model's identity."""

    step: int
    weights: Mapping[str, torch.Tensor]
    optimizer: Mapping[str, torch.Tensor] = field(default_factory=dict)
    ema: Mapping[str, torch.Tensor] | None = None
    trainer: dict[str, Any] = field(default_factory=dict)  # JSON-able trainer state
    settings: dict[str, Any] = field(default_factory=dict)
    detail: DetailSave | None = None


def _tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_checkpoint(model_dir: Path, preset: str, config: ModelConfig, face_type: str, req: SaveRequest, *,
                    keep_last: int = 3, snapshot_every: int = 0) -> Path:
    """Write one checkpoint atomically, add a snapshot every ``snapshot_every`` steps, keep the last
    ``keep_last`` checkpoints. Returns the checkpoint folder."""
    model_dir = Path(model_dir)
    root = model_dir / "checkpoints"
    name = step_name(req.step)
    tmp = root / f".{name}.tmp-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step-*"):  # left by a crash mid-save (the caller holds the model folder's lock)
            shutil.rmtree(stale, ignore_errors=True)
        final = _write_checkpoint(tmp, root / name, preset, config, face_type, req)
    except OSError as exc:  # disk full, quota, read-only: say so in one line; earlier checkpoints are untouched
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(model_dir)
        kept = f"; the newest saved checkpoint is {previous.name}" if previous is not None else ""
        raise UserError(f"cannot save the checkpoint of step {req.step} ({exc.strerror or exc}){kept}",
                        model_dir) from None
    if snapshot_every and req.step > 0 and req.step % snapshot_every == 0:
        try:
            _snapshot(model_dir, final)
        except OSError as exc:
            log.warning("could not write the snapshot of step %d (%s)", req.step, exc.strerror or exc)
    for _, path in list_checkpoints(model_dir)[:-max(1, keep_last)]:
        _remove(path)
    return final


def _remove(path: Path) -> None:
    """Delete a checkpoint folder: first renamed to a hidden name (ignored by the listing, removed by the next
    save), so a kill during the deletion never leaves a half-deleted folder under a final name."""
    hidden = path.parent / f".{path.name}.del-{os.getpid()}"
    try:
        path.rename(hidden)
    except OSError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


def _write_checkpoint(tmp: Path, final: Path, preset: str, config: ModelConfig, face_type: str,
                      req: SaveRequest) -> Path:
    """Write the files into ``tmp``, then rename it to ``final`` (replacing an older folder of that step)."""
    root = final.parent
    tmp.mkdir()
    blobs = {WEIGHTS: _tensor_bytes(req.weights), OPTIMIZER: _tensor_bytes(req.optimizer)}
    if req.ema is not None:
        blobs[EMA] = _tensor_bytes(req.ema)
    if req.detail is not None:
        if req.detail.config.resolution != config.resolution:
            raise ValueError(f"the detail stage takes {req.detail.config.resolution} px faces, the model makes "
                             f"{config.resolution} px")
        blobs[DETAIL] = _tensor_bytes(req.detail.weights)
        blobs[DETAIL_OPTIMIZER] = _tensor_bytes(req.detail.optimizer)
    state: dict[str, Any] = {
        "format": FORMAT, "kind": KIND, "preset": preset, "model_config": config.to_dict(),
        "face_type": face_type, "step": req.step, "settings": req.settings, "trainer": req.trainer,
        "files": {k: sha256_hex(v) for k, v in blobs.items()}, "torch": torch.__version__,
    }
    if req.detail is not None:
        state["detail_config"] = req.detail.config.to_dict()
    state["digest"] = state_digest(state)
    for fname, data in blobs.items():
        _write(tmp / fname, data)
    _write(tmp / STATE, json.dumps(state, indent=1, allow_nan=False).encode())
    fsync_dir(tmp)
    if final.exists():  # a rollback re-reaching a step: replace the old folder only after the new one is complete
        old = root / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    fsync_dir(root)
    return final


def _snapshot(model_dir: Path, ckpt: Path) -> None:
    snaps = model_dir / "snapshots"
    snaps.mkdir(exist_ok=True)
    final = snaps / ckpt.name
    if final.exists():
        return
    tmp = snaps / f".{ckpt.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in ckpt.iterdir():
        try:
            os.link(f, tmp / f.name)  # same bytes, no copy; files are never modified in place
        except OSError:
            shutil.copy2(f, tmp / f.name)
    tmp.rename(final)


def optimizer_tensors(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as flat tensors named ``optim.<param name>.<key>``."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for p, st in optimizer.state.items():
        for key, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            out[f"optim.{names[id(p)]}.{key}"] = t
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                           tensors: Mapping[str, torch.Tensor], source: Path) -> None:
    """Restore what :func:`optimizer_tensors` saved (hyperparameters come from the new optimizer)."""
    params = dict(model.named_parameters())
    index = {n: i for i, n in enumerate(params)}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        name, _, sub = key[len("optim."):].rpartition(".")
        if name not in index:
            raise UserError(f"optimizer state names an unknown parameter {name!r}", source)
        p = params[name]
        if value.shape == p.shape:  # same memory layout as the parameter (fused kernels walk both storages alike)
            value = torch.empty_like(p, dtype=value.dtype).copy_(value)
        state.setdefault(index[name], {})[sub] = value
    sd = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


def rng_tensors() -> dict[str, torch.Tensor]:
    """Global RNG states (CPU, and each CUDA device) as tensors."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: Mapping[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([c.to(torch.uint8) for c in cuda])
