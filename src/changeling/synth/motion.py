"""Seeded motion: smooth random sequences of head pose, expression, camera and lighting parameters.

A :class:`Motion` is a function of time (sampled at ``RATE`` per second and interpolated), independent of any
portrait and of the clip's frame rate, so one motion can drive every portrait: that is what makes the paired
benchmark possible (the ideal swap of A's frame t is B's portrait under motion t).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import convolve1d

RATE = 100.0  # samples per second of the underlying sequences

# Every parameter, in the order of Motion.values' columns.
PARAMS: tuple[str, ...] = (
    "yaw",  # radians; positive turns the face towards the image's right (the subject's left)
    "pitch",  # radians; positive tilts the chin down
    "roll",  # radians; positive rotates the face clockwise in the image
    "mouth_open",  # 0 (closed) .. 1 (wide open: lower lip down by 0.4 inter-ocular distances)
    "smile",  # 0 .. 1
    "blink_left",  # 0 (open) .. 1 (closed), the subject's left eye
    "blink_right",
    "brow_raise",  # -1 (frown) .. 1 (raised)
    "cam_x",  # camera pan, fraction of the frame width
    "cam_y",  # fraction of the frame height
    "cam_zoom",  # scale factor, 1 = the base framing
    "cam_roll",  # radians
    "light_angle",  # radians; direction the light comes from, in the image plane (0 = from the right)
    "light_strength",  # 0 .. ~0.4: brightness difference across the frame from the shading gradient
    "warmth",  # -1 (cool, bluish) .. 1 (warm, orange): colour temperature
)


@dataclass(frozen=True)
class MotionSettings:
    """How much of each kind of motion a sequence has; 0 turns a kind off (a still camera, no blinks...)."""

    max_yaw_deg: float = 12.0
    max_pitch_deg: float = 8.0
    max_roll_deg: float = 7.0
    speech: float = 1.0  # mouth activity: 0 silent .. 1 talking most of the time
    max_mouth_open: float = 0.8
    blinks_per_second: float = 0.3
    smile: float = 0.6  # largest smile
    brows: float = 0.6  # largest brow movement
    camera: float = 1.0  # scales pan (+-4% of the frame), zoom (+-6%) and camera roll (+-1.5 degrees)
    lighting: float = 1.0  # scales the shading gradient and the colour temperature swing


@dataclass(frozen=True)
class Motion:
    """A seeded motion: ``values[i, j]`` is parameter ``PARAMS[j]`` at time ``i / RATE`` seconds."""

    seed: int
    duration: float  # seconds
    values: NDArray[np.float64] = field(repr=False)  # (ceil(duration * RATE) + 1, len(PARAMS))
    settings: MotionSettings = MotionSettings()

    def at(self, times: NDArray[np.float64] | float) -> dict[str, NDArray[np.float64]]:
        """Every parameter at the given times (seconds; clipped to [0, duration]), linearly interpolated."""
        t = np.clip(np.atleast_1d(np.asarray(times, dtype=np.float64)), 0.0, self.duration)
        grid = np.arange(self.values.shape[0]) / RATE
        return {name: np.interp(t, grid, self.values[:, j]) for j, name in enumerate(PARAMS)}

    def frame_times(self, fps: float) -> NDArray[np.float64]:
        """Times of the frames of a clip of this motion at ``fps``: i / fps for i < round(duration * fps)."""
        return np.arange(int(round(self.duration * fps))) / fps


def _smooth_noise(rng: np.random.Generator, n: int, sigma_s: float) -> NDArray[np.float64]:
    """Stationary smooth noise with unit standard deviation: white noise through a Gaussian of ``sigma_s``."""
    sigma = sigma_s * RATE
    radius = int(4 * sigma)
    white = rng.standard_normal(n + 2 * radius)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= np.sqrt(np.sum(k**2))  # unit variance out
    return np.convolve(white, k, mode="valid")[:n]


def _blinks(rng: np.random.Generator, n: int, rate_hz: float) -> NDArray[np.float64]:
    """0..1 eyelid closure: Poisson blink onsets, each closing in 70 ms and opening in 150 ms."""
    out = np.zeros(n)
    if rate_hz <= 0:
        return out
    t = rng.exponential(1.0 / rate_hz) * 0.5  # the first blink comes a little sooner
    close, reopen = 0.07, 0.15
    shape_t = np.arange(int((close + reopen) * RATE) + 1) / RATE
    shape = np.where(shape_t < close, shape_t / close, np.clip(1 - (shape_t - close) / reopen, 0, 1))
    while t * RATE < n:
        i = int(t * RATE)
        seg = out[i: i + len(shape)]
        np.maximum(seg, shape[: len(seg)], out=seg)
        t += max(rng.exponential(1.0 / rate_hz), close + reopen + 0.2)
    return out


def _speech(rng: np.random.Generator, n: int, activity: float, top: float) -> NDArray[np.float64]:
    """0..top mouth opening: talk spurts of 1-3 s with pauses, syllables at about 4 per second."""
    if activity <= 0:
        return np.zeros(n)
    gate = np.zeros(n)
    t, talking = 0.0, rng.random() < activity
    while t * RATE < n:
        length = rng.uniform(1.0, 3.0) if talking else rng.uniform(0.3, 1.2) / max(activity, 1e-3)
        gate[int(t * RATE): int((t + length) * RATE)] = 1.0 if talking else 0.0
        t += length
        talking = not talking
    k = np.exp(-0.5 * (np.arange(-15, 16) / 5.0) ** 2)  # soften the spurts' edges (50 ms)
    gate = convolve1d(gate, k / k.sum(), mode="nearest")
    rate = 4.0 + 0.8 * _smooth_noise(rng, n, 0.5)  # syllables per second
    phase = np.cumsum(2 * np.pi * np.clip(rate, 2.0, 7.0) / RATE)
    depth = np.clip(0.65 + 0.25 * _smooth_noise(rng, n, 0.3), 0.2, 1.0)
    return top * gate * depth * np.abs(np.sin(phase / 2))


def make_motion(seed: int, duration: float, settings: MotionSettings | None = None) -> Motion:
    """A smooth random motion of ``duration`` seconds, the same for the same ``seed`` and settings."""
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    s = settings or MotionSettings()
    rng = np.random.default_rng(seed)
    n = int(np.ceil(duration * RATE)) + 1
    deg = np.pi / 180

    def bounded(sigma_s: float, top: float) -> NDArray[np.float64]:
        return top * np.tanh(0.8 * _smooth_noise(rng, n, sigma_s))

    cols = {
        "yaw": bounded(0.9, s.max_yaw_deg * deg),
        "pitch": bounded(0.8, s.max_pitch_deg * deg),
        "roll": bounded(1.2, s.max_roll_deg * deg),
        "mouth_open": _speech(rng, n, s.speech, s.max_mouth_open),
        "smile": s.smile * 0.5 * (1 + np.tanh(1.2 * _smooth_noise(rng, n, 1.5) - 0.3)),
        "blink_left": (blink := _blinks(rng, n, s.blinks_per_second)),
        "blink_right": blink,
        "brow_raise": np.clip(s.brows * np.tanh(0.9 * _smooth_noise(rng, n, 0.7)), -s.brows, s.brows),
        "cam_x": bounded(2.0, 0.04 * s.camera),
        "cam_y": bounded(2.0, 0.03 * s.camera),
        "cam_zoom": 1.0 + bounded(2.5, 0.06 * s.camera),
        "cam_roll": bounded(2.5, 1.5 * deg * s.camera),
        "light_angle": rng.uniform(0, 2 * np.pi) + np.cumsum(0.4 * _smooth_noise(rng, n, 1.0)) / RATE,
        "light_strength": s.lighting * (0.2 + 0.12 * np.tanh(_smooth_noise(rng, n, 2.0))),
        "warmth": s.lighting * np.tanh(0.8 * _smooth_noise(rng, n, 3.0)),
    }
    values = np.stack([cols[name] for name in PARAMS], axis=1)
    return Motion(seed=seed, duration=float(duration), values=values, settings=s)
