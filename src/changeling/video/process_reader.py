"""Decoding in a process of its own, the frames handed over through shared memory.

On a machine with many cores convert's decode thread was starved rather than slow: PyAV releases the GIL
while libavcodec decodes, but every frame needs it back several times, and with the main thread launching GPU
work and eight render threads busy in Python, each wait can last the interpreter's switch interval. A child
process has its own interpreter, so nothing there waits on our threads. It decodes into a ring of
frame-sized slots in one shared-memory block; only the slot number and the frame's small metadata go through
a queue, and the consumer copies the pixels out and hands the slot back (one memcpy per frame).

The producer runs in the child: a picklable callable that takes the source and yields items, each either a
:class:`TimedFrame` or an object with a ``frame`` attribute holding one (extraction's items carry counts of
undecodable frames beside it). Items come out in order and unchanged, pixels included.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from changeling.errors import UserError
from changeling.threads import worker_processes_allowed
from changeling.video.reader import FrameSource, TimedFrame

log = logging.getLogger(__name__)

DECODE_PROCESS_FROM_CORES = 8
ENV = "CHANGELING_DECODE_PROCESS"  # "1" or "0" overrides the default choice (the benchmarks compare both)
_POLL_S = 0.2


def decode_process_wanted(source: FrameSource, *, many_cores: bool = True) -> bool:
    """Whether ``source`` is decoded in its own process: a video, where changeling's command line allows worker
    processes, and ``CHANGELING_DECODE_PROCESS=1`` (``0``: never); unset, on machines with
    ``DECODE_PROCESS_FROM_CORES`` or more cores if ``many_cores`` says that stage gains from it.

    Measured on the 16-core H100 machine (bench/RESULTS.md): extraction loses (215 frames/s against 259 with
    the decode thread, in one run), so it does not ask; convert's decode stage took 3.8 ms per 1080p frame
    with the process against 7.6 with the thread (two runs a session apart), so convert asks."""
    if source.kind != "video" or not worker_processes_allowed():
        return False
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return many_cores and (os.cpu_count() or 1) >= DECODE_PROCESS_FROM_CORES


def plain_frames(source: FrameSource) -> Iterator[TimedFrame]:
    """The source's frames as they are (the producer for convert)."""
    yield from source


def start_process_frames(source: FrameSource, producer: Callable[[FrameSource], Iterable[Any]] = plain_frames, *,
                         slots: int = 8) -> ProcessFrames | None:
    """A started :class:`ProcessFrames`, or ``None`` (with a warning) where the child cannot be started: the
    caller then decodes in a thread."""
    try:
        return ProcessFrames(source, producer, slots=slots)
    except OSError as exc:  # no shared memory, a process limit: a thread will do
        log.warning("%s: decoding in a thread (the decoder process could not start: %s)", source.path, exc)
        return None


def _frame_of(item: Any) -> TimedFrame | None:
    if isinstance(item, TimedFrame):
        return item
    frame = getattr(item, "frame", None)
    return frame if isinstance(frame, TimedFrame) else None


def _with_frame(item: Any, frame: TimedFrame) -> Any:
    return frame if isinstance(item, TimedFrame) else dataclasses.replace(item, frame=frame)


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


def _child(producer: Callable[[FrameSource], Iterable[Any]], source: FrameSource, shm_name: str, slots: int,
           slot_bytes: int, free: Any, out: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle; it stops us
    shm = shared_memory.SharedMemory(name=shm_name)
    # (spawned children share the parent's resource tracker: the attach above registers nothing new, and the
    # parent's unlink in close() removes the one entry)
    try:
        for item in producer(source):
            if stop.is_set():
                return
            tf = _frame_of(item)
            if tf is None or tf.image.nbytes > slot_bytes or tf.image.dtype != np.uint8:
                out.put(("item", None, None, item))  # no frame, or one that does not fit a slot: pickled whole
                continue
            while True:
                try:
                    slot = free.get(timeout=_POLL_S)
                    break
                except queue.Empty:
                    if stop.is_set() or not _parent_alive():  # a parent killed without close(): end too
                        return
            image = np.ascontiguousarray(tf.image)
            view = np.ndarray(image.shape, np.uint8, buffer=shm.buf, offset=slot * slot_bytes)
            view[...] = image
            del view
            out.put(("item", slot, image.shape, _with_frame(item, dataclasses.replace(tf, image=_NO_IMAGE))))
        out.put(("done", None, None, source.skipped))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        out.put(("error", None, None, _portable(exc)))
    finally:
        shm.close()


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def _portable(exc: BaseException) -> tuple[str, str]:
    """What the parent needs of an exception, in plain strings (an exception object may not survive the
    queue's pickling, which happens later in its feeder thread where a failure would be lost)."""
    return ("user" if isinstance(exc, UserError) else type(exc).__name__), str(exc)


def _rebuilt(kind: str, text: str) -> BaseException:
    """The parent's exception for a child's: a :class:`UserError` stays one (a one-line message, exit code 2);
    anything else is a RuntimeError naming the original type."""
    return UserError(text) if kind == "user" else RuntimeError(f"{kind}: {text}")


class ProcessFrames:
    """Iterate ``producer(source)`` run in a spawned child process; ``skipped`` is the source's count of
    undecodable frames once the iteration has ended. Call :meth:`close` (or use it as a context manager) to
    stop the child early."""

    def __init__(self, source: FrameSource, producer: Callable[[FrameSource], Iterable[Any]] = plain_frames, *,
                 slots: int = 8) -> None:
        self.source = source
        self.skipped = 0
        self.slot_bytes = max(1, source.width * source.height * 3)
        self.slots = max(2, slots)
        ctx = multiprocessing.get_context("spawn")  # not fork: the parent has threads (and maybe CUDA)
        self._lock = threading.Lock()
        self._closed = True  # until the child runs: close() has nothing to stop
        self._shm = shared_memory.SharedMemory(create=True, size=self.slots * self.slot_bytes)
        self._free: Any = None
        self._out: Any = None
        try:
            # reserve the pages now: a small /dev/shm (64 MB in a default Docker container) must fail here,
            # with an OSError the caller can fall back on, not with SIGBUS in the child at the first frame
            fd = getattr(self._shm, "_fd", -1)
            if fd >= 0 and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, self.slots * self.slot_bytes)
            self._free = ctx.Queue()
            self._out = ctx.Queue()
            self._stop = ctx.Event()
            for s in range(self.slots):
                self._free.put(s)
            self._proc = ctx.Process(target=_child, name="changeling-decode", daemon=True,
                                     args=(producer, source, self._shm.name, self.slots, self.slot_bytes,
                                           self._free, self._out, self._stop))
            self._proc.start()
        except BaseException:
            self._release()
            raise
        self._closed = False

    def __enter__(self) -> ProcessFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_message(self) -> tuple[str, int | None, tuple[int, ...] | None, Any]:
        while True:
            try:
                return self._out.get(timeout=_POLL_S)  # type: ignore[no-any-return]
            except queue.Empty:
                if not self._proc.is_alive():
                    try:  # it may have put its last message just before ending
                        return self._out.get(timeout=_POLL_S)  # type: ignore[no-any-return]
                    except queue.Empty:
                        pass
                    raise RuntimeError(f"{self.source.path}: the decoder process ended unexpectedly "
                                       f"(exit code {self._proc.exitcode})") from None

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                kind, slot, shape, payload = self._next_message()
                if kind == "done":
                    self.skipped = int(payload)
                    return
                if kind == "error":
                    raise _rebuilt(*payload)
                if slot is None:
                    yield payload
                    continue
                assert shape is not None
                image = np.ndarray(shape, np.uint8, buffer=self._shm.buf, offset=slot * self.slot_bytes).copy()
                self._free.put(slot)
                tf = _frame_of(payload)
                assert tf is not None
                yield _with_frame(payload, dataclasses.replace(tf, image=image))
        finally:
            self.close()

    def close(self) -> None:
        """Stop the child (if it still runs) and free the shared memory. Safe to call twice, and from two
        threads (the consumer's and the one iterating)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._proc.join(timeout=2.0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5.0)
        self._release()

    def _release(self) -> None:
        for q in (self._free, self._out):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._shm.close()
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass
