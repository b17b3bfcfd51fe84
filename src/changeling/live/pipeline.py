"""Live mode: convert's steps on frames as they come, one frame in flight per stage.

::

    input thread ──▶ LatestSlot (one frame; a newer one replaces it: dropped, never queued)
      ──▶ faces thread: track (the tracker carried frame to frame) → choose → smooth → align → crop
      ──▶ model thread: the swap
      ──▶ render thread: colour → mask → sharpen → paste back → watermark
      ──▶ output thread: the sinks (file, virtual camera, the page), and the latency of each frame

The stages are :class:`~changeling.convert.pipeline.Converter`'s own steps (``plan``, ``swap``, ``render``), so
live output is rendered, and watermarked, exactly as convert renders it. One frame in flight per stage: a stage
takes its next frame only once the next stage has taken its last one, so frames do not wait in line between
stages; while the faces stage is busy or held back, the input replaces the frame in the slot instead of
queueing it (the drop).

Ending: the input runs out (a file), :meth:`Stages.stop` or Ctrl+C (a camera). The frames already inside are
still output on a normal end; on Ctrl+C they are left, and the sinks are closed either way: the file is
finished and published under its name. An error of the input (a camera unplugged, a file damaged half-way) is
raised after the frames before it were output and the file finished; any other error aborts the sinks (no
partial file under the final name).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from changeling.convert.pipeline import Converter, FramePlan, _Timer
from changeling.convert.smooth import LandmarkSmoother, params_for_strength
from changeling.convert.temporal import FaceBlender
from changeling.convert.writers import RenderedFrame
from changeling.live.inputs import CLOCK, Captured, Clock, LatestSlot
from changeling.live.sinks import Sink
from changeling.live.stats import LatencyMeter, LiveReport
from changeling.stages import END, POLL_S, Channel, Stages, Stopped
from changeling.types import Frame
from changeling.video.reader import FrameSource, TimedFrame

log = logging.getLogger(__name__)

Frames = Callable[[Callable[[], bool]], Iterator[Captured]]  # (stopped) -> the input's frames


def warm_up(conv: Converter, source: FrameSource) -> None:
    """Run every network once on a blank frame of the source's size (the first real frames would otherwise pay
    for lazy initialisation, and be dropped or late). The face source is opened again by the run."""
    blank = np.full((source.height, source.width, 3), 128, np.uint8)
    r = int(conv.swapper.resolution)
    conv.swapper(np.zeros((1, r, r, 3), np.uint8))
    conv.faces.open(source)
    conv.faces.faces([TimedFrame(0, 0.0, None, blank)])
    if conv.marker is not None:
        conv.marker(blank)


def run_live(conv: Converter, frames: Frames, source: FrameSource, sinks: Sequence[Sink], *,
             clock: Clock = CLOCK, stop: threading.Event | None = None) -> LiveReport:
    """Swap the frames of ``frames`` as they come and hand each to every sink. Returns the latency report.
    ``stop``, when set (from another thread), ends the input as the end of a file does (the frames inside are
    still output); ``source`` describes the frames (their size) to the face source."""
    conv.faces.open(source)  # a fresh tracker, carried from frame to frame
    conv.timer = _Timer()
    smoother = LandmarkSmoother(params_for_strength(conv.smooth))
    blender = FaceBlender(conv.face_smooth) if conv.face_smooth > 0 else None
    slot: LatestSlot[Captured] = LatestSlot()
    meter = LatencyMeter()
    input_error: list[BaseException] = []
    interrupted = False
    try:
        with Stages(join_timeout=10) as stages:
            stopped = (lambda: stages.stopping or stop.is_set()) if stop is not None else (lambda: stages.stopping)
            to_model: Channel[tuple[Captured, list[FramePlan]]] = stages.channel(1)
            to_render: Channel[tuple[Captured, FramePlan]] = stages.channel(1)
            to_out: Channel[tuple[Captured, RenderedFrame]] = stages.channel(1)

            def feed() -> None:
                try:
                    for captured in frames(stopped):
                        slot.offer(captured)
                except BaseException as exc:  # noqa: BLE001 - raised after the frames before it are out
                    input_error.append(exc)
                finally:
                    slot.end()

            def free(ch: Channel[Any]) -> None:
                """Wait until the next stage has taken its last item: a stage takes a frame only when it can
                hand it on at once, so no frame waits behind another between stages, and while the first
                stage waits the input's slot keeps only the newest frame."""
                while not ch.wait_empty(POLL_S):
                    if stages.stopping:
                        raise Stopped

            def faces() -> None:
                while not slot.ended:
                    if stages.stopping:
                        raise Stopped
                    free(to_model)
                    captured = slot.take(POLL_S)
                    if captured is not None:
                        c0 = time.thread_time()
                        plans = conv.plan([captured.frame], smoother)
                        conv.timer.add("faces_cpu", time.thread_time() - c0)
                        stages.put(to_model, (captured, plans))
                stages.put(to_model, END)

            def relay(name: str | None, src: Channel[Any], dst: Channel[Any], fn: Callable[[Any], Any]) -> None:
                """Hand each item of ``src`` through ``fn`` to ``dst`` (its thread time as ``NAME_cpu``)."""
                while True:
                    free(dst)
                    item = stages.get(src)
                    if item is END:
                        break
                    captured, work = item
                    c0 = time.thread_time()
                    done = fn(work)
                    if name is not None:
                        conv.timer.add(f"{name}_cpu", time.thread_time() - c0)
                    stages.put(dst, (captured, done))
                stages.put(dst, END)

            def swapped(plans: list[FramePlan]) -> FramePlan:
                conv.swap(plans, blender)
                return plans[0]

            def output(item: tuple[Captured, RenderedFrame]) -> None:
                captured, rendered = item
                t0 = time.perf_counter()
                for sink in sinks:
                    sink.write(rendered)
                meter.record(captured.due, clock())
                conv.timer.add("output", time.perf_counter() - t0)

            stages.start("input", feed)
            stages.start("faces", faces)
            stages.start("model", lambda: relay("model", to_model, to_render, swapped))
            stages.start("render", lambda: relay(None, to_render, to_out, conv.render))  # it times itself
            stages.consume("output", to_out, output)
            try:
                stages.join()
            except KeyboardInterrupt:
                interrupted = True
                log.info("live: stopping (Ctrl+C)")
                stages.stop()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    for sink in sinks:
        sink.close()
    report = meter.report(slot.offered, slot.dropped, conv.timer.seconds)
    if input_error and not interrupted:
        raise input_error[0]
    return report


class LiveSession:
    """Live mode one frame at a time, for a caller that brings each frame itself (the web UI's stream): the
    same steps as :func:`run_live` in the caller's thread, the tracker, smoothing and face blending carried
    between calls.
    Thread-safe (one frame at a time)."""

    def __init__(self, conv: Converter, source: FrameSource, clock: Clock = CLOCK) -> None:
        self.conv = conv
        self.clock = clock
        self._lock = threading.Lock()
        self._smoother = LandmarkSmoother(params_for_strength(conv.smooth))
        self._blender = FaceBlender(conv.face_smooth) if conv.face_smooth > 0 else None
        self._start = clock()
        self._index = 0
        self.meter = LatencyMeter()
        conv.faces.open(source)

    def step(self, image: Frame, due: float | None = None) -> RenderedFrame:
        """Swap one (H, W, 3) uint8 RGB frame (watermarked, like every frame live mode emits). ``due``: when it
        was captured, on the session's clock (default: now)."""
        with self._lock:
            now = self.clock()
            tf = TimedFrame(self._index, now - self._start, None, np.ascontiguousarray(image, dtype=np.uint8))
            self._index += 1
            plans = self.conv.plan([tf], self._smoother)
            self.conv.swap(plans, self._blender)
            rendered = self.conv.render(plans[0])
            self.meter.record(now if due is None else due, self.clock())
            return rendered
