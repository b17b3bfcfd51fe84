"""Settings for ``changeling convert``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from changeling.config.core import settings_field


@dataclass(frozen=True)
class ConvertSettings:
    color: Literal["none", "mean", "rct", "hist", "mkl", "seamless"] = settings_field(
        "rct", help="colour matching of the swapped face to the frame")
    mask: Literal["predicted", "hull", "extended", "combined", "occlusion"] = settings_field(
        "combined", help="which mask blends the face in (occlusion: the hull minus what covers the face, from "
        "`changeling masks train`; combined: the decoder's mask cut to the hull, and to the occlusion mask "
        "when the project has a segmenter)")
    erode: int = settings_field(0, min=-64, max=64, help="shrink (>0) or grow (<0) the mask, pixels of the crop")
    blur: int = settings_field(8, min=0, max=128, help="feather width of the mask edge, pixels of the crop")
    smooth: float = settings_field(0.5, min=0.0, max=1.0,
                                   help="temporal smoothing of landmarks against jitter (0: off, 1: strongest)")
    sharpen: float = settings_field(0.0, min=0.0, max=3.0, help="unsharp-mask amount on the swapped face")
    face_scale: float = settings_field(1.0, min=0.5, max=1.5, help="scale of the pasted face")
    which: Literal["all", "largest", "reference"] = settings_field("largest", help="which faces are swapped")
    direction: Literal["a2b", "b2a"] = settings_field("a2b", help="A's faces become B (a2b) or the reverse")
    # At most 32: coarser chroma quantisation wipes out the watermark (a 320x240 output loses it from CRF 34, a
    # 640x360 one from 40, a 720p one from 42; docs/decisions.md), and every output must stay verifiable.
    crf: int = settings_field(18, min=0, max=32, help="H.264 quality (lower is better, larger files; at most 32, "
                              "where the provenance watermark still survives)")
    batch_size: int = settings_field(8, min=1, max=4096, help="faces per batch through the model")
    device: Literal["auto", "cpu", "cuda"] = settings_field("auto", help="where the model runs")
    image_format: Literal["png", "jpg"] = settings_field("png", help="file type of --writer images")
    workers: int = settings_field(0, min=0, max=64, help="threads that paste faces back (0: one per CPU core, "
                                  "at most 8)")
