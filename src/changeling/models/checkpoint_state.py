"""A checkpoint's ``state.json``: what it holds, its digest, and the checks of every field read from it.

``state.json`` holds the preset, the model config, the face type, the step, the training settings, the trainer
state (learning-rate scale, loss history, sampler positions) and the SHA-256 of every other file of the
checkpoint, plus a digest of itself. The digest is no secret (anyone can recompute it), so every field is checked
as untrusted before it is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from changeling.config.core import apply
from changeling.config.train import TrainSettings
from changeling.errors import UserError
from changeling.fileio import open_regular
from changeling.models.detail import DetailConfig
from changeling.models.pair import ModelConfig
from changeling.models.registry import PRESETS

FORMAT = 1
KIND = "changeling-model"
STATE = "state.json"
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
EMA = "ema.safetensors"
DETAIL = "detail.safetensors"  # the detail stage's weights, when the model has one
DETAIL_OPTIMIZER = "detail_optimizer.safetensors"
MAX_STATE_BYTES = 50_000_000
MAX_STAGES = 16  # encoder or decoder stages of a model config (the presets have 3 or 4)
MAX_HISTORY = 10_000_000  # loss-history entries in the trainer state


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as state.json lists each file's."""
    return hashlib.sha256(data).hexdigest()


def state_digest(state: dict[str, Any]) -> str:
    """The digest state.json carries of itself (every key but ``digest``, as canonical JSON)."""
    body = {k: v for k, v in state.items() if k != "digest"}
    return sha256_hex(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())


def parse_state(path: Path) -> dict[str, Any]:
    """The ``state.json`` of checkpoint folder ``path``, its digest and every field checked; :class:`UserError`
    naming the file otherwise."""
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
    if state.get("digest") != state_digest(state):
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
    parse_detail(state, config, state_path)
    return state


def parse_detail(state: dict[str, Any], config: ModelConfig, state_path: Path) -> DetailConfig | None:
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

