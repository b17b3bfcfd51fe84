"""The video reader on damaged input: a failure part of the way through is a one-line UserError naming the file
and the frame where reading stopped (every frame before it is handed out first); a FIFO is refused, not waited
on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from changeling.errors import UserError
from changeling.video.reader import count_frames, open_frames
from changeling.video.testclip import break_mp4_at, write_clip
from hangs import outcome


def test_a_video_failing_part_way_gives_its_frames_then_names_the_frame(tmp_path: Path) -> None:
    clip = break_mp4_at(write_clip(tmp_path / "c.mp4", frames=30, audio=None), 20)
    source = open_frames(clip)  # the header is fine
    got = []
    with pytest.raises(UserError) as err:  # a ReadError
        for tf in source:
            got.append(tf.index)
    assert got == list(range(20)) and getattr(err.value, "frame", None) == 20
    assert str(err.value).startswith(f"{clip}: reading stopped at frame 20 (") and "\n" not in str(err.value)
    with pytest.raises(UserError, match="reading stopped at frame 20"):
        count_frames(clip)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    err = outcome(lambda: open_frames(fifo))
    assert isinstance(err, UserError) and "not a regular file or folder (a FIFO)" in str(err)
