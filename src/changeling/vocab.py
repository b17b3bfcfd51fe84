"""The names a user chooses from, each set declared once.

Each set is a ``Literal`` type (for the settings dataclasses and the signatures that take the name) and the
tuple of its names (for the CLI's choices and the UI's drop-downs). The registry that serves a set, the dict
from name to implementation, calls :func:`check_registry` when it is imported, so a name added here without an
implementation there (or the reverse) fails that import, and with it the test suite, instead of reaching a user
as a bare ``ValueError`` the CLI reports as a bug.

This module needs only the standard library, so the settings and the CLI load it without torch or OpenCV.
The registries: colour modes ``convert.color.COLOR_MATCHERS``, masks ``convert.maskops.MASK_RECIPES``,
presets ``models.registry.PRESETS``, face types ``detect.template.FACE_TYPE_SQUARES`` (checked in
``detect.align``), detectors ``detect.registry.DETECTORS``, devices ``device.DEVICE_RESOLVERS``, writers ``convert.writers.WRITERS`` and image formats
(their MIME types in ``convert.writers``). Sides and sort keys have no registry (a branch each where used).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

ColorMode = Literal["none", "mean", "rct", "hist", "mkl", "seamless"]
MaskKind = Literal["predicted", "hull", "extended", "combined", "occlusion"]
PresetName = Literal["tiny", "lite", "lite-liae", "original", "df", "liae"]
FaceType = Literal["half", "mid", "full", "whole", "head"]  # from the tightest crop to the widest
DeviceChoice = Literal["auto", "cpu", "cuda"]
DetectorName = Literal["short", "full"]  # BlazeFace short and full range
WriterKind = Literal["video", "images", "patches"]
ImageFormat = Literal["png", "jpg"]
Side = Literal["A", "B"]
SortKey = Literal["identity", "blur", "yaw", "size"]  # `faces sort --by`

COLOR_MODES: tuple[ColorMode, ...] = get_args(ColorMode)
MASK_KINDS: tuple[MaskKind, ...] = get_args(MaskKind)
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)
FACE_TYPES: tuple[FaceType, ...] = get_args(FaceType)
DEVICES: tuple[DeviceChoice, ...] = get_args(DeviceChoice)
DETECTOR_NAMES: tuple[DetectorName, ...] = get_args(DetectorName)
WRITER_KINDS: tuple[WriterKind, ...] = get_args(WriterKind)
IMAGE_FORMATS: tuple[ImageFormat, ...] = get_args(ImageFormat)
SIDES: tuple[Side, ...] = get_args(Side)
SORT_KEYS: tuple[SortKey, ...] = get_args(SortKey)


class RegistryMismatch(RuntimeError):
    """A registry's names differ from the choice set it serves: a programming error, raised at import."""


def check_registry(what: str, registry: Iterable[str], choices: tuple[str, ...]) -> None:
    """Raise :class:`RegistryMismatch` unless ``registry``'s names are exactly ``choices`` (order aside).

    ``what`` names the set in the message, e.g. ``"colour mode"``."""
    names = set(registry)
    missing = [c for c in choices if c not in names]
    extra = sorted(names - set(choices))
    if missing or extra:
        parts = ([f"chosen but not implemented: {', '.join(missing)}"] if missing else []) + (
            [f"implemented but not in changeling.vocab: {', '.join(extra)}"] if extra else [])
        raise RegistryMismatch(f"{what} registry does not match its choices; " + "; ".join(parts))


__all__ = ["COLOR_MODES", "DETECTOR_NAMES", "DEVICES", "FACE_TYPES", "IMAGE_FORMATS", "MASK_KINDS",
           "PRESET_NAMES", "SIDES", "SORT_KEYS", "WRITER_KINDS", "ColorMode", "DetectorName", "DeviceChoice",
           "FaceType", "ImageFormat", "MaskKind", "PresetName", "RegistryMismatch", "Side", "SortKey", "WriterKind",
           "check_registry"]
