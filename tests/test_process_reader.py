"""Decoding in a child process hands over the same frames, counts and errors as decoding in a thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from changeling import threads
from changeling.bench.cases import moving_portrait_frames
from changeling.errors import UserError
from changeling.video import process_reader as PR
from changeling.video.counted import CountedFrame, FramesEnd, counted_frames
from changeling.video.reader import open_frames
from changeling.video.testclip import write_clip
from conftest import mjpeg_with_corrupt_frame


def _same(a: list[object], b: list[object]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        if isinstance(x, CountedFrame):
            assert isinstance(y, CountedFrame)
            assert (x.corrupt_before, x.frame.index, x.frame.time, x.frame.pts) == (
                y.corrupt_before, y.frame.index, y.frame.time, y.frame.pts)
            np.testing.assert_array_equal(x.frame.image, y.frame.image)
        else:
            assert x == y


def test_frames_and_counts_equal_the_thread_path_with_a_corrupt_frame(tmp_path: Path) -> None:
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(8)]
    clip = mjpeg_with_corrupt_frame(tmp_path / "bad.mkv", frames, bad=4)
    here = list(counted_frames(open_frames(clip)))
    # two slots for eight frames: the child has to wait for the consumer to hand slots back
    child = list(PR.ProcessFrames(open_frames(clip), counted_frames, slots=2))
    _same(here, child)
    assert isinstance(child[-1], FramesEnd) and child[-1].count == 7
    assert sum(i.corrupt_before for i in child[:-1] if isinstance(i, CountedFrame)) + child[-1].corrupt_after == 1


def test_plain_frames_and_skipped_count(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", width=160, height=90, fps=25, images=moving_portrait_frames(6, 160, 90))
    src = open_frames(clip)
    reader = PR.ProcessFrames(src, slots=3)
    got = list(reader)
    want = list(open_frames(clip))
    assert [f.index for f in got] == [f.index for f in want] == list(range(6))
    for a, b in zip(got, want, strict=True):
        assert (a.time, a.pts) == (b.time, b.pts)
        np.testing.assert_array_equal(a.image, b.image)
    assert reader.skipped == 0


def test_an_error_in_the_child_reaches_the_consumer(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", width=160, height=90, fps=25, images=moving_portrait_frames(4, 160, 90))
    src = open_frames(clip)
    raw = clip.read_bytes()
    clip.write_bytes(raw[: len(raw) // 3])  # cut after probing: decoding fails in the child
    with pytest.raises(UserError) as here:
        list(src)
    with pytest.raises(UserError) as child:
        list(PR.ProcessFrames(src))
    assert str(child.value) == str(here.value) and str(clip) in str(child.value)


def test_closing_early_stops_the_child_and_frees_the_memory(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", width=160, height=90, fps=25, images=moving_portrait_frames(30, 160, 90))
    reader = PR.ProcessFrames(open_frames(clip), slots=2)
    it = iter(reader)
    first = next(it)
    assert first.index == 0
    name = reader._shm.name
    reader.close()
    assert not reader._proc.is_alive()
    assert not os.path.exists(f"/dev/shm/{name.lstrip('/')}")
    reader.close()  # twice is fine


def test_decode_process_only_where_processes_are_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_clip(tmp_path / "c.mp4", width=160, height=90, fps=25, images=moving_portrait_frames(2, 160, 90))
    src = open_frames(clip)
    monkeypatch.setattr(threads, "_WORKER_PROCESSES", [False])
    monkeypatch.setenv(PR.ENV, "1")
    assert not PR.decode_process_wanted(src)  # library use: never
    threads.allow_worker_processes()
    assert PR.decode_process_wanted(src)
    monkeypatch.setenv(PR.ENV, "0")
    assert not PR.decode_process_wanted(src)
    monkeypatch.delenv(PR.ENV)
    assert PR.decode_process_wanted(src) == ((os.cpu_count() or 1) >= PR.DECODE_PROCESS_FROM_CORES)
    assert not PR.decode_process_wanted(src, many_cores=False)  # extraction: only when asked for
    monkeypatch.setenv(PR.ENV, "1")
    assert not PR.decode_process_wanted(open_frames(tmp_path / "c.mp4").__class__(
        path=tmp_path, kind="images", width=1, height=1, fps=src.fps, time_base=src.time_base, frame_count=0))


def test_a_child_that_cannot_start_leaves_decoding_to_a_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    clip = write_clip(tmp_path / "c.mp4", width=160, height=90, fps=25, images=moving_portrait_frames(2, 160, 90))

    def no_processes(self: PR.ProcessFrames, *a: object, **k: object) -> None:
        raise OSError("no shared memory here")

    monkeypatch.setattr(PR.ProcessFrames, "__init__", no_processes)
    with caplog.at_level("WARNING"):
        assert PR.start_process_frames(open_frames(clip)) is None
    assert "decoding in a thread (the decoder process could not start: no shared memory here)" in caplog.text


def test_too_little_shared_memory_falls_back_before_the_child_starts(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_clip(tmp_path / "c.mp4", width=160, height=90, fps=25, images=moving_portrait_frames(2, 160, 90))
    made: list[str] = []
    real = PR.shared_memory.SharedMemory

    def recording(*a: object, **k: object) -> object:
        shm = real(*a, **k)  # type: ignore[arg-type]
        made.append(shm.name)
        return shm

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PR.shared_memory, "SharedMemory", recording)
    monkeypatch.setattr(PR.os, "posix_fallocate", full)
    assert PR.start_process_frames(open_frames(clip)) is None  # the caller decodes in a thread instead
    assert made and not os.path.exists(f"/dev/shm/{made[0].lstrip('/')}")  # and the block is gone


def _failing(source: object) -> Iterator[object]:
    raise ValueError("something broke in the child")
    yield  # a generator


def test_a_bug_in_the_child_arrives_as_a_runtime_error_naming_it(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", width=160, height=90, fps=25, images=moving_portrait_frames(2, 160, 90))
    with pytest.raises(RuntimeError, match="ValueError: something broke in the child"):
        list(PR.ProcessFrames(open_frames(clip), _failing))
