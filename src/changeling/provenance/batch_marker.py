"""The watermark for many render threads at once, embedded on the GPU in batches.

Convert's render threads each finish a frame and mark it. Marking one frame at a time on the GPU cost each
thread an upload, some forty small kernels and a download on the default stream, whose ``.cpu()`` waited for
everything queued there before it, the model's next batch included. Here the threads hand their frames to one
marking thread, which takes what has arrived (up to ``max_batch`` frames), copies them into page-locked
memory, and uploads, marks and downloads them on a stream of its own; each caller gets its own frame back.
The arithmetic is :func:`embed_watermark_torch`'s, so the result equals marking the frame alone.
:func:`watermark_marker` picks the marker for a device: this one on a GPU, the NumPy embedder elsewhere.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from changeling.provenance.watermark import _check_frame, embed_watermark, embed_watermark_torch
from changeling.types import Frame

_IDLE_S = 0.5  # the marking thread ends after this long without work (a later call starts it again)


@dataclass
class _Request:
    frame: Frame
    done: threading.Event = field(default_factory=threading.Event)
    out: Frame | None = None
    error: BaseException | None = None


class BatchMarker:
    """A frame marker (``Callable[[Frame], Frame]``) that batches concurrent calls on ``device``.

    Safe to call from many threads; each call blocks until its frame is marked. On a CUDA device the
    transfers go through page-locked buffers on a separate stream; elsewhere (tests) the same batching runs on
    that device's ordinary tensors.
    """

    def __init__(self, device: Any, max_batch: int = 8) -> None:
        import torch

        self.device = torch.device(device)
        self.max_batch = max(1, int(max_batch))
        self.batches: deque[int] = deque(maxlen=1000)  # frames per batch, the latest (for tests and benchmarks)
        # the marking thread's seconds: copying frames into page-locked memory ("stage"), transfers and kernels
        # ("gpu"), copying the results out ("unstage"); benchmarks report them per frame
        self.seconds: dict[str, float] = {"stage": 0.0, "gpu": 0.0, "unstage": 0.0}
        self._q: queue.Queue[_Request] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stream: Any = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._host: dict[tuple[int, ...], tuple[Any, Any]] = {}  # shape -> (pinned in, pinned out)

    def __call__(self, frame: Frame) -> Frame:
        _check_frame(frame)
        req = _Request(np.ascontiguousarray(frame))
        self._q.put(req)
        self._ensure_thread()
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.out is not None
        return req.out

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="watermark", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._q.get(timeout=_IDLE_S)
            except queue.Empty:
                with self._lock:  # end, unless a request arrived after the timeout (its caller saw us alive)
                    if self._q.empty():
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            by_shape: dict[tuple[int, ...], list[_Request]] = {}
            for req in batch:
                by_shape.setdefault(req.frame.shape, []).append(req)
            for group in by_shape.values():
                self._mark(group)

    def _mark(self, group: list[_Request]) -> None:
        import torch

        try:
            shape = group[0].frame.shape
            n = len(group)
            if self._stream is None:
                marked = embed_watermark_torch(torch.from_numpy(np.stack([r.frame for r in group])).to(self.device))
                outs = list(marked.cpu().numpy())
            else:
                t0 = time.perf_counter()
                src, dst = self._buffers(shape)
                for i, r in enumerate(group):
                    np.copyto(src[i].numpy(), r.frame)
                t1 = time.perf_counter()
                with torch.cuda.stream(self._stream):
                    on_gpu = src[:n].to(self.device, non_blocking=True)
                    dst[:n].copy_(embed_watermark_torch(on_gpu), non_blocking=True)
                self._stream.synchronize()  # this stream only: the model's work on the default stream runs on
                t2 = time.perf_counter()
                outs = [dst[i].numpy().copy() for i in range(n)]
                self.seconds["stage"] += t1 - t0
                self.seconds["gpu"] += t2 - t1
                self.seconds["unstage"] += time.perf_counter() - t2
            self.batches.append(n)
            for r, o in zip(group, outs, strict=True):
                r.out = o
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch raises it
            for r in group:
                r.error = exc
        finally:
            for r in group:
                r.done.set()

    def _buffers(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        import torch

        if shape not in self._host:
            self._host.clear()  # one frame size at a time (a folder of photos in many sizes must not pile up)
            full = (self.max_batch, *shape)
            self._host[shape] = (torch.empty(full, dtype=torch.uint8, pin_memory=True),
                                 torch.empty(full, dtype=torch.uint8, pin_memory=True))
        return self._host[shape]


def watermark_marker(device: Any) -> Callable[[Frame], Frame]:
    """The frame marker for a convert on ``device``: :func:`embed_watermark` (NumPy) on the CPU; on a GPU a
    :class:`BatchMarker`, which marks the frames of all render threads together on that GPU
    (:func:`embed_watermark_torch` in batches, on a stream of its own)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return embed_watermark
    return BatchMarker(dev)
