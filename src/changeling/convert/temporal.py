"""Temporal blending of the swapped face against flicker.

A model renders each frame on its own, so where the source face holds still its output still wavers a little from
frame to frame: the swapped face shimmers. Landmark smoothing (:mod:`changeling.convert.smooth`) steadies where
the face sits; this steadies what it looks like. Each swapped face, in the aligned crop, is blended with the
previous frame's blended face, pixel by pixel, by a weight that falls with how much the *source* crop changed
there::

    w = strength * exp(-|crop_t - crop_t-1| / sigma)        out_t = w * out_t-1 + (1 - w) * swap_t

So a still cheek is averaged over frames, while a mouth that opens (the source changes there) is followed at
once, and a cut or another face (the whole crop changes) starts afresh. The change is measured on the crops
lightly blurred, so the sensor's noise does not count as motion. Measured on the paired benchmark's held-out
motion (bench/RESULTS.md): strength 0.7 cuts the view jitter by about a quarter and leaves SSIM as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.config.convert import FACE_SMOOTH_MAX

SIGMA = 0.05  # source change (mean of RGB in [0, 1]) at which the weight falls to 1/e of the strength
BLUR_SIGMA = 1.0  # Gaussian blur of the crops before differencing, pixels of the model's crop
MAX_STRENGTH = FACE_SMOOTH_MAX  # the settings' bound: 1 would freeze a still face for ever


def blur_crop(crop: NDArray[np.floating]) -> NDArray[np.float32]:
    """A source crop (R, R, 3) in [0, 1] as :func:`blend_weights` compares it: lightly blurred, so that the
    sensor's noise does not count as motion."""
    return np.asarray(cv2.GaussianBlur(np.asarray(crop, np.float32), (0, 0), BLUR_SIGMA), np.float32)


def blurred_weights(prev_blurred: NDArray[np.float32], blurred: NDArray[np.float32], strength: float,
                    sigma: float = SIGMA) -> NDArray[np.float32]:
    """:func:`blend_weights` of two crops already passed through :func:`blur_crop`."""
    if prev_blurred.shape != blurred.shape:
        raise ValueError(f"crops differ in shape: {prev_blurred.shape} vs {blurred.shape}")
    if not 0.0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"strength must be in [0, {MAX_STRENGTH}], got {strength}")
    if sigma <= 0:
        raise ValueError("sigma must be positive")
    change = np.abs(prev_blurred - blurred).reshape(*blurred.shape[:2], -1).mean(axis=2)
    return (strength * np.exp(-change / sigma)).astype(np.float32)


def blend_weights(prev_crop: NDArray[np.floating], crop: NDArray[np.floating], strength: float,
                  sigma: float = SIGMA) -> NDArray[np.float32]:
    """(R, R) weights of the previous output for two consecutive source crops (R, R, 3) in [0, 1]."""
    if prev_crop.shape != crop.shape:
        raise ValueError(f"crops differ in shape: {prev_crop.shape} vs {crop.shape}")
    return blurred_weights(blur_crop(prev_crop), blur_crop(crop), strength, sigma)


def blend(prev: NDArray[np.floating], current: NDArray[np.floating], weights: NDArray[np.floating]
          ) -> NDArray[np.float32]:
    """``weights * prev + (1 - weights) * current`` for (S, S[, C]) images; ``weights`` (R, R) is resized to S
    when the output is larger than the crops (a detail stage)."""
    if prev.shape != current.shape:
        raise ValueError(f"outputs differ in shape: {prev.shape} vs {current.shape}")
    s = current.shape[0]
    w = np.asarray(weights, np.float32)
    if w.shape[0] != s:
        w = np.asarray(cv2.resize(w, (s, s), interpolation=cv2.INTER_LINEAR), np.float32)
    if current.ndim == 3:
        w = w[..., None]
    return (w * prev + (1.0 - w) * current).astype(np.float32)


def blend_sequence(outputs: NDArray[np.floating], crops: NDArray[np.floating], strength: float
                   ) -> NDArray[np.float32]:
    """One face's swapped outputs (T, S, S, 3) over consecutive frames, blended as convert blends them;
    ``crops`` (T, R, R, 3) in [0, 1] are the source crops the outputs were made from."""
    if len(outputs) != len(crops):
        raise ValueError(f"{len(outputs)} outputs for {len(crops)} crops")
    out = np.asarray(outputs, np.float32).copy()
    if strength <= 0:
        return out
    for t in range(1, len(out)):
        out[t] = blend(out[t - 1], out[t], blend_weights(crops[t - 1], crops[t], strength))
    return out


@dataclass
class _Last:
    frame: int
    blurred: NDArray[np.float32]  # the source crop through blur_crop, kept so each crop is blurred once
    face: NDArray[np.float32]
    mask: NDArray[np.float32] | None


@dataclass
class FaceBlender:
    """:func:`blend` over a video, for the converter and live mode. Call :meth:`next_frame` once per frame and
    :meth:`__call__` for each of its faces, in frame order. Faces are followed by a key: the converter passes
    the landmark smoother's track, so two faces that change places in the frame's list keep their own history.
    A face absent in the previous frame starts afresh, and so does one whose crop changed from the last
    (another face, a cut): the weights fall to nothing there by themselves."""

    strength: float
    _frame: int = field(default=-1, init=False)
    _last: dict[int, _Last] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= MAX_STRENGTH:
            raise ValueError(f"face smoothing must be in [0, {MAX_STRENGTH}], got {self.strength}")

    def next_frame(self) -> None:
        self._frame += 1
        self._last = {k: v for k, v in self._last.items() if v.frame == self._frame - 1}

    def __call__(self, key: int, crop: NDArray[np.uint8], face: NDArray[np.float32],
                 mask: NDArray[np.float32] | None) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """The blended face (S, S, 3) and mask (S, S) of the face ``key`` in this frame, from its source crop
        (R, R, 3) uint8 and the model's face and mask."""
        blurred = blur_crop(np.asarray(crop, np.float32) / 255.0)
        last = self._last.get(key)
        if self.strength > 0 and last is not None and last.blurred.shape == blurred.shape \
                and last.face.shape == face.shape:
            w = blurred_weights(last.blurred, blurred, self.strength)
            face = blend(last.face, face, w)
            if mask is not None and last.mask is not None and last.mask.shape == mask.shape:
                mask = blend(last.mask, mask, w)
        self._last[key] = _Last(self._frame, blurred, np.asarray(face, np.float32),
                                None if mask is None else np.asarray(mask, np.float32))
        return face, mask
