"""Settings for ``changeling masks train``: the occlusion segmenter (see :mod:`changeling.occlusion`).
``resolution`` and ``width`` shape the network; setting either away from the stored segmenter's needs ``--fresh``
(a field left at its default keeps the stored segmenter's)."""

from __future__ import annotations

from dataclasses import dataclass

from changeling.config.core import settings_field
from changeling.vocab import DeviceChoice


@dataclass(frozen=True)
class MasksSettings:
    resolution: int = settings_field(64, min=32, max=512, label="segmenter resolution (px)",
                                     help="segmenter input size in pixels, a multiple of 16 (128 gives finer edges "
                                     "but trains about 3x slower)")
    width: int = settings_field(16, min=4, max=64, label="segmenter width",
                                help="channels of the segmenter's first stage (16 measured best in 4 minutes: "
                                "bench/RESULTS.md)")
    max_steps: int = settings_field(8000, min=1, label="steps",
                                    help="steps of a first training (the time limit usually ends it first)")
    finetune_steps: int = settings_field(300, min=1, label="fine-tuning steps",
                                         help="steps each later `masks train` adds (fine-tuning on corrections)")
    max_time: float = settings_field(240.0, min=0.0, duration=True, label="time limit",
                                     help="stop this run after this long, saving first: 90s, 4m (0: no limit)")
    batch_size: int = settings_field(16, min=1, max=1024, label="batch size", help="faces per step")
    lr: float = settings_field(2e-3, min=0.0, max=1.0, label="learning rate", help="Adam learning rate")
    correction_share: float = settings_field(0.25, min=0.0, max=1.0, step=0.05, label="share of corrections",
                                             help="share of each batch drawn from hand-corrected faces, when any")
    max_faces: int = settings_field(4000, min=2, label="faces per side",
                                    help="faces loaded per side at most (an even spread)")
    save_every: int = settings_field(250, min=1, label="save every (steps)", help="steps between saves")
    device: DeviceChoice = settings_field("auto", label="device", help="training device")
    seed: int = settings_field(0, min=0, label="seed", help="random seed")
