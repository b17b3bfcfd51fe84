"""Stages in threads, joined by bounded queues: one stop event and one error for all of them.

Extraction and convert overlap decoding, the networks, rendering and writing this way (live mode will too)::

    with Stages(join_timeout=30) as stages:
        frames = stages.channel(16)
        done = stages.channel(16)
        stages.produce("decode", decoded_frames(), frames)   # a thread: every item into `frames`, then END
        stages.consume("write", done, write_one)             # a thread: write_one(item) until END
        while (item := stages.get(frames)) is not END:
            stages.put(done, work_on(item))
        stages.put(done, END)
        stages.join()                                        # wait for the threads, raise their first error

The rules:

* An error in a producer travels *in order*: the consumer gets the items made before it, then :meth:`get`
  raises it (a video damaged half-way keeps the frames before the damage).
* An error in any other stage (a consumer thread, a pool's task the caller does not wait on) is the pipeline's:
  it stops every stage, and the caller's next :meth:`put`, :meth:`get` or :meth:`join` raises it, as does
  leaving the ``with`` block.
* :meth:`stop` (or leaving the block, normally or by an exception) asks every stage to end: blocked puts and
  gets give up within ``POLL_S``, producers close their iterators (so a child process or a file is released),
  pools cancel what has not started, and every thread is joined.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_S = 0.1  # how often a blocked put or get looks at the stop event


class _End(enum.Enum):
    END = "END"


END: Final = _End.END  # the last item of a channel


class Stopped(Exception):
    """The stages were asked to stop (or another stage failed): the stage that sees it ends quietly."""


class _Raised:
    """An exception on its way down a channel, after the items made before it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Channel(Generic[T]):
    """A bounded queue between two stages (items of type ``T``, then :data:`END`)."""

    def __init__(self, maxsize: int) -> None:
        self._q: queue.Queue[T | _End | _Raised] = queue.Queue(maxsize=max(1, maxsize))

    def wait_empty(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no item waits in the channel (its consumer has taken the last
        one); whether none does. Woken by the consumer's get, not by polling."""
        q = self._q
        with q.not_full:  # every get notifies it
            if q.queue:
                q.not_full.wait(timeout)
            return not q.queue

    def drain(self) -> int:
        """Drop every item waiting (a stopped pipeline's), so that no producer stays blocked on a full queue."""
        n = 0
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                return n
            n += 1


class Stages:
    """Threads, pools and channels with one stop event and one error (see the module docstring). ``join_timeout``
    bounds how long closing waits for each thread (a stage stuck in a system call must not hang the caller)."""

    def __init__(self, join_timeout: float = 30.0) -> None:
        self.join_timeout = join_timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._pools: list[ThreadPoolExecutor] = []
        self._channels: list[Channel[Any]] = []

    # -- building -------------------------------------------------------------------------------------

    def channel(self, maxsize: int) -> Channel[Any]:
        """A new bounded channel (at least one slot)."""
        ch: Channel[Any] = Channel(maxsize)
        self._channels.append(ch)
        return ch

    def pool(self, workers: int, name: str) -> ThreadPoolExecutor:
        """A thread pool shut down with the stages (what has not started is cancelled)."""
        pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix=name)
        self._pools.append(pool)
        return pool

    def produce(self, name: str, items: Iterable[T], out: Channel[T]) -> threading.Thread:
        """Start a thread that puts every item of ``items`` into ``out``, then :data:`END`. An exception raised
        while iterating goes down ``out`` after the items before it; :meth:`get` raises it there."""

        def run() -> None:
            it: Iterator[T] = iter(())
            try:
                it = iter(items)
                for item in it:
                    self._put(out, item)
                self._put(out, END)
            except Stopped:
                return
            except BaseException as exc:  # noqa: BLE001 - handed down the channel, raised by its consumer
                try:
                    self._put(out, _Raised(exc))
                except Stopped:
                    return
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()  # a generator's cleanup (a child process, a file) runs in this thread, now

        return self._start(name, run)

    def consume(self, name: str, source: Channel[T], handle: Callable[[T], object]) -> threading.Thread:
        """Start a thread that calls ``handle(item)`` for every item of ``source`` until :data:`END`. Its error
        stops every stage and is raised in the caller."""

        def run() -> None:
            while True:
                item = self.get(source)
                if item is END:
                    return
                handle(item)  # type: ignore[arg-type]

        return self.start(name, run)

    def start(self, name: str, target: Callable[[], object]) -> threading.Thread:
        """Start ``target`` in a thread of its own; its error stops every stage and is raised in the caller.
        (:class:`Stopped` ends it quietly.)"""

        def run() -> None:
            try:
                target()
            except Stopped:
                return
            except BaseException as exc:  # noqa: BLE001 - the pipeline's error, raised in the caller
                self.fail(exc)

        return self._start(name, run)

    def _start(self, name: str, run: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    # -- moving items ---------------------------------------------------------------------------------

    def put(self, ch: Channel[T], item: T | _End) -> None:
        """Put ``item`` into ``ch``, waiting for room; raises the pipeline's error, or :class:`Stopped` once
        the stages are stopping."""
        self.check()
        try:
            self._put(ch, item)
        except Stopped:
            self.check()  # stopped by a failed stage: its error, rather than a quiet stop
            raise

    def _put(self, ch: Channel[Any], item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                ch._q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def get(self, ch: Channel[T]) -> T | _End:
        """The next item of ``ch`` (or :data:`END`), waiting for one; raises an error a producer sent down
        ``ch``, the pipeline's error, or :class:`Stopped` once the stages are stopping."""
        while True:
            self.check()
            if self._stop.is_set():
                raise Stopped
            try:
                item = ch._q.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _Raised):
                raise item.exc
            return item

    def items(self, ch: Channel[T]) -> Iterator[T]:
        """The items of ``ch`` up to :data:`END` (errors raised as :meth:`get` raises them)."""
        while (item := self.get(ch)) is not END:
            yield item  # type: ignore[misc]

    # -- errors and stopping --------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` as the pipeline's error (the first one wins) and stop every stage."""
        with self._lock:
            if self._error is None:
                self._error = exc
        self._stop.set()

    def check(self) -> None:
        """Raise the pipeline's error, if a stage failed."""
        if self._error is not None:
            raise self._error

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask every stage to end (not an error)."""
        self._stop.set()

    def join(self) -> None:
        """Wait for every thread to end on its own (the producers reach their END, the consumers theirs), then
        raise the pipeline's error if a stage failed."""
        for thread in self._threads:
            while thread.is_alive():
                thread.join(timeout=POLL_S)
                self.check()
        self.check()

    def close(self) -> None:
        """Stop every stage, cancel the pools' waiting tasks and join every thread (up to ``join_timeout``
        each). Safe to call twice."""
        self._stop.set()
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        for ch in self._channels:
            ch.drain()
        for thread in self._threads:
            thread.join(timeout=self.join_timeout)
            if thread.is_alive():
                log.warning("stage %s did not end within %.0f s", thread.name, self.join_timeout)

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
        if exc is None:
            self.check()
