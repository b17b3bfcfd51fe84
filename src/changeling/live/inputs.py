"""Where live frames come from, and the one-frame slot that drops them when the pipeline falls behind.

A camera (through PyAV's v4l2, avfoundation or dshow input) gives each frame the moment it was read; a video
file (``--input``, for tests and demos) is played in real time: frame ``i`` is *due* at the start plus its
presentation time, and is not handed on before then. Latency is measured from that moment (the capture, or the
due time) to the output.

The input hands frames to the pipeline through :class:`LatestSlot`: it holds one frame, and a new frame
replaces one the pipeline has not taken yet (that one is counted as dropped). Frames are never queued, so a
pipeline that falls behind works on the newest frame instead of an ever older backlog.
"""

from __future__ import annotations

import errno
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Generic, TypeVar

import av

from changeling.errors import UserError
from changeling.video.reader import FrameSource, TimedFrame, open_frames
from changeling.video.yuv import frame_to_rgb

T = TypeVar("T")
Clock = Callable[[], float]
CLOCK: Clock = time.perf_counter  # the one clock of due times, capture times and output times


@dataclass(frozen=True)
class Captured:
    """A frame as the input gave it: ``due`` is its capture (or due) time on :data:`CLOCK`."""

    frame: TimedFrame
    due: float


class LatestSlot(Generic[T]):
    """One item between the input and the pipeline: :meth:`offer` replaces an item not yet taken (counted in
    ``dropped``); :meth:`take` waits for one. After :meth:`end`, :meth:`take` gives what is left, then ``None``
    with ``ended`` set."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._ended = False
        self.offered = 0
        self.dropped = 0

    def offer(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.offered += 1
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        """True once :meth:`end` was called and the last item was taken."""
        with self._cond:
            return self._ended and self._item is None

    def take(self, timeout: float) -> T | None:
        """The waiting item (the slot is emptied), or ``None`` after ``timeout`` seconds or at the end."""
        with self._cond:
            if self._item is None and not self._ended:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item


# ---- a video file played in real time ----------------------------------------------------------------------


def open_file(path: Path) -> FrameSource:
    """The file ``--input`` names (a video, or images played at 25 frames/s); :class:`UserError` when it cannot
    be read."""
    return open_frames(path)


def paced(frames: FrameSource, stopped: Callable[[], bool], clock: Clock = CLOCK,
          poll: float = 0.05) -> Iterator[Captured]:
    """The frames of ``frames``, each handed on no earlier than its due time: the first one now, the others
    their presentation time after it. A frame decoded late is handed on at once (its lateness counts in its
    latency). Ends early when ``stopped()``."""
    start: float | None = None
    first = 0.0
    for tf in frames:
        if start is None:
            start, first = clock(), tf.time
        due = start + (tf.time - first)
        while (wait := due - clock()) > 0:
            if stopped():
                return
            time.sleep(min(wait, poll))
        if stopped():
            return
        yield Captured(tf, due)


# ---- a camera -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraSpec:
    """How FFmpeg opens a camera on this platform: its input format and its device name."""

    format: str
    device: str
    shown: str  # the camera as messages name it


def camera_spec(camera: str, platform: str = sys.platform) -> CameraSpec:
    """``camera`` (an index such as ``0``, or a device: ``/dev/video2`` on Linux, a DirectShow name on
    Windows) as FFmpeg's input on ``platform``."""
    index = camera.isdigit()
    if platform.startswith("linux"):
        device = f"/dev/video{int(camera)}" if index else camera
        return CameraSpec("v4l2", device, f"camera {camera} ({device})" if index else f"camera {device}")
    if platform == "darwin":
        return CameraSpec("avfoundation", f"{int(camera)}:none" if index else camera, f"camera {camera}")
    if platform.startswith("win"):
        if index:
            raise UserError(f"on Windows give the camera's name, not an index ({camera}): list them with "
                            "`ffmpeg -list_devices true -f dshow -i dummy`, then --camera \"NAME\"")
        return CameraSpec("dshow", camera if camera.startswith("video=") else f"video={camera}", f"camera {camera}")
    raise UserError(f"cameras are not supported on {platform}; use --input FILE")


def _camera_error(spec: CameraSpec, exc: BaseException) -> UserError:
    code = getattr(exc, "errno", None)
    if code == errno.EBUSY:
        return UserError(f"{spec.shown} is busy: another program is using it")
    if code in (errno.EACCES, errno.EPERM):
        return UserError(f"{spec.shown}: permission denied (on Linux, join the 'video' group)")
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or (spec.format == "v4l2" and not Path(spec.device).exists()):
        return UserError(f"no such {spec.shown}: is it plugged in? (try another --camera index)")
    reason = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0]
    return UserError(f"{spec.shown} cannot be opened: {reason}")


class Camera:
    """A camera opened through PyAV: its frame size and rate, and its frames as they come."""

    def __init__(self, camera: str, width: int = 0, height: int = 0, fps: int = 0,
                 platform: str = sys.platform) -> None:
        self.spec = camera_spec(camera, platform)
        options = {}
        if width and height:
            options["video_size"] = f"{width}x{height}"
        if fps:
            options["framerate"] = str(fps)
        try:
            self._container = av.open(self.spec.device, format=self.spec.format, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise _camera_error(self.spec, exc) from None
        if not self._container.streams.video:
            self._container.close()
            raise UserError(f"{self.spec.shown} gives no video")
        stream = self._container.streams.video[0]
        self._decoded = self._container.decode(stream)
        try:  # the size of the frames it gives (a camera may not give the mode asked for, or announced)
            first = next(self._decoded, None)
        except (av.error.FFmpegError, OSError) as exc:
            self._container.close()
            raise _camera_error(self.spec, exc) from None
        if first is None:
            self._container.close()
            raise UserError(f"{self.spec.shown} gives no frames")
        self.width, self.height = int(first.width), int(first.height)
        rate = stream.average_rate or stream.guessed_rate or (fps or 30)
        self.fps = Fraction(rate).limit_denominator(1001)

    def source(self) -> FrameSource:
        """The camera as the writers see a source: a stream of timed frames, no audio."""
        return FrameSource(path=Path(self.spec.device), kind="stream", width=self.width, height=self.height,
                           fps=self.fps, time_base=Fraction(1, 90_000), frame_count=0)

    def close(self) -> None:
        self._container.close()

    def frames(self, stopped: Callable[[], bool], clock: Clock = CLOCK) -> Iterator[Captured]:
        """Frames until ``stopped()``, each stamped with the moment it was read; the camera is closed at the
        end."""
        start: float | None = None
        try:
            for index, frame in enumerate(self._decoded):  # after the first (read when opened: stale by now)
                if stopped():
                    return
                now = clock()
                if start is None:
                    start = now
                yield Captured(TimedFrame(index, now - start, None, frame_to_rgb(frame)), now)
        except (av.error.FFmpegError, OSError) as exc:
            raise _camera_error(self.spec, exc) from None
        finally:
            self.close()
