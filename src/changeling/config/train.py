"""Settings for ``changeling train``. Everything may change on resume except the model shape: ``preset``,
``resolution``, ``e_dims``, ``ae_dims`` and ``d_dims`` (0 keeps the preset's value, or the saved model's), and
the detail stage's scale once the model has one (a model without one may gain one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from changeling.config.core import settings_field
from changeling.vocab import DeviceChoice, PresetName


@dataclass(frozen=True)
class TrainSettings:
    preset: PresetName = settings_field("tiny", label="preset", help="model preset")
    resolution: int = settings_field(0, min=0, max=1024, label="resolution (px)",
                                     help="model resolution in pixels, a multiple of 16 (of 32 for lite; 0: the preset's)")
    e_dims: int = settings_field(0, min=0, max=4096, label="encoder width", help="encoder width (0: the preset's)")
    ae_dims: int = settings_field(0, min=0, max=16384, label="bottleneck width",
                                  help="dense bottleneck width (0: the preset's)")
    d_dims: int = settings_field(0, min=0, max=4096, label="decoder width", help="decoder width (0: the preset's)")
    detail: Literal["auto", "off", "2x", "4x"] = settings_field(
        "auto", label="detail stage", help="detail stage: a per-person network that enlarges the model's faces 2x "
        "or 4x with that person's own detail (auto: 4x up to 64 px models, 2x up to 128 px, as far as the extracted "
        "faces allow)")
    detail_every: int = settings_field(1, min=1, max=1000, label="detail every (steps)",
                                       help="pair-model steps per detail-stage step")
    detail_start: int = settings_field(0, min=0, label="detail start (step)",
                                       help="steps before the detail stage starts training")
    detail_gan: float = settings_field(0.0, min=0.0, max=1.0, label="detail GAN weight",
                                       help="weight of the detail stage's adversarial term against a critic of the "
                                       "person's real faces (0: off); sharper skin and hair, a little less "
                                       "faithful to the exact pixels")
    train_pair: bool = settings_field(True, label="train the pair model", help="train the pair model (off: only the "
                                      "detail stage trains; the pair model stays as it is)")
    batch_size: int = settings_field(0, min=0, max=65536, label="batch size",
                                     help="faces per side per step; 0 fits it to memory")
    lr: float = settings_field(5e-4, min=0.0, max=1.0, label="learning rate", help="AdamW learning rate")
    lr_anneal: float = settings_field(0.0, min=0.0, max=1.0, step=0.05, label="learning-rate anneal",
                                      help="share at the end of a run with a step or time limit over which the "
                                      "learning rate falls to 5% (0: constant); the model then settles at the limit instead of "
                                      "ending wherever the last steps threw it")
    max_steps: int = settings_field(0, min=0, label="step limit",
                                    help="stop after this many steps in total (0: no limit)")
    max_time: float = settings_field(0.0, min=0.0, duration=True, label="time limit",
                                     help="stop after this long in this run: 90s, 10m, 1h30m (0: no limit)")
    save_every: int = settings_field(200, min=1, label="save every (steps)", help="steps between checkpoints")
    keep_last: int = settings_field(3, min=1, max=1000, label="checkpoints kept", help="checkpoints kept")
    snapshot_every: int = settings_field(5000, min=0, label="snapshot every (steps)",
                                         help="steps between kept snapshots (0: none)")
    preview_every: int = settings_field(100, min=0, label="preview every (steps)",
                                        help="steps between preview grids (0: none)")
    ema: float = settings_field(0.0, min=0.0, max=0.99999, label="EMA decay", help="weight EMA decay (0: off)")
    ssim_weight: float = settings_field(1.0, min=0.0, label="DSSIM weight", help="weight of the DSSIM loss")
    l1_weight: float = settings_field(1.0, min=0.0, label="L1 weight", help="weight of the L1 loss")
    mse_weight: float = settings_field(0.0, min=0.0, label="MSE weight", help="weight of the MSE loss")
    mask_weight: float = settings_field(1.0, min=0.0, label="mask weight", help="weight of the mask loss")
    background_weight: float = settings_field(0.0, min=0.0, max=1.0, step=0.05, label="background weight",
                                              help="weight of the pixels outside the face mask")
    eyes_weight: float = settings_field(3.0, min=0.0, label="eyes weight", help="extra weight on the eye regions")
    mouth_weight: float = settings_field(2.0, min=0.0, label="mouth weight", help="extra weight on the mouth region")
    rotation: float = settings_field(10.0, min=0.0, max=180.0, label="rotation (degrees)",
                                     help="augmentation: max rotation in degrees")
    scale: float = settings_field(0.05, min=0.0, max=0.5, step=0.01, label="scale",
                                  help="augmentation: max relative scale change")
    shift: float = settings_field(0.05, min=0.0, max=0.5, step=0.01, label="shift",
                                  help="augmentation: max shift, fraction of size")
    flip: bool = settings_field(True, label="flip", help="augmentation: random horizontal flip")
    warp: float = settings_field(1.0, min=0.0, max=4.0, step=0.1, label="warp",
                                 help="augmentation: strength of the input warp")
    color_jitter: float = settings_field(0.05, min=0.0, max=1.0, step=0.01, label="colour jitter",
                                         help="augmentation: LAB colour jitter")
    grad_clip: float = settings_field(1.0, min=0.0, label="gradient clip", help="gradient norm clip (0: off)")
    device: DeviceChoice = settings_field("auto", label="device", help="training device")
    precision: Literal["auto", "bf16", "fp32"] = settings_field("auto", label="precision", help="autocast precision")
    compile: Literal["auto", "on", "off"] = settings_field("auto", label="torch.compile",
                                                          help="torch.compile (auto: on for CUDA)")
    seed: int = settings_field(0, min=0, label="seed", help="random seed")
