"""The demo's measured choices: its preset and, per preset, the training settings its project's toml carries."""

from __future__ import annotations

from typing import Any

from changeling.vocab import PresetName

# The training choices the quality A/B picked for the demo's 10 CPU minutes, per preset (bench/RESULTS.md,
# "Quality per minute of training" and "Pixels where they matter"): for tiny a learning rate 4x the general
# default, annealed over the last 30% of the run (at a constant 2e-3 the final view SSIM lands anywhere in
# 0.47-0.53; annealed it stays near the top of that range, with lower landmark error and jitter), and no detail
# stage, which after 1000 steps sharpened the face (detail 0.50 -> 0.70) at a cost in SSIM (-0.04) and jitter
# (+22%). The tighter `full` face type sharpened it too (detail 0.55 -> 0.70) but cost SSIM and jitter.
# For lite-liae ("The swap's crossing gap"): the same, with 8 faces per side (more, smaller steps: +0.034 view
# SSIM over 16 per side, one run) and weight EMA 0.995 (+0.016 view SSIM, slightly less jitter, one run).
# The demo's preset: lite-liae, with its settings below and convert's temporal face blending, beat plain tiny on
# view SSIM (+0.02 to +0.12), detail (+0.06 to +0.07) and jitter (-8% to -17%) at three seeds, and on landmark
# error at two of them (bench/RESULTS.md, "Flicker").
DEMO_PRESET: PresetName = "lite-liae"
DEMO_TRAIN: dict[str, dict[str, Any]] = {
    "tiny": {"lr": 2e-3, "detail": "off", "lr_anneal": 0.3},
    "lite-liae": {"lr": 2e-3, "detail": "off", "lr_anneal": 0.3, "batch_size": 8, "ema": 0.995},
}
