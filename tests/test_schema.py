"""Settings as the spine: every field describes itself once (label, help, range), the CLI's flags are generated
from it, and settings_to_argv is their exact inverse through the real parser."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from changeling.cli import build_parser
from changeling.config import ConvertSettings, ExtractSettings, MasksSettings, TrainSettings, with_flags
from changeling.config.core import parse_duration
from changeling.config.schema import SettingSpec, flags_of, format_value, setting_specs, settings_to_argv

# each settings class and a command line of the command whose flags it makes
COMMANDS: dict[type, list[str]] = {
    ExtractSettings: ["extract", "--side", "A", "clip.mp4"], TrainSettings: ["train"],
    ConvertSettings: ["convert", "clip.mp4"], MasksSettings: ["masks", "train"],
}


def test_every_field_has_a_label_and_a_help_text() -> None:
    for cls in COMMANDS:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("label") and f.metadata.get("help"), (cls.__name__, f.name)


def _values(spec: SettingSpec) -> list[Any]:
    """Values of a field worth a round trip: the ends of its range, awkward fractions, every choice."""
    if spec.kind == "bool":
        return [not spec.default, spec.default]
    if spec.kind == "choice":
        return [c for c in spec.choices if c != spec.default] + [spec.default]
    lo = spec.min if spec.min is not None else -1000
    if spec.kind == "int":
        hi = int(spec.max) if spec.max is not None else int(lo) + 123_457
        return [int(hi), int(lo), (int(lo) + hi) // 3, spec.default]
    if spec.kind == "duration":
        return [5400.25, 1 / 3, 0.001, 1e-7, 123_456_789.5, 0.0]
    hi = spec.max if spec.max is not None else lo + 1e6 + 0.1
    return [hi, lo, lo + (hi - lo) / 3, lo + (hi - lo) * 1e-7, spec.default]


def _cases(cls: type) -> list[Any]:
    """Settings of ``cls`` that together give every field each of its :func:`_values`."""
    specs = setting_specs(cls)
    values = {s.name: _values(s) for s in specs}
    n = max(len(v) for v in values.values())
    return [cls(**{name: v[i % len(v)] for name, v in values.items()}) for i in range(n)]


@pytest.mark.parametrize("cls", list(COMMANDS), ids=lambda c: c.__name__)
def test_settings_to_argv_round_trips_every_field_through_the_cli(cls: type) -> None:
    parser = build_parser()
    seen: dict[str, set[Any]] = {f.name: set() for f in dataclasses.fields(cls)}
    for settings in _cases(cls):
        with_flags(cls(), dataclasses.asdict(settings))  # every value is one the settings accept
        argv = settings_to_argv(settings)
        ns = parser.parse_args([*COMMANDS[cls], *argv])
        flags = flags_of(ns, cls)
        assert all(v is not None for v in flags.values()), flags  # every field was given
        assert with_flags(cls(), flags) == settings, argv
        for f in seen:
            seen[f].add(getattr(settings, f))
    assert all(len(v) >= 2 for v in seen.values()), seen  # no field travelled only at its default


def test_settings_to_argv_sets_only_the_fields_asked_for() -> None:
    settings = ConvertSettings(color="hist", erode=-3, smooth=0.25, sharpen=1.5)
    argv = settings_to_argv(settings, ["erode", "color"])
    assert argv == ["--erode=-3", "--color=hist"]  # in the order asked; a negative number is not an option
    ns = build_parser().parse_args(["convert", "clip.mp4", *argv])
    base = ConvertSettings(smooth=0.75)  # e.g. the project's changeling.toml
    assert with_flags(base, flags_of(ns, ConvertSettings)) == dataclasses.replace(base, color="hist", erode=-3)
    assert settings_to_argv(TrainSettings(flip=False, train_pair=True), ["flip", "train_pair"]) == \
        ["--no-flip", "--train-pair"]
    with pytest.raises(KeyError):
        settings_to_argv(settings, ["no_such_field"])


DURATION = next(s for s in setting_specs(TrainSettings) if s.name == "max_time")
FLOAT = next(s for s in setting_specs(TrainSettings) if s.name == "lr")


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_durations_and_floats_are_written_exactly(value: float) -> None:
    assert parse_duration(format_value(DURATION, value)) == value
    assert float(format_value(FLOAT, value)) == value


def test_help_shows_the_default_and_the_range() -> None:
    helptext = build_parser()._subparsers._group_actions[0].choices["convert"].format_help()  # type: ignore[union-attr]
    assert "(default: 0; -64 to 64)" in helptext  # --erode
    assert "(default: 0.5; 0 to 1)" in helptext  # --smooth
