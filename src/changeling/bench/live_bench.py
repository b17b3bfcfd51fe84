"""Live benchmark: a synthetic clip (a public-domain portrait under a seeded head motion, ``changeling.synth``)
played in real time through ``changeling live`` exactly as a user runs it (tracking on the fly, model, colour,
mask, paste, watermark), with the latency instrument's figures: output frames/s, p50/p95 latency from each
frame's due time to its output, the drop rate, and the time per stage.

The model is a randomly initialised preset (its speed does not depend on its weights), saved into a throwaway
project with a few faces; no sink is attached by default (a virtual camera's ``send`` is a copy), ``file=True``
adds the H.264 file output."""

from __future__ import annotations

import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from changeling.config import ConvertSettings, LiveSettings, Settings, TrainSettings
from changeling.live import LiveOptions, LiveReport, live
from changeling.models.registry import Dims, create_model, preset_config
from changeling.project import Project, init_project
from changeling.synth import make_clip, make_motion
from changeling.train import checkpoint as ck
from changeling.train.testfaces import make_faces

log = logging.getLogger(__name__)


def bench_project(root: Path, preset: str = "tiny", dims: Dims | None = None) -> Project:
    """A project ``root/proj`` holding an untrained ``preset`` model (``dims`` over the preset's) and two faces
    a side (the tests use it too, with a smaller model)."""
    project = init_project(root / "proj")
    config = preset_config(preset, dims)
    for side in ("A", "B"):
        make_faces(project.faces_dir(side), side, 2, size=config.resolution)
    torch.manual_seed(0)
    ck.save_checkpoint(project.model_dir, preset, config, "whole",
                       ck.SaveRequest(step=1, weights=create_model(preset, config).state_dict(), settings={}))
    return project


def bench_live(width: int, height: int, device: str = "cpu", *, seconds: float = 10.0, fps: float = 30.0,
               repeats: int = 3, preset: str = "tiny", resolution: int = 0, file: bool = False) -> dict[str, Any]:
    """Play a ``width`` x ``height`` clip of ``seconds`` at ``fps`` through live mode ``repeats`` times; the
    median run's figures (by output frames/s) and every run's rate."""
    with tempfile.TemporaryDirectory(prefix="changeling-live-bench-") as tmp:
        root = Path(tmp)
        project = bench_project(root, preset, Dims(resolution=resolution))
        clip = make_clip("astronaut", make_motion(seed=7, duration=seconds), (width, height), fps,
                         root / "clip.mp4", audio=False)
        settings = Settings(train=TrainSettings(preset=preset))  # type: ignore[arg-type]
        runs: list[LiveReport] = []
        for i in range(max(1, repeats)):
            options = LiveOptions(input=clip.path, output=root / f"out{i}.mp4" if file else None)
            runs.append(live(project, ConvertSettings(device=device), LiveSettings(), options,  # type: ignore[arg-type]
                             project_settings=settings))
            log.info("live %dx%d run %d: %s", width, height, i + 1, runs[-1].summary())
    best = sorted(runs, key=lambda r: r.fps)[len(runs) // 2]
    return {**best.to_dict(), "runs": [round(r.fps, 1) for r in runs],
            "p95_runs": [round(r.latency_ms(0.95), 1) for r in runs],
            "drop_runs": [round(r.drop_rate, 3) for r in runs],
            "median_p95_ms": round(statistics.median(r.latency_ms(0.95) for r in runs), 1),
            "stages_ms": best.stage_ms(), "input": f"{width}x{height}@{fps:g}", "seconds": seconds,
            "preset": preset if not resolution else f"{preset}{resolution}", "file_output": file}
