"""Settings: defaults (dataclasses), then ``changeling.toml`` in the project folder, then flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from changeling.config.convert import ConvertSettings
from changeling.config.core import apply, read_toml
from changeling.config.extract import ExtractSettings
from changeling.config.live import LiveSettings
from changeling.config.masks import MasksSettings
from changeling.config.train import TrainSettings
from changeling.errors import UserError

SECTIONS: dict[str, type] = {"extract": ExtractSettings, "train": TrainSettings, "convert": ConvertSettings,
                             "masks": MasksSettings, "live": LiveSettings}


@dataclass(frozen=True)
class Settings:
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    convert: ConvertSettings = field(default_factory=ConvertSettings)
    masks: MasksSettings = field(default_factory=MasksSettings)
    live: LiveSettings = field(default_factory=LiveSettings)


def load_settings(toml_path: Path | None) -> Settings:
    """Defaults overlaid with a TOML file (if it exists). Unknown sections or keys are errors."""
    data: dict[str, Any] = read_toml(toml_path) if toml_path is not None else {}
    out: dict[str, Any] = {}
    for name, value in data.items():
        shown = name if name.isprintable() else repr(name)  # a message stays one line, without escapes
        if name not in SECTIONS:
            raise UserError(f"unknown section [{shown}]; known sections are: {', '.join(SECTIONS)}", toml_path)
        if not isinstance(value, dict):
            raise UserError(f"{name!r} must be a table [{shown}] of settings", toml_path)
    for name, cls in SECTIONS.items():
        out[name] = apply(cls(), data.get(name, {}), f"{toml_path} [{name}]")
    return Settings(**out)


def with_flags(section: Any, flags: dict[str, Any]) -> Any:
    """Apply command-line flags (``None`` means 'not given') to one section's settings."""
    given = {k: v for k, v in flags.items() if v is not None}
    return apply(section, given, "command line")


__all__ = ["ConvertSettings", "ExtractSettings", "LiveSettings", "MasksSettings", "Settings", "TrainSettings", "load_settings", "with_flags"]
