"""Settings for ``changeling convert``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from changeling.config.core import settings_field
from changeling.vocab import ColorMode, DeviceChoice, ImageFormat, MaskKind

FACE_SMOOTH_MAX = 0.95  # the face blending's strongest setting: 1 would freeze a still face for ever


@dataclass(frozen=True)
class ConvertSettings:
    color: ColorMode = settings_field("rct", label="colour matching",
                                      help="colour matching of the swapped face to the frame")
    mask: MaskKind = settings_field(
        "combined", label="mask", help="which mask blends the face in (occlusion: the hull minus what covers the "
        "face, from `changeling masks train`; combined: the decoder's mask cut to the hull, and to the occlusion "
        "mask when the project has a segmenter)")
    erode: int = settings_field(0, min=-64, max=64, label="mask erode (px)",
                                help="shrink (>0) or grow (<0) the mask, pixels of the crop")
    blur: int = settings_field(8, min=0, max=128, label="mask blur (px)",
                               help="feather width of the mask edge, pixels of the crop")
    smooth: float = settings_field(0.5, min=0.0, max=1.0, step=0.05, label="temporal smoothing",
                                   help="temporal smoothing of landmarks against jitter (0: off, 1: strongest)")
    # 0.7: on the paired benchmark's held-out motion it cut the view jitter by ~25% and kept SSIM (bench/RESULTS.md)
    face_smooth: float = settings_field(0.7, min=0.0, max=FACE_SMOOTH_MAX, step=0.05, label="face smoothing",
                                        help="blend each swapped face with the last frame's where the source face "
                                        "did not move, against flicker (0: off)")
    sharpen: float = settings_field(0.0, min=0.0, max=3.0, step=0.1, label="sharpen",
                                    help="unsharp-mask amount on the swapped face")
    face_scale: float = settings_field(1.0, min=0.5, max=1.5, step=0.01, label="face scale",
                                       help="scale of the pasted face")
    which: Literal["all", "largest", "reference"] = settings_field("largest", label="faces swapped",
                                                                   help="which faces are swapped")
    direction: Literal["a2b", "b2a"] = settings_field("a2b", label="direction",
                                                      help="A's faces become B (a2b) or the reverse")
    # At most 32: coarser chroma quantisation wipes out the watermark (a 320x240 output loses it from CRF 34, a
    # 640x360 one from 40, a 720p one from 42; docs/decisions.md), and every output must stay verifiable.
    crf: int = settings_field(18, min=0, max=32, label="video quality (CRF)",
                              help="H.264 quality (lower is better, larger files; at most 32, where the provenance "
                              "watermark still survives)")
    batch_size: int = settings_field(8, min=1, max=4096, label="batch size", help="faces per batch through the model")
    device: DeviceChoice = settings_field("auto", label="device", help="where the model runs")
    image_format: ImageFormat = settings_field("png", label="image format", help="file type of --writer images")
    workers: int = settings_field(0, min=0, max=64, label="paste threads",
                                  help="threads that paste faces back (0: one per CPU core, at most 8)")
