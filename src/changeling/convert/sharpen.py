"""Optional sharpening of the swapped face (a pure function)."""

from __future__ import annotations

import cv2
import numpy as np


def unsharp_mask(image: np.ndarray, amount: float, sigma: float | None = None) -> np.ndarray:
    """``image + amount * (image - gaussian_blur(image, sigma))``, clipped.

    ``image``: (H, W, 3) float32 in [0, 1] or uint8; returned in the same dtype. ``sigma`` defaults to one
    pixel per 64 pixels of the crop's side (the detail scale the model renders). ``amount`` 0 returns the
    input unchanged.
    """
    if amount < 0:
        raise ValueError(f"amount must be >= 0, got {amount}")
    if amount == 0:
        return image
    s = float(sigma) if sigma is not None else max(image.shape[0] / 64.0, 0.5)
    f = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    blurred = cv2.GaussianBlur(f, (0, 0), sigmaX=s, borderType=cv2.BORDER_REFLECT)
    out = np.clip(f + np.float32(amount) * (f - blurred), 0.0, 1.0)
    if image.dtype == np.uint8:
        return (out * 255.0 + 0.5).astype(np.uint8)
    return out
