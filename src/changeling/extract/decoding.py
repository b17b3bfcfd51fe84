"""Extraction's decode stage: :func:`counted_frames` of a source in a thread (a
:class:`~changeling.stages.Stages` producer), or (``CHANGELING_DECODE_PROCESS=1``) in a child process feeding
that thread (:mod:`changeling.video.process_reader`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from changeling.errors import UserError
from changeling.stages import Channel, Stages
from changeling.video import FrameSource
from changeling.video.counted import CountedFrame, FramesEnd, counted_frames
from changeling.video.process_reader import ProcessFrames, decode_process_wanted, start_process_frames

T = TypeVar("T")


@dataclass
class ReadStopped:
    """Reading the source failed part of the way through (the decoder's :class:`UserError`)."""

    error: UserError


class Decoding:
    """What the decode stage runs (:meth:`frames`); ``decode_s`` sums the decode thread's time getting frames
    (decoding, or waiting for the child process)."""

    def __init__(self, source: FrameSource, slots: int) -> None:
        self.source, self.slots = source, slots
        self.child: ProcessFrames | None = None
        self.decode_s = 0.0

    def frames(self) -> Iterator[CountedFrame | FramesEnd]:
        try:
            if decode_process_wanted(self.source, many_cores=False):  # only when asked (see docs/decisions.md)
                self.child = start_process_frames(self.source, counted_frames, slots=self.slots)
            items = self.child if self.child is not None else counted_frames(self.source)
            yield from timed(items, self._add)
        finally:
            self.close()

    def _add(self, seconds: float) -> None:
        self.decode_s += seconds

    @property
    def in_child(self) -> bool:
        """Whether a child process did the decoding."""
        return self.child is not None

    def close(self) -> None:
        """Stop the child process, if one runs (safe from any thread, and twice)."""
        if self.child is not None:
            self.child.close()


def read_frames(stages: Stages, frames: Channel[CountedFrame | FramesEnd]
                ) -> Iterator[CountedFrame | FramesEnd | ReadStopped]:
    """The decode stage's items up to the :class:`FramesEnd`; a :class:`UserError` of the decoder (the input is
    damaged there) comes as a :class:`ReadStopped` after the frames before it, which are still good. Other errors
    are raised."""
    try:
        for item in stages.items(frames):
            yield item
            if isinstance(item, FramesEnd):
                return
    except UserError as exc:
        yield ReadStopped(exc)


def timed(items: Iterable[T], add: Callable[[float], None]) -> Iterator[T]:
    """The items of ``items``, passing the seconds spent getting each to ``add``."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        add(time.perf_counter() - t0)
        yield item
