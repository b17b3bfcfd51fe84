"""Frames with the count of undecodable ones before each (what extraction records for every source)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from changeling.errors import UserError
from changeling.video.images import read_image
from changeling.video.reader import FrameSource, TimedFrame

log = logging.getLogger(__name__)


@dataclass
class CountedFrame:
    frame: TimedFrame
    corrupt_before: int  # undecodable frames just before this one


@dataclass
class FramesEnd:
    count: int  # frames decoded
    corrupt_after: int  # undecodable frames after the last good one


def counted_frames(source: FrameSource) -> Iterator[CountedFrame | FramesEnd]:
    """Decoded frames with the count of undecodable ones before each, then a :class:`FramesEnd`. In a
    folder, an unreadable image is skipped and counted (a single image that cannot be read is an error)."""
    corrupt = 0
    count = 0
    if source.kind == "images" and len(source.images) > 1:
        for i, p in enumerate(source.images):
            try:
                image = read_image(p)
            except UserError as exc:
                log.warning("%s", exc)
                corrupt += 1
                continue
            yield CountedFrame(TimedFrame(index=count, time=float(i / source.fps), pts=None, image=image), corrupt)
            corrupt = 0
            count += 1
        if count == 0:
            raise UserError("no image in this folder could be read", source.path)
        yield FramesEnd(count, corrupt)
        return
    seen = 0
    for tf in source:
        yield CountedFrame(tf, source.skipped - seen)
        seen = source.skipped
        count += 1
    yield FramesEnd(count, source.skipped - seen)
