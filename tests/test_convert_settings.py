"""Convert takes its settings once: the command line's flags over ``changeling.toml`` for every convert setting,
the other sections (tracking's extract settings, the preset a model must have) read with them, and nothing
read from the toml again while the converter is built."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from changeling.cli import main
from changeling.config import ConvertSettings, ExtractSettings, Settings, TrainSettings
from changeling.convert import color as color_mod
from changeling.convert import convert
from changeling.convert.maskops import MaskBuilder
from changeling.convert.pipeline import all_faces
from changeling.extract import tracking as extract_tracking
from changeling.models.registry import create_model
from changeling.project import Project, init_project
from changeling.train.checkpoint import SaveRequest, save_checkpoint
from changeling.video.testclip import write_clip

TOML = """\
[extract]
detector = "short"
min_score = 0.3

[train]
preset = "tiny"

[convert]
color = "mean"
mask = "extended"
erode = -4
blur = 10
smooth = 0.8
sharpen = 1.0
face_scale = 0.9
which = "largest"
direction = "a2b"
crf = 25
batch_size = 5
device = "cuda"
image_format = "png"
workers = 3
"""
FLAGS = {"color": "mkl", "mask": "hull", "erode": 2, "blur": 3, "smooth": 0.2, "face_smooth": 0.4, "sharpen": 0.5,
         "face_scale": 1.2,
         "which": "all", "direction": "b2a", "crf": 20, "batch_size": 3, "device": "cpu", "image_format": "jpg",
         "workers": 1}


class NoFaces:
    def process(self, frames: list[Any]) -> list[list[Any]]:
        return [[] for _ in frames]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = init_project(tmp_path / "proj")
    project.config_path.write_text(TOML, encoding="utf-8")
    model = create_model("tiny")
    save_checkpoint(project.model_dir, "tiny", model.config, "whole", SaveRequest(step=1, weights=model.state_dict()))
    return project


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Records the settings the converter was built from, the converter, and the tracking settings; fails any
    read of changeling.toml while the converter is being built."""
    record: dict[str, Any] = {"building": False}
    module = sys.modules[convert.__module__]  # where convert() finds build_converter
    real_build, real_settings = module.build_converter, Project.settings

    def build(*args: Any, **kw: Any) -> Any:
        record["building"] = True
        try:
            out = real_build(*args, **kw)
        finally:
            record["building"] = False
        record["settings"], record["converter"] = args[2], out[0]
        return out

    def settings(self: Project) -> Settings:
        if record["building"]:
            raise AssertionError("changeling.toml read again while the converter is built")
        return real_settings(self)

    def tracker_factory(extract: ExtractSettings) -> Any:
        record["tracking"] = extract
        return NoFaces

    monkeypatch.setattr(module, "build_converter", build)
    monkeypatch.setattr(Project, "settings", settings)
    monkeypatch.setattr(extract_tracking, "default_tracker_factory", tracker_factory)
    return record


def test_a_flag_wins_over_the_toml_everywhere_in_convert(project: Project, seen: dict[str, Any],
                                                         tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=6, width=128, height=128, audio=None)
    flags = [arg for name, value in FLAGS.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    assert set(FLAGS) == {f.name for f in dataclasses.fields(ConvertSettings)}  # every convert setting
    code = main(["convert", "-q", "-p", str(project.root), "--track", str(clip), "-o", str(tmp_path / "out.mp4"),
                 *flags])
    assert code == 0
    flagged = ConvertSettings(**FLAGS)  # type: ignore[arg-type]
    assert seen["settings"].convert == flagged
    # the other sections as the toml has them, read with the flags: tracking on the convert's device
    assert seen["tracking"] == dataclasses.replace(project.settings().extract, device="cpu")
    assert seen["tracking"].detector == "short" and seen["settings"].train.preset == "tiny"
    conv = seen["converter"]
    assert conv.color is color_mod.color_matcher("mkl")
    assert conv.masks == MaskBuilder("hull", 2, 3)
    assert (conv.smooth, conv.face_smooth, conv.sharpen, conv.face_scale, conv.batch_size, conv.workers) == \
        (0.2, 0.4, 0.5, 1.2, 3, 1)
    assert conv.select is all_faces
    assert conv.swapper.to == "A" and conv.swapper.device == torch.device("cpu")


def test_library_callers_give_every_section(project: Project, seen: dict[str, Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Given the project's settings, convert reads no changeling.toml at all."""
    monkeypatch.setattr(Project, "settings", lambda self: pytest.fail("changeling.toml read"))
    clip = write_clip(tmp_path / "clip.mp4", frames=4, width=128, height=128, audio=None)
    given = Settings(extract=ExtractSettings(detector="full", min_score=0.7), train=TrainSettings(preset="tiny"))
    report = convert(project, clip, tmp_path / "out.mp4", ConvertSettings(device="cpu", workers=1), track=True,
                     progress=False, project_settings=given)
    assert report.frames == 4
    assert seen["tracking"] == ExtractSettings(detector="full", min_score=0.7, device="cpu")
