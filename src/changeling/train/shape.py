"""The model a run trains: its shape from the settings, or the saved model's on resume (which the settings may
not change), and its detail stage. The newest checkpoint is read, verified and checked once, here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeling.config.train import TrainSettings
from changeling.errors import UserError
from changeling.models import checkpoint as mck
from changeling.models.detail import DetailConfig
from changeling.models.pair import ModelConfig
from changeling.models.registry import Dims, preset_config
from changeling.train.detail import detail_config_for

SHAPE_FIELDS = ("preset", "resolution", "e_dims", "ae_dims", "d_dims")


@dataclass(frozen=True)
class ModelPlan:
    """The pair model to train: its config, and on resume the newest checkpoint (read and verified) it starts
    from. Hold it only while the trainer is built: it carries the checkpoint's tensors."""

    config: ModelConfig
    loaded: mck.LoadedCheckpoint | None


def plan_model(model_dir: Path, settings: TrainSettings, latest: Path | None) -> ModelPlan:
    """The model to train in ``model_dir`` whose newest checkpoint is ``latest`` (``None``: a new model);
    :class:`UserError` when the settings ask for another shape than the saved model's, or a file is bad."""
    if latest is None:
        return ModelPlan(model_config_for(settings), None)
    loaded = mck.read_checkpoint(latest)
    return ModelPlan(check_same_model(model_dir, loaded.info, loaded.state, settings), loaded)


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


def check_same_model(model_dir: Path, info: mck.ModelInfo, state: dict[str, Any],
                     settings: TrainSettings) -> ModelConfig:
    """The saved model's config if the settings fit it; else :class:`UserError` saying what differs."""
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
    return info.config


def check_face_type(model_dir: Path, info: mck.ModelInfo, face_type: str) -> None:
    """:class:`UserError` unless the saved model was trained on faces of ``face_type``."""
    if info.face_type != face_type:
        raise UserError(f"this model was trained on {info.face_type!r} faces but the faces now are "
                        f"{face_type!r}; extract with the same face type", model_dir)


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
