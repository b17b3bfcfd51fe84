"""Domain types with exact dtypes and shapes. Coordinates are (x, y) in pixels, origin top-left."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from changeling.vocab import DeviceChoice, FaceType, Side  # the choice sets, re-exported

Frame = NDArray[np.uint8]  # (H, W, 3) RGB
Image = NDArray[np.uint8]  # (H, W, 3) RGB or (H, W) grey
Mask = NDArray[np.float32]  # (H, W) in [0, 1]
Affine = NDArray[np.float64]  # (2, 3): maps frame points to face-crop points
Points = NDArray[np.float32]  # (N, 2) x, y pixels
Landmarks = NDArray[np.float32]  # (468 or 478, 3) x, y pixels in the frame, z relative depth
Box = NDArray[np.float32]  # (4,) x0, y0, x1, y1 pixels


__all__ = ["Affine", "Box", "DeviceChoice", "FaceType", "Frame", "Image", "Landmarks", "Mask", "Points", "Side"]
