"""Thread budgets for stages that run their own pools of worker threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import cv2


@contextmanager
def _swapped(get: Callable[[], int], put: Callable[[int], None], count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    before = get()
    put(max(1, int(count)))
    try:
        yield
    finally:
        put(before)


def opencv_threads(count: int | None) -> AbstractContextManager[None]:
    """Run the block with OpenCV's own parallelism set to ``count`` threads (``None``: unchanged), then
    restore it.

    Extraction and convert call OpenCV from a pool of worker threads; OpenCV's default pool (one thread per
    core) then fans every warp, resize and blur out again, and a dozen workers times 16 OpenCV threads on a
    16-core GPU machine spend their time scheduling.
    """
    return _swapped(cv2.getNumThreads, cv2.setNumThreads, count)


def torch_threads(count: int | None) -> AbstractContextManager[None]:
    """Run the block with ``count`` intra-op threads for PyTorch's CPU kernels (``None``: unchanged), then
    restore the old count.

    Convert keeps every core busy with its own threads (decode, render, encode); on the CPU a model that also
    spreads over all cores fights them (measured on 2 cores: 10-13 frames/s with 2 threads, 18-24 with 1).
    """
    import torch

    return _swapped(torch.get_num_threads, torch.set_num_threads, count)


_WORKER_PROCESSES = [False]


def allow_worker_processes() -> None:
    """Let stages start worker processes (spawned). Called by changeling's own command line, whose entry points
    are safe to re-import in a child; a program using the library directly keeps threads, since spawning from
    a script without an ``if __name__ == "__main__"`` guard would run the script again in every worker."""
    _WORKER_PROCESSES[0] = True


def worker_processes_allowed() -> bool:
    import multiprocessing

    return _WORKER_PROCESSES[0] and multiprocessing.parent_process() is None  # never from inside a worker
