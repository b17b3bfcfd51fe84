"""One vocabulary: every set of choices is declared once (changeling.vocab); each registry's names equal its set
(checked when the registry is imported); the settings, the CLI and the registries all take the same names."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import typing
from typing import Any, get_args

import numpy as np
import pytest

from changeling import vocab
from changeling.cli import build_parser
from changeling.config import ConvertSettings, ExtractSettings, MasksSettings, TrainSettings
from changeling.vocab import RegistryMismatch, check_registry


def _registries() -> list[tuple[str, Any, tuple[str, ...]]]:
    from changeling.convert import writers
    from changeling.convert.color import COLOR_MATCHERS
    from changeling.convert.maskops import MASK_RECIPES
    from changeling.detect.template import FACE_TYPE_SQUARES
    from changeling.device import DEVICE_RESOLVERS
    from changeling.models.registry import PRESETS

    return [("colour mode", COLOR_MATCHERS, vocab.COLOR_MODES), ("mask", MASK_RECIPES, vocab.MASK_KINDS),
            ("preset", PRESETS, vocab.PRESET_NAMES), ("face type", FACE_TYPE_SQUARES, vocab.FACE_TYPES),
            ("device", DEVICE_RESOLVERS, vocab.DEVICES), ("writer", writers.WRITERS, vocab.WRITER_KINDS),
            ("image format", writers._MIME, vocab.IMAGE_FORMATS)]


def test_every_registry_holds_exactly_its_choices() -> None:
    for what, registry, choices in _registries():
        assert sorted(registry) == sorted(choices), what


# (settings class, field, the choice set its Literal must be)
SETTINGS_CHOICES = [
    (ConvertSettings, "color", vocab.COLOR_MODES), (ConvertSettings, "mask", vocab.MASK_KINDS),
    (ConvertSettings, "device", vocab.DEVICES), (ConvertSettings, "image_format", vocab.IMAGE_FORMATS),
    (ExtractSettings, "face_type", vocab.FACE_TYPES), (ExtractSettings, "device", vocab.DEVICES),
    (TrainSettings, "preset", vocab.PRESET_NAMES), (TrainSettings, "device", vocab.DEVICES),
    (MasksSettings, "device", vocab.DEVICES),
]


@pytest.mark.parametrize(("cls", "name", "choices"), SETTINGS_CHOICES, ids=lambda v: getattr(v, "__name__", v))
def test_settings_take_the_vocabulary(cls: type, name: str, choices: tuple[str, ...]) -> None:
    assert get_args(typing.get_type_hints(cls)[name]) == choices


def _choices_of(argv: list[str], dest: str) -> tuple[str, ...]:
    """The choices the real parser gives the option stored in ``dest`` of the subcommand ``argv``."""
    parser = build_parser()
    for name in argv:
        sub = next(a for a in parser._actions if a.dest in ("command", "masks_command", "faces_command"))
        parser = sub.choices[name]  # type: ignore[index]
    action = next(a for a in parser._actions if a.dest == dest)
    return tuple(action.choices or ())


@pytest.mark.parametrize(("argv", "dest", "choices"), [
    (["convert"], "writer", vocab.WRITER_KINDS), (["convert"], "color", vocab.COLOR_MODES),
    (["extract"], "side", vocab.SIDES), (["masks", "import"], "side", vocab.SIDES),
    (["faces", "sort"], "by", vocab.SORT_KEYS), (["demo"], "preset", vocab.PRESET_NAMES),
    (["demo"], "device", vocab.DEVICES), (["evaluate"], "device", vocab.DEVICES),
    (["bench"], "device", ("cpu", "cuda")),
])
def test_cli_choices_come_from_the_vocabulary(argv: list[str], dest: str, choices: tuple[str, ...]) -> None:
    assert _choices_of(argv, dest) == choices


def test_every_name_works_in_its_registry() -> None:
    """No choice a user can give ends in a bare ValueError from the code that serves it."""
    from changeling.convert.color import color_matcher
    from changeling.convert.maskops import MaskBuilder
    from changeling.convert.writers import writer_factory
    from changeling.detect.align import face_square
    from changeling.device import resolve_device
    from changeling.errors import UserError
    from changeling.models.registry import preset_config

    face = np.full((16, 16, 3), 0.5, np.float32)
    for mode in vocab.COLOR_MODES:
        assert color_matcher(mode)(face, face, np.ones((16, 16), np.float32)).shape == face.shape
    points = np.asarray([[8 + 6 * np.cos(t), 8 + 7 * np.sin(t)] for t in np.linspace(0, 6.2, 478)], np.float32)
    visible = np.ones((32, 32), np.float32)
    for kind in vocab.MASK_KINDS:
        mask = MaskBuilder(kind)(visible, points * 2, 32, visible)
        assert mask.shape == (32, 32) and mask.max() > 0, kind
    for name in vocab.PRESET_NAMES:
        assert preset_config(name).resolution > 0
    for face_type in vocab.FACE_TYPES:
        assert face_square(face_type)[2] > 0
    for kind in vocab.WRITER_KINDS:
        assert callable(writer_factory(kind))
    import torch

    for device in vocab.DEVICES:
        if device == "cuda" and not torch.cuda.is_available():
            with pytest.raises(UserError):  # a clear message, not a bug report
                resolve_device(device)
        else:
            assert resolve_device(device).type in ("cpu", "cuda")


# (registry module, its choice set in changeling.vocab)
MODULES = [("changeling.convert.color", "COLOR_MODES"), ("changeling.convert.maskops", "MASK_KINDS"),
           ("changeling.models.registry", "PRESET_NAMES"), ("changeling.detect.align", "FACE_TYPES"),
           ("changeling.device", "DEVICES"), ("changeling.convert.writers", "WRITER_KINDS"),
           ("changeling.convert.writers", "IMAGE_FORMATS")]


@pytest.mark.parametrize(("module", "choices"), MODULES)
def test_a_name_without_an_implementation_fails_the_import(monkeypatch: pytest.MonkeyPatch, module: str,
                                                          choices: str) -> None:
    monkeypatch.setattr(vocab, choices, (*getattr(vocab, choices), "novel"))
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)  # a second copy; the imported module is left alone
    with pytest.raises(RegistryMismatch, match="chosen but not implemented: novel"):
        spec.loader.exec_module(fresh)


def test_check_registry_names_what_differs() -> None:
    check_registry("thing", {"a": 1, "b": 2}, ("b", "a"))  # order does not matter
    with pytest.raises(RegistryMismatch, match=r"thing registry .*not implemented: c.*not in changeling.vocab: z"):
        check_registry("thing", {"a": 1, "z": 2}, ("a", "c"))


def test_the_vocabulary_and_the_settings_load_nothing_heavy() -> None:
    """The settings and the CLI import the vocabulary at every start: no torch, numpy or OpenCV."""
    code = ("import sys, changeling.vocab, changeling.config; "
            "print(sorted(m for m in ('torch', 'numpy', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
