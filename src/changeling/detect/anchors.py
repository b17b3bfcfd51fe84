"""SSD anchors for the BlazeFace detectors, generated as MediaPipe's SsdAnchorsCalculator does.

Both detectors use ``fixed_anchor_size``: every anchor is 1×1 (in normalized input units), so only the centres
matter. Layers that share a stride are merged into one feature map with several anchors per cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Variant = Literal["short", "full"]


@dataclass(frozen=True)
class AnchorOptions:
    """The subset of SsdAnchorsCalculatorOptions the face detectors set."""

    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    aspect_ratios: tuple[float, ...] = (1.0,)
    anchor_offset: float = 0.5


OPTIONS: dict[Variant, AnchorOptions] = {
    # face_detection_short_range.pbtxt: 128 px, strides 8, 16, 16, 16, interpolated ratio 1.0 -> 896 anchors
    "short": AnchorOptions(128, (8, 16, 16, 16), 1.0),
    # face_detection_full_range.pbtxt: 192 px, stride 4, no interpolated anchor -> 2304 anchors
    "full": AnchorOptions(192, (4,), 0.0),
}


def ssd_anchor_centers(options: AnchorOptions) -> NDArray[np.float32]:
    """Anchor centres (A, 2) as (x, y) in [0, 1] of the detector input, in the model's output order."""
    centers: list[tuple[float, float]] = []
    layer = 0
    while layer < len(options.strides):
        stride = options.strides[layer]
        per_cell = 0
        while layer < len(options.strides) and options.strides[layer] == stride:
            per_cell += len(options.aspect_ratios) + (1 if options.interpolated_scale_aspect_ratio > 0 else 0)
            layer += 1
        cells = math.ceil(options.input_size / stride)
        for y in range(cells):
            for x in range(cells):
                c = ((x + options.anchor_offset) / cells, (y + options.anchor_offset) / cells)
                centers.extend([c] * per_cell)
    return np.asarray(centers, dtype=np.float32)


def anchors_for(variant: Variant) -> NDArray[np.float32]:
    """Anchor centres (A, 2) of the ``short`` (896) or ``full`` (2304) detector."""
    return ssd_anchor_centers(OPTIONS[variant])
