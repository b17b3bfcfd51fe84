"""Where live frames go: a file (through convert's writers, so it is marked as convert marks), a virtual camera
(pyvirtualcam, the optional extra ``[live]``), or a function (the web UI, tests). Every frame arrives already
watermarked by the renderer."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from changeling.convert.writers import FrameWriter, RenderedFrame, WriterFactory
from changeling.errors import UserError
from changeling.video.reader import FrameSource


class Sink(Protocol):
    """Receives rendered frames in order (from one thread); ``close`` finishes, ``abort`` throws away."""

    def write(self, frame: RenderedFrame) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class FileSink:
    """A file written by convert's writer (synthetic-media tags, C2PA where available) under a temporary name,
    renamed to ``path`` by :meth:`close` only."""

    def __init__(self, make: WriterFactory, path: Path, source: FrameSource) -> None:
        self._writer: FrameWriter = make(Path(path), source)
        self.path = Path(path)

    def write(self, frame: RenderedFrame) -> None:
        self._writer.write(frame, self._writer.prepare(frame))

    def close(self) -> None:
        self.path = self._writer.close()

    def abort(self) -> None:
        self._writer.abort()


class CallbackSink:
    """Hands each frame to ``fn``."""

    def __init__(self, fn: Callable[[RenderedFrame], object]) -> None:
        self._fn = fn

    def write(self, frame: RenderedFrame) -> None:
        self._fn(frame)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


# (width, height, fps) -> a camera with send(RGB frame) and close(): pyvirtualcam.Camera, or a fake in tests
CameraBackend = Callable[[int, int, float], Any]
INSTALL_HINT = {
    "linux": "install v4l2loopback (e.g. `sudo apt install v4l2loopback-dkms`) and load it: "
             "`sudo modprobe v4l2loopback exclusive_caps=1`",
    "win32": "install OBS Studio and start its virtual camera once",
    "darwin": "install OBS Studio and start its virtual camera once",
}


def install_hint(platform: str = sys.platform) -> str:
    """What to install for a virtual camera on ``platform``."""
    key = "linux" if platform.startswith("linux") else platform
    return INSTALL_HINT.get(key, "install a virtual camera device that pyvirtualcam supports")


def pyvirtualcam_backend() -> CameraBackend:
    """pyvirtualcam's camera (RGB frames); :class:`UserError` saying how to install it when it is missing."""
    try:
        import pyvirtualcam
    except ImportError:
        raise UserError("--virtual-camera needs pyvirtualcam: pip install 'changeling[live]'") from None

    def open_camera(width: int, height: int, fps: float) -> Any:
        return pyvirtualcam.Camera(width=width, height=height, fps=fps, fmt=pyvirtualcam.PixelFormat.RGB)

    return open_camera


class VirtualCameraSink:
    """The frames as a virtual camera (for Zoom, OBS, a browser). A missing device is a :class:`UserError` that
    says what to install on this platform."""

    def __init__(self, width: int, height: int, fps: float, backend: CameraBackend | None = None,
                 platform: str = sys.platform) -> None:
        open_camera = backend if backend is not None else pyvirtualcam_backend()
        try:
            self._cam = open_camera(width, height, fps)
        except RuntimeError as exc:  # pyvirtualcam's way of saying there is no device (or it is taken)
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise UserError(f"no virtual camera: {reason}; {install_hint(platform)}") from None
        self.device = str(getattr(self._cam, "device", "virtual camera"))

    def write(self, frame: RenderedFrame) -> None:
        self._cam.send(frame.image)

    def close(self) -> None:
        self._cam.close()

    def abort(self) -> None:
        self._cam.close()
