"""The latency instrument: per frame, the time from capture (or a file frame's due time) to output, and the
frames the input dropped."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LiveReport:
    """What a live run did. ``latencies`` in seconds, one per frame output, in order; ``outputs`` the output
    times (on the input's clock); ``captured``: frames the input gave; ``dropped``: those replaced before the
    pipeline took them; ``stages``: seconds of work per stage (summed)."""

    captured: int = 0
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)
    outputs: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    output: str | None = None  # the file written, if any

    @property
    def frames(self) -> int:
        return len(self.latencies)

    @property
    def drop_rate(self) -> float:
        return self.dropped / self.captured if self.captured else 0.0

    @property
    def fps(self) -> float:
        """Output frames per second, between the first output and the last."""
        if len(self.outputs) < 2 or self.outputs[-1] <= self.outputs[0]:
            return 0.0
        return (len(self.outputs) - 1) / (self.outputs[-1] - self.outputs[0])

    def latency_ms(self, q: float) -> float:
        """The ``q`` quantile (0 to 1) of the latencies, in milliseconds (0 with no frame)."""
        return float(np.quantile(self.latencies, q) * 1000) if self.latencies else 0.0

    def stage_ms(self) -> dict[str, float]:
        """Milliseconds of work per output frame, per stage."""
        n = max(self.frames, 1)
        return {k: round(v * 1000 / n, 2) for k, v in sorted(self.stages.items())}

    def summary(self) -> str:
        """One line: frames in and out, drops, output rate, p50 and p95 latency."""
        return (f"{self.captured} frames in, {self.frames} out, {self.dropped} dropped ({self.drop_rate:.1%}); "
                f"{self.fps:.1f} frames/s; latency p50 {self.latency_ms(0.5):.0f} ms, "
                f"p95 {self.latency_ms(0.95):.0f} ms")

    def to_dict(self) -> dict[str, float | int]:
        return {"frames_in": self.captured, "frames_out": self.frames, "dropped": self.dropped,
                "drop_rate": round(self.drop_rate, 4), "fps": round(self.fps, 2),
                "p50_ms": round(self.latency_ms(0.5), 1), "p95_ms": round(self.latency_ms(0.95), 1)}


class LatencyMeter:
    """Thread-safe record of frames output: :meth:`record` at each output, :meth:`report` at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self._outputs: list[float] = []

    def record(self, due: float, out: float) -> None:
        with self._lock:
            self._latencies.append(out - due)
            self._outputs.append(out)

    def recent(self, n: int) -> tuple[int, LiveReport]:
        """Frames output so far, and a report of the last ``n`` only (a page updates it every frame: copying
        the whole history each time would grow with the session)."""
        with self._lock:
            return len(self._latencies), LiveReport(latencies=self._latencies[-n:], outputs=self._outputs[-n:])

    def report(self, captured: int, dropped: int, stages: dict[str, float] | None = None) -> LiveReport:
        with self._lock:
            return LiveReport(captured, dropped, list(self._latencies), list(self._outputs), dict(stages or {}))
