"""Checkpoints: weights and optimizer state in safetensors, everything else in JSON; never pickle.

A model folder holds ``checkpoints/step-NNNNNNNN/`` (the last few) and ``snapshots/step-NNNNNNNN/`` (one every
K steps, kept). Each checkpoint folder holds ``weights.safetensors``, ``optimizer.safetensors`` (optimizer
moments and RNG states), ``ema.safetensors`` when weight EMA is on, and ``state.json`` (preset, model config,
face type, step, settings, trainer state, and the SHA-256 of every other file plus a digest of itself). A
folder is written under a temporary name and renamed when complete, so a crash never leaves a half-written
checkpoint under a final name; a changed or damaged file is refused with its name, and nothing is overwritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save

from changeling.config.core import apply
from changeling.config.train import TrainSettings
from changeling.errors import UserError
from changeling.fileio import check_regular, fsync_dir, open_regular
from changeling.models.detail import DetailConfig, DetailedModel, DetailStage
from changeling.models.pair import ModelConfig
from changeling.models.registry import PRESETS, create_model

log = logging.getLogger(__name__)

FORMAT = 1
KIND = "changeling-model"
STATE = "state.json"
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
EMA = "ema.safetensors"
DETAIL = "detail.safetensors"  # the detail stage's weights, when the model has one
DETAIL_OPTIMIZER = "detail_optimizer.safetensors"
MAX_STATE_BYTES = 50_000_000
# What a file may weigh beyond the tensors the model config implies: the safetensors header (names, dtypes,
# shapes and offsets as JSON, well under 512 bytes a tensor) and, in the optimizer file, the RNG states (5 kB
# for the CPU, 16 bytes per CUDA device) and one step counter per parameter.
HEADER_BYTES = 64 << 10
HEADER_BYTES_PER_TENSOR = 512
RNG_BYTES = 1 << 20
MAX_STAGES = 16  # encoder or decoder stages of a model config (the presets have 3 or 4)
MAX_HISTORY = 10_000_000  # loss-history entries in the trainer state
HASH_CHUNK = 1 << 20
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint says about its model."""

    preset: str
    config: ModelConfig
    face_type: str  # face type of the faces it was trained on
    step: int
    path: Path  # the checkpoint folder
    ema: bool = False  # whether EMA weights were stored (inference uses them)
    detail: DetailConfig | None = None  # the detail stage, when the model has one

    @property
    def resolution(self) -> int:
        return self.config.resolution


@dataclass
class DetailTensors:
    """A detail stage's weights and optimizer state as read from a checkpoint."""

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]


@dataclass
class LoadedCheckpoint:
    """A verified checkpoint read into memory (tensors on the CPU)."""

    info: ModelInfo
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    state: dict[str, Any]  # the whole state.json
    detail: DetailTensors | None = None


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


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(state: dict[str, Any]) -> str:
    body = {k: v for k, v in state.items() if k != "digest"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())


def _tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def list_checkpoints(model_dir: Path, *, snapshots: bool = False) -> list[tuple[int, Path]]:
    """Complete checkpoint folders as (step, path), oldest first (temporary folders are ignored)."""
    root = Path(model_dir) / ("snapshots" if snapshots else "checkpoints")
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(model_dir: Path) -> Path | None:
    """The newest checkpoint folder of a model folder, or ``None`` for a new model."""
    found = list_checkpoints(model_dir)
    return found[-1][1] if found else None


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
        "files": {k: _sha256(v) for k, v in blobs.items()}, "torch": torch.__version__,
    }
    if req.detail is not None:
        state["detail_config"] = req.detail.config.to_dict()
    state["digest"] = _digest(state)
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


def refuse_pickle(path: Path) -> None:
    """Raise :class:`UserError` if ``path`` is a pickle-based PyTorch file rather than a model folder."""
    path = Path(path)
    if path.is_file() and (path.suffix.lower() in PICKLE_SUFFIXES or _looks_like_pickle(path)):
        raise UserError("is a pickle-based PyTorch file; changeling never loads pickles (they can run code). "
                        "Give a changeling model folder (safetensors)", path)


def _looks_like_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"  # pickle protocol 2+, or torch.save's zip


def _parse_state(path: Path) -> dict[str, Any]:
    state_path = path / STATE
    if not state_path.is_file():
        raise UserError("checkpoint has no state.json (incomplete or not a changeling checkpoint)", state_path)
    try:
        with open_regular(state_path) as fh:
            raw = fh.read(MAX_STATE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", state_path) from None
    if len(raw) > MAX_STATE_BYTES:
        raise UserError("state.json is too large", state_path)
    try:
        state = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"damaged state.json ({exc})", state_path) from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise UserError("not a changeling checkpoint state", state_path)
    if state.get("format") != FORMAT:
        raise UserError(f"checkpoint format {state.get('format')!r} is not {FORMAT}", state_path)
    if state.get("digest") != _digest(state):
        raise UserError("state.json was changed or damaged (its digest does not match)", state_path)
    # The digest is no secret (anyone can recompute it), so every field read below is checked as untrusted.
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError("bad step in state.json", state_path)
    if state.get("preset") not in PRESETS:
        raise UserError(f"unknown preset {str(state.get('preset'))[:40]!r} in state.json", state_path)
    if not isinstance(state.get("face_type"), str):
        raise UserError("bad face_type in state.json", state_path)
    files = state.get("files")
    if not isinstance(files, dict) or WEIGHTS not in files or not all(
            k in (WEIGHTS, OPTIMIZER, EMA, DETAIL, DETAIL_OPTIMIZER) and isinstance(v, str) and _SHA256.match(v) for k, v in files.items()):
        raise UserError("bad file list in state.json", state_path)
    try:
        config = ModelConfig.from_dict(state.get("model_config"))
        if max(len(config.enc_channels), len(config.dec_channels)) > MAX_STAGES:
            raise ValueError(f"more than {MAX_STAGES} encoder or decoder stages")
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad model config in state.json: {exc}", state_path) from None
    try:
        _check_trainer(state.get("trainer", {}))
    except ValueError as exc:
        raise UserError(f"bad trainer state in state.json: {exc}", state_path) from None
    _check_settings(state.get("settings", {}), state_path)
    _parse_detail(state, config, state_path)
    return state


def _parse_detail(state: dict[str, Any], config: ModelConfig, state_path: Path) -> DetailConfig | None:
    """The detail stage's config in a parsed state, checked against the pair model's; ``None`` without one."""
    raw = state.get("detail_config")
    has_file = DETAIL in state["files"]
    if raw is None and not has_file:
        return None
    if raw is None or not has_file:
        raise UserError("state.json names a detail stage without its weights, or the reverse", state_path)
    try:
        detail = DetailConfig.from_dict(raw)
    except ValueError as exc:
        raise UserError(f"bad detail stage config in state.json: {exc}", state_path) from None
    if detail.resolution != config.resolution:
        raise UserError(f"the detail stage takes {detail.resolution} px faces but this {config.resolution} px "
                        "model makes faces of another size; it belongs to another model", state_path)
    return detail


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_trainer(trainer: Any) -> None:
    """``ValueError`` unless the trainer state has the types and ranges the trainer relies on when it resumes:
    ``lr_scale`` (> 0), ``elapsed`` seconds, ``history`` as [step, loss A, loss B] rows, and each side's
    sampler position (``n`` faces, ``epoch``, ``offset`` below ``n``). Missing fields take their defaults."""
    if not isinstance(trainer, dict):
        raise ValueError("trainer must be an object")
    _number(trainer, "lr_scale", 1e-30, 1e6)
    _number(trainer, "elapsed", 0.0, 1e12)
    for key in ("batch_size", "micro_batch", "rollbacks"):
        _integer(trainer, key, 0, 1 << 40)
    history = trainer.get("history", [])
    if not isinstance(history, list) or len(history) > MAX_HISTORY:
        raise ValueError(f"history must be a list of at most {MAX_HISTORY} rows")
    for row in history:
        if not isinstance(row, list) or len(row) != 3:
            raise ValueError("history rows must be [step, loss A, loss B]")
        _integer({"step": row[0]}, "step", 0, 1 << 62)
        _number({"loss": row[1]}, "loss", -1e30, 1e30)
        _number({"loss": row[2]}, "loss", -1e30, 1e30)
    samplers = trainer.get("samplers", {})
    if not isinstance(samplers, dict) or not set(samplers) <= {"A", "B"}:
        raise ValueError("samplers must be an object with A and B")
    for side, pos in samplers.items():
        if not isinstance(pos, dict):
            raise ValueError(f"sampler {side} must be an object")
        n = _integer(pos, "n", 1, 1 << 40, required=True)
        _integer(pos, "epoch", 0, 1 << 62, required=True)
        _integer(pos, "offset", 0, n - 1, required=True)


def _integer(d: dict[str, Any], key: str, low: int, high: int, *, required: bool = False) -> int:
    if key not in d and not required:
        return low
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ValueError(f"{key} must be an integer from {low} to {high}, got {str(v)[:40]!r}")
    return v


def _number(d: dict[str, Any], key: str, low: float, high: float) -> None:
    if key not in d:
        return
    v = d[key]
    ok = not isinstance(v, bool) and isinstance(v, (int, float))
    try:
        ok = ok and math.isfinite(float(v)) and low <= float(v) <= high
    except OverflowError:  # an integer of hundreds of digits
        ok = False
    if not ok:
        raise ValueError(f"{key} must be a number from {low:g} to {high:g}, got {str(v)[:40]!r}")


def _check_settings(saved: Any, state_path: Path) -> None:
    """The saved training settings the trainer compares with (and takes model dims from) must be valid settings:
    known keys are checked as a ``changeling.toml`` would be; keys a later version dropped are ignored."""
    if not isinstance(saved, dict):
        raise UserError("bad settings in state.json: must be an object", state_path)
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    apply(TrainSettings(), {k: v for k, v in saved.items() if k in known}, f"{state_path} (saved settings)")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


@dataclass(frozen=True)
class Expected:
    """What a checkpoint's files may hold, from its model config: the parameters' shapes (what the optimizer
    state follows), every tensor of the model's state dict, and the size limit of each file."""

    params: dict[str, tuple[int, ...]]
    tensors: dict[str, tuple[int, ...]]
    limits: dict[str, int]  # file name -> bytes


def expected_files(preset: str, config: ModelConfig, where: Path) -> Expected:
    """The shapes and file-size limits a checkpoint of this model has (the model is built on the ``meta``
    device: shapes only, no memory). :class:`UserError` naming ``where`` when the config cannot be built."""
    try:
        with torch.device("meta"):
            model = create_model(preset, config)
    except (ValueError, TypeError, RuntimeError, OverflowError, MemoryError) as exc:
        raise UserError(f"bad model config in state.json: {str(exc)[:200]}", where) from None
    return _expected(model, WEIGHTS, OPTIMIZER, EMA)


def expected_detail_files(config: DetailConfig) -> Expected:
    """The same for a detail stage's files (its config is checked already: it builds)."""
    with torch.device("meta"):
        stage = DetailStage(config)
    return _expected(stage, DETAIL, DETAIL_OPTIMIZER)


def _expected(model: torch.nn.Module, weights_file: str, optimizer_file: str, *copies: str) -> Expected:
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    state = model.state_dict()
    tensors = {n: tuple(t.shape) for n, t in state.items()}
    model_bytes = sum(t.numel() * t.element_size() for t in state.values())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    headers = HEADER_BYTES + HEADER_BYTES_PER_TENSOR * len(state)
    weights = model_bytes + headers
    optimizer = 2 * param_bytes + 8 * len(params) + RNG_BYTES + HEADER_BYTES + HEADER_BYTES_PER_TENSOR * (
        3 * len(params) + 64)
    return Expected(params, tensors, {weights_file: weights, optimizer_file: optimizer,
                                      **{name: weights for name in copies}})


def _read_tensors(path: Path, expected_sha: str, limit: int) -> dict[str, torch.Tensor]:
    """A safetensors file, loaded only once its size is within ``limit`` and its SHA-256 (streamed, in constant
    memory) matches ``expected_sha``."""
    try:
        size = check_regular(path).st_size
    except FileNotFoundError:
        raise UserError("checkpoint file is missing", path) from None
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", path) from None
    if size > limit:
        raise UserError(f"checkpoint file is {size:,} bytes, more than the {limit:,} its model config allows; "
                        "refusing it, nothing was overwritten", path)
    digest = hashlib.sha256()
    try:
        with open_regular(path) as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", path) from None
    if digest.hexdigest() != expected_sha:
        raise UserError("checkpoint file was changed or damaged (its SHA-256 does not match state.json); "
                        "refusing it, nothing was overwritten", path)
    try:
        return st_load_file(str(path))
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise UserError(f"not a valid safetensors file ({exc})", path) from None


def read_state(path: Path) -> tuple[ModelInfo, dict[str, Any]]:
    """Only the checked ``state.json`` of a checkpoint folder (no tensors read, file checksums not verified)."""
    path = Path(path)
    state = _parse_state(path)
    config = ModelConfig.from_dict(state["model_config"])
    info = ModelInfo(preset=state["preset"], config=config, face_type=state["face_type"], step=state["step"],
                     path=path, ema=EMA in state["files"], detail=_parse_detail(state, config, path / STATE))
    return info, state


def read_checkpoint(path: Path, *, with_optimizer: bool = True) -> LoadedCheckpoint:
    """Read and verify one checkpoint folder; :class:`UserError` names the file that is wrong."""
    path = Path(path)
    refuse_pickle(path)
    if not path.is_dir():
        raise UserError("no such checkpoint folder", path)
    state = _parse_state(path)
    files = state["files"]
    config = ModelConfig.from_dict(state["model_config"])
    expected = expected_files(state["preset"], config, path / STATE)
    weights = _read_tensors(path / WEIGHTS, files[WEIGHTS], expected.limits[WEIGHTS])
    _check_shapes(weights, expected, path / WEIGHTS)
    optim: dict[str, torch.Tensor] = {}
    if with_optimizer and OPTIMIZER in files:
        optim = _read_tensors(path / OPTIMIZER, files[OPTIMIZER], expected.limits[OPTIMIZER])
        _check_optimizer(optim, expected, path / OPTIMIZER)
    ema = None
    if EMA in files:
        ema = _read_tensors(path / EMA, files[EMA], expected.limits[EMA])
        _check_shapes(ema, expected, path / EMA)
    detail_config = _parse_detail(state, config, path / STATE)
    detail = None
    if detail_config is not None:
        dexp = expected_detail_files(detail_config)
        dweights = _read_tensors(path / DETAIL, files[DETAIL], dexp.limits[DETAIL])
        _check_shapes(dweights, dexp, path / DETAIL)
        doptim: dict[str, torch.Tensor] = {}
        if with_optimizer and DETAIL_OPTIMIZER in files:
            doptim = _read_tensors(path / DETAIL_OPTIMIZER, files[DETAIL_OPTIMIZER], dexp.limits[DETAIL_OPTIMIZER])
            _check_optimizer(doptim, dexp, path / DETAIL_OPTIMIZER)
        detail = DetailTensors(dweights, doptim)
    info = ModelInfo(preset=state["preset"], config=config, face_type=state["face_type"], step=state["step"],
                     path=path, ema=ema is not None, detail=detail_config)
    return LoadedCheckpoint(info, weights, optim, ema, state, detail)


def _check_shapes(tensors: Mapping[str, torch.Tensor], expected: Expected, source: Path) -> None:
    """Weights must be the model config's tensors, name for name and shape for shape, before any model is built
    from that config (a hostile config could otherwise ask for more memory than the machine has)."""
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if shapes != expected.tensors:
        odd = sorted(k for k in set(shapes) | set(expected.tensors) if shapes.get(k) != expected.tensors.get(k))
        raise UserError(f"weights do not fit the model config in state.json ({len(odd)} tensors differ, e.g. "
                        f"{odd[0][:80]!r})", source)


def _check_optimizer(tensors: Mapping[str, torch.Tensor], expected: Expected, source: Path) -> None:
    """The optimizer file holds, per parameter, moments of the parameter's shape and scalar counters, plus RNG
    states as byte vectors; anything else is refused before the optimizer or the RNG is handed it."""
    for key, value in tensors.items():
        if key.startswith("rng."):
            if value.dtype != torch.uint8 or value.dim() != 1:
                raise UserError(f"bad RNG state {key!r} ({value.dtype}, shape {tuple(value.shape)})", source)
            continue
        name, _, sub = key[len("optim."):].rpartition(".") if key.startswith("optim.") else ("", "", "")
        shape = expected.params.get(name)
        if shape is None:
            raise UserError(f"optimizer state names an unknown parameter {key[:80]!r}", source)
        if not value.is_floating_point() or (tuple(value.shape) != shape and value.numel() != 1):
            raise UserError(f"optimizer state {key!r} is {value.dtype} {tuple(value.shape)}, expected a float "
                            f"tensor of shape {shape} or a scalar", source)
    cpu = tensors.get("rng.cpu")
    if cpu is not None and cpu.numel() != torch.get_rng_state().numel():
        raise UserError(f"bad CPU RNG state ({cpu.numel()} bytes)", source)


def load_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: Path) -> None:
    """Copy ``weights`` into ``model``; :class:`UserError` if names or shapes differ."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    bad = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        detail = "; ".join(s for s in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(extra[:3])}" if extra else "",
            f"wrong shape for {', '.join(bad[:3])}" if bad else "") if s)
        raise UserError(f"weights do not fit the model ({detail})", source)
    model.load_state_dict(dict(weights))


def find_model_checkpoint(model_dir: Path) -> Path:
    """The newest checkpoint of a model folder (a checkpoint folder itself is accepted too)."""
    model_dir = Path(model_dir)
    refuse_pickle(model_dir)
    if (model_dir / STATE).is_file():
        return model_dir
    latest = latest_checkpoint(model_dir)
    if latest is None:
        if not model_dir.exists():
            raise UserError("no such model folder", model_dir)
        raise UserError("no trained model here (no checkpoints/step-*/ folder); train one first", model_dir)
    return latest


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
