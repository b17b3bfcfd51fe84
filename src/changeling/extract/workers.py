"""Who writes the faces: a pool of threads (OpenCV and zlib release the GIL) and, on many-core machines run from
the command line, worker processes behind them; and the CPU threads the networks may use meanwhile. (How these
numbers were chosen: docs/decisions.md, "Extraction's face workers".)"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from changeling.config import ExtractSettings
from changeling.threads import opencv_threads, torch_threads, worker_processes_allowed

log = logging.getLogger(__name__)

# threads that crop, mask and write faces: 2 on a laptop, more where the cores are
FACE_WORKERS = max(2, min(12, 3 * (os.cpu_count() or 2) // 4))
# From this many cores, the masks, metadata and PNG of each face are made in worker processes (one per face
# thread): with a dozen threads the Python parts of that work queue on the GIL.
FACE_PROCESSES_FROM_CORES = 8


@contextmanager
def cpu_threads(settings: ExtractSettings) -> Iterator[None]:
    """Give the networks part of the CPU only: with every core in torch's pool, its worker threads spin
    waiting for each other while the decode and face threads hold the cores, and extraction crawls."""
    cores = os.cpu_count() or 1
    with torch_threads(settings.threads or max(1, cores // 2)), opencv_threads(1):  # face workers: the rest
        yield


_PROCESS_POOL: list[ProcessPoolExecutor] = []
_NO_PROCESSES: list[bool] = []  # set once starting them failed in this process: do not try again


def use_face_processes() -> bool:
    """Whether faces are written from worker processes: on machines with ``FACE_PROCESSES_FROM_CORES`` or more
    cores, when run from changeling's command line (see :func:`changeling.threads.allow_worker_processes`)."""
    return (os.cpu_count() or 1) >= FACE_PROCESSES_FROM_CORES and worker_processes_allowed()


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle; workers end with it


def face_process_pool() -> ProcessPoolExecutor | None:
    """The face-writing processes (started once, kept for later extractions in this process), or ``None``
    where faces are written from threads."""
    if not use_face_processes() or _NO_PROCESSES:
        return None
    pool = _PROCESS_POOL[0] if _PROCESS_POOL else None
    if pool is not None and getattr(pool, "_broken", False):  # a worker died (killed): start afresh
        pool.shutdown(wait=False, cancel_futures=True)
        _PROCESS_POOL.clear()
        pool = None
    if pool is None:
        # spawn, not fork: this process has threads (and maybe CUDA) that a fork would copy half-way
        pool = ProcessPoolExecutor(FACE_WORKERS, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_quiet_worker)
        try:  # start them now: a program that cannot spawn (an unguarded script, say) gets threads instead
            for job in [pool.submit(int) for _ in range(FACE_WORKERS)]:
                job.result(timeout=120)
        except Exception as exc:  # noqa: BLE001 - BrokenProcessPool, a timeout, an OS limit: threads will do
            pool.shutdown(wait=False, cancel_futures=True)
            log.warning("face-writing processes could not start (%s); writing faces from threads",
                        type(exc).__name__)
            _NO_PROCESSES.append(True)
            return None
        _PROCESS_POOL.append(pool)
    return pool
