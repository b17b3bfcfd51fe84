"""Checkpoint folders, and reading one back verified: weights and optimizer state in safetensors, everything
else in JSON (:mod:`changeling.models.checkpoint_state`); never pickle.

A model folder holds ``checkpoints/step-NNNNNNNN/`` (the last few) and ``snapshots/step-NNNNNNNN/`` (one every
K steps, kept). Each checkpoint folder holds ``weights.safetensors``, ``optimizer.safetensors`` (optimizer
moments and RNG states), ``ema.safetensors`` when weight EMA is on, the detail stage's files when the model has
one, and ``state.json``. A changed or damaged file is refused with its name before any tensor in it is used.
Training writes checkpoints (:mod:`changeling.train.checkpoint`); inference loads them with
:func:`changeling.models.load.load_for_inference`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as st_load_file

from changeling.errors import UserError
from changeling.fileio import check_regular, open_regular
from changeling.models.checkpoint_state import (
    DETAIL,
    DETAIL_OPTIMIZER,
    EMA,
    OPTIMIZER,
    STATE,
    WEIGHTS,
    parse_detail,
    parse_state,
)
from changeling.models.detail import DetailConfig, DetailStage
from changeling.models.pair import ModelConfig
from changeling.models.registry import create_model

# What a file may weigh beyond the tensors the model config implies: the safetensors header (names, dtypes,
# shapes and offsets as JSON, well under 512 bytes a tensor) and, in the optimizer file, the RNG states (5 kB
# for the CPU, 16 bytes per CUDA device) and one step counter per parameter.
HEADER_BYTES = 64 << 10
HEADER_BYTES_PER_TENSOR = 512
RNG_BYTES = 1 << 20
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



def step_name(step: int) -> str:
    return f"step-{step:08d}"



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
    state = parse_state(path)
    config = ModelConfig.from_dict(state["model_config"])
    info = ModelInfo(preset=state["preset"], config=config, face_type=state["face_type"], step=state["step"],
                     path=path, ema=EMA in state["files"], detail=parse_detail(state, config, path / STATE))
    return info, state


def read_checkpoint(path: Path, *, with_optimizer: bool = True) -> LoadedCheckpoint:
    """Read and verify one checkpoint folder; :class:`UserError` names the file that is wrong."""
    path = Path(path)
    refuse_pickle(path)
    if not path.is_dir():
        raise UserError("no such checkpoint folder", path)
    state = parse_state(path)
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
    detail_config = parse_detail(state, config, path / STATE)
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


