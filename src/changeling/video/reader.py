"""Reading frames from videos, single images, image folders and numbered image sequences."""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from changeling.errors import UserError
from changeling.types import Frame
from changeling.video.images import is_image_path, read_image
from changeling.video.probe import VideoInfo, check_readable_file, open_container, probe
from changeling.video.yuv import frame_to_rgb

log = logging.getLogger(__name__)

SEQUENCE_FPS = Fraction(25)  # image sequences have no rate of their own


@dataclass(frozen=True)
class TimedFrame:
    index: int  # position among the frames that decoded (0-based)
    time: float  # presentation time in seconds
    pts: int | None  # in the stream's time base (None for images)
    image: Frame


@dataclass
class FrameSource:
    """An ordered source of RGB frames. Iterate it; ``skipped`` counts frames that failed to decode."""

    path: Path
    kind: str  # "video" | "images" | "stream" (live frames: times, no audio; not iterable here)
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frame_count: int  # best estimate before decoding (0 when unknown)
    info: VideoInfo | None = None
    images: list[Path] = field(default_factory=list)
    skipped: int = 0

    def __iter__(self) -> Iterator[TimedFrame]:
        if self.kind == "images":
            yield from self._iter_images()
        else:
            yield from self._iter_video()

    def _iter_images(self) -> Iterator[TimedFrame]:
        for i, p in enumerate(self.images):
            img = read_image(p)
            yield TimedFrame(index=i, time=float(i / self.fps), pts=None, image=img)

    def _iter_video(self) -> Iterator[TimedFrame]:
        index = 0
        with open_container(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = stream.time_base or self.time_base
            packets = container.demux(stream)
            while True:
                stopped: BaseException | None = None
                try:  # a file damaged or cut further on fails here, part of the way through
                    packet = next(packets, None)
                except _READ_ERRORS as exc:
                    stopped, packet = exc, None
                if packet is None and stopped is None:
                    break
                try:  # after a failure, the frames the decoder still holds (it runs a few frames behind)
                    frames = packet.decode() if packet is not None else stream.codec_context.decode(None)
                except av.error.FFmpegError as exc:
                    if stopped is not None:
                        raise ReadError(self.path, index, stopped) from None
                    self.skipped += 1
                    log.warning("%s: skipped a frame that failed to decode (%s)", self.path, exc)
                    continue
                for frame in frames:
                    t = float(index / self.fps) if frame.pts is None else float(frame.pts * tb)
                    try:
                        image = frame_to_rgb(frame)
                    except _READ_ERRORS as exc:
                        raise ReadError(self.path, index, exc) from None
                    yield TimedFrame(index=index, time=t, pts=frame.pts, image=image)
                    index += 1
                if stopped is not None:
                    raise ReadError(self.path, index, stopped)
        if index == 0:
            raise UserError("no frame could be decoded (truncated or damaged video?)", self.path)


# What PyAV raises on damaged input (its errors derive from FFmpegError, some also from OSError), and what a
# frame conversion raises on a frame it cannot convert.
_READ_ERRORS = (av.error.FFmpegError, OSError, ValueError)


class ReadError(UserError):
    """Reading a video stopped part of the way through (damaged or cut-off data): ``frame`` is the index of the
    frame that could not be read, so every frame before it was."""

    def __init__(self, path: Path, frame: int, cause: BaseException) -> None:
        self.frame = frame
        reason = getattr(cause, "strerror", None) or str(cause).split(":")[0] or type(cause).__name__
        super().__init__(f"reading stopped at frame {frame} ({type(cause).__name__}: {reason}); the file is "
                         "damaged or cut off there", path)


_PRINTF = re.compile(r"%0?\d*d")


def _sequence_paths(pattern: str) -> list[Path]:
    if _PRINTF.search(pattern):
        pattern = _PRINTF.sub("*", pattern)
    return sorted(Path(p) for p in glob.glob(pattern) if is_image_path(Path(p)))


def open_frames(source: Path | str) -> FrameSource:
    """Open a video file, a single image, a folder of images or a pattern (``img_%04d.png``, ``*.png``).

    Raises :class:`UserError` naming the path when it is missing, empty, unreadable, has no video stream,
    or is a folder with no images.
    """
    text = str(source)
    path = Path(source)
    if ("*" in text or _PRINTF.search(path.name)) and not path.exists():
        images = _sequence_paths(text)
        if not images:
            raise UserError("no images match this pattern", text)
        return _image_source(path, images)
    check_readable_file(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p))
        if not images:
            raise UserError("folder holds no images (png, jpg, bmp, tif, webp)", path)
        return _image_source(path, images)
    if is_image_path(path):
        return _image_source(path, [path])
    info = probe(path)
    return FrameSource(path=path, kind="video", width=info.width, height=info.height, fps=info.fps,
                       time_base=info.time_base, frame_count=info.frames, info=info)


def _image_source(path: Path, images: list[Path]) -> FrameSource:
    first = read_image(images[0])
    h, w = first.shape[:2]
    return FrameSource(path=path, kind="images", width=w, height=h, fps=SEQUENCE_FPS,
                       time_base=Fraction(1) / SEQUENCE_FPS, frame_count=len(images), images=images)


def count_frames(path: Path) -> int:
    """Decode-free frame count: demux the packets of the video stream (exact for constant and variable rate)."""
    with open_container(path) as container:
        stream = container.streams.video[0]
        n = 0
        try:
            for pkt in container.demux(stream):
                n += pkt.size > 0
        except _READ_ERRORS as exc:
            raise ReadError(Path(path), n, exc) from None
        return n
