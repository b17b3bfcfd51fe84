"""A speech-like audio track that follows the motion's mouth: a voiced buzz whose loudness and vowel colour
follow the mouth opening, with a little breath noise. Seeded, so the same motion gives the same sound."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from changeling.synth.motion import Motion

SAMPLE_RATE = 48_000


def speech_audio(motion: Motion, duration: float, sample_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """(round(duration * sample_rate),) float32 mono samples in [-1, 1]."""
    n = int(round(duration * sample_rate))
    rng = np.random.default_rng(motion.seed + 7919)
    t = np.arange(n) / sample_rate
    mouth = motion.at(t)["mouth_open"]
    top = max(motion.settings.max_mouth_open, 1e-6)
    level = np.clip(mouth / top, 0, 1)
    base = rng.uniform(105.0, 210.0)  # voice pitch, Hz
    wobble = np.interp(t, np.linspace(0, duration, 64), rng.standard_normal(64))
    f0 = base * (1 + 0.06 * wobble + 0.08 * level)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    first_formant = 350.0 + 450.0 * level  # an open mouth makes a more open vowel
    voice = np.zeros(n)
    for k in range(1, 24):
        freq = k * f0
        gain = np.exp(-0.5 * ((freq - first_formant) / 220.0) ** 2) + 0.5 * np.exp(-0.5 * ((freq - 1500) / 400) ** 2)
        voice += np.where(freq < 0.45 * sample_rate, gain / k, 0.0) * np.sin(k * phase)
    breath = 0.02 * rng.standard_normal(n)
    signal = level * voice / 2.5 + breath * (0.3 + level)
    peak = float(np.max(np.abs(signal))) or 1.0
    return (0.5 * signal / peak).astype(np.float32)
