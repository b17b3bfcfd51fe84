"""The learning rate over a run, the pair model's and the occlusion segmenter's: constant, then (with
``lr_anneal``) a cosine fall to a floor over the last share of the run's budget, measured in steps
(``max_steps``) or time (``max_time``), whichever is further along. Pure functions; a top-level module so that
``train`` and ``occlusion`` share it without importing each other."""

from __future__ import annotations

import math

ANNEAL_FLOOR = 0.05  # the learning rate's multiplier at the end of an annealed run


def run_progress(step: int, max_steps: int, used_s: float, max_time: float) -> float:
    """How far a run is through its budget, 0..1 (0 without limits): ``step`` of ``max_steps`` (a total count,
    as the setting is, so a resumed run follows the uninterrupted run's schedule exactly; 0: none) or ``used_s``
    seconds of this run's ``max_time`` (0: none), whichever is further along."""
    done = step / max_steps if max_steps > 0 else 0.0
    if max_time > 0:
        done = max(done, used_s / max_time)
    return min(1.0, max(0.0, done))


def anneal_factor(progress: float, share: float, floor: float = ANNEAL_FLOOR) -> float:
    """The learning rate's multiplier at ``progress`` (0..1) of a run whose last ``share`` (0..1) anneals: 1
    before that, then a half cosine from 1 down to ``floor`` at the end. ``share`` 0: always 1."""
    if share <= 0 or progress <= 1 - share:
        return 1.0
    t = min(1.0, (progress - (1 - share)) / share)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
