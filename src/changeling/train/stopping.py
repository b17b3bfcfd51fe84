"""Why a training run stops: a step count, the settings' limits, or a request (Ctrl+C, the caller's
``should_stop``); with several processes the ranks agree, so they all stop at the same step."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Literal

import torch

from changeling.config.train import TrainSettings
from changeling.train.distributed import DistContext, agree_max

log = logging.getLogger(__name__)

StopReason = Literal["max_steps", "max_time", "interrupted", "steps_done"]
STOP_CODES: tuple[StopReason | None, ...] = (None, "steps_done", "max_steps", "max_time", "interrupted")


def local_stop_reason(step: int, until: int | None, settings: TrainSettings, budget_used: Callable[[], float],
                      requested: Callable[[], bool]) -> StopReason | None:
    """Why this process would stop at ``step``, if at all: ``until`` (a total step count) reached, the settings'
    ``max_steps``, ``max_time`` against ``budget_used()`` seconds, or ``requested()``. The callables are asked
    only when the reasons before them do not apply."""
    if until is not None and step >= until:
        return "steps_done"
    if settings.max_steps and step >= settings.max_steps:
        return "max_steps"
    if settings.max_time and budget_used() >= settings.max_time:
        return "max_time"
    if requested():
        return "interrupted"
    return None


def agreed_stop_reason(reason: StopReason | None, dist: DistContext | None,
                       device: torch.device) -> StopReason | None:
    """``reason`` alone; with several processes, the reason of any rank that has one (all ranks call this)."""
    if dist is None:
        return reason
    code = agree_max(STOP_CODES.index(reason) if reason else 0, dist, device)
    return STOP_CODES[code] if code else None


@contextmanager
def ctrl_c_requests_stop(flag: threading.Event) -> Iterator[None]:
    """While active, the first Ctrl+C sets ``flag`` (the loop saves and stops); a second one interrupts at once.
    Outside the main thread this does nothing (the caller stops the run through ``should_stop``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.set()
        log.warning("stopping after this step and saving (press Ctrl+C again to abort without saving)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
