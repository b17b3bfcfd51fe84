"""H.264 video writer that keeps timestamps (so variable frame rate survives), carries the source audio,
writes container metadata, and only ever shows a complete file under the final name."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np

from changeling.errors import UserError
from changeling.fileio import publish, temp_name
from changeling.types import Frame
from changeling.video.encoding import can_copy_audio, container_format, container_options, h264_settings
from changeling.video.probe import open_container

log = logging.getLogger(__name__)

FRAME_THREADS_FROM = 480  # frame height from which x264 encodes with frame threads


def check_output_path(path: Path, inputs: Sequence[Path] = ()) -> Path:
    """An output path must be in an existing writable folder and must not be one of the inputs."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise UserError("the output folder does not exist", parent)
    if not parent.is_dir():
        raise UserError("the output folder is not a folder", parent)
    if not os.access(parent, os.W_OK):
        raise UserError("the output folder cannot be written (permission denied)", parent)
    if path.is_dir():
        raise UserError("the output path is a folder; give a file name", path)
    for src in inputs:
        try:
            if Path(src).exists() and path.exists() and path.samefile(src):
                raise UserError("the output path is the input; choose another name", path)
        except OSError:
            pass
        if Path(src).resolve() == path.resolve():
            raise UserError("the output path is the input; choose another name", path)
    return path


def partial_path(path: Path) -> Path:
    """A temporary name to write ``path`` under until it is complete: ``.NAME.<pid>-<random>.partial``, unique
    to the process and the call, so two runs never write into one temporary."""
    return temp_name(Path(path), ".partial")


def partials(path: Path) -> list[Path]:
    """The temporaries of ``path`` now beside it (from :func:`partial_path`, and the ``.NAME.partial`` of
    earlier versions): what a killed run leaves. Only the holder of ``path``'s lock may delete them."""
    path = Path(path)
    own = re.compile(rf"^\.{re.escape(path.name)}(\.\d+-[0-9a-f]+)?\.partial$")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        return sorted(p for p in parent.iterdir() if own.match(p.name))
    except OSError:
        return []


class _AudioCarrier:
    """Copies (or re-encodes to AAC) the first audio stream of a source into an output container,
    interleaved with the video by time."""

    def __init__(self, source: Path, output: av.container.OutputContainer, fmt: str) -> None:
        self._in = open_container(source)
        self._stream_in = self._in.streams.audio[0]
        codec = self._stream_in.codec_context.name
        self.copy = can_copy_audio(codec, fmt)
        if self.copy:
            self._out = output.add_stream_from_template(self._stream_in)
        else:
            rate = self._stream_in.codec_context.sample_rate or 48000
            self._out = output.add_stream("aac", rate=rate)
            channels = self._stream_in.codec_context.channels or 2
            layout = {1: "mono", 2: "stereo"}.get(channels, "5.1" if channels == 6 else "stereo")
            self._out.codec_context.layout = layout
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._packets: Iterator[av.Packet] = self._in.demux(self._stream_in)
        self._pending: av.Packet | None = None
        self._done = False
        self._output = output
        log.debug("audio %s: %s", codec, "copied" if self.copy else "re-encoded to AAC")

    def _emit(self, packet: av.Packet) -> None:
        if self.copy:
            if packet.dts is None and packet.pts is None:
                return
            packet.stream = self._out
            self._output.mux(packet)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return
        for frame in frames:
            frame.pts = None
            for rf in self._resampler.resample(frame):
                self._output.mux(self._out.encode(rf))

    def pump(self, until: float | None) -> None:
        """Write audio packets up to time ``until`` (seconds); ``None`` writes the rest."""
        while not self._done:
            pkt = self._pending or next(self._packets, None)
            self._pending = None
            if pkt is None:
                self._done = True
                break
            if pkt.size == 0:
                continue
            t = float(pkt.pts * pkt.time_base) if pkt.pts is not None and pkt.time_base else None
            if until is not None and t is not None and t > until:
                self._pending = pkt
                return
            self._emit(pkt)
        if until is None and not self.copy:
            for rf in self._resampler.resample(None):
                self._output.mux(self._out.encode(rf))
            self._output.mux(self._out.encode(None))

    def close(self) -> None:
        self._in.close()


class VideoWriter:
    """Write RGB frames as H.264 (yuv420p) to mp4/mkv/mov with the source's audio.

    Use as a context manager. Frames are written under a temporary name that is renamed to ``path`` only on a
    clean exit; an exception (or Ctrl+C) removes it. ``time_base`` plus per-frame ``pts`` keep the source's
    exact timing (variable frame rate included); without pts, frames are spaced at ``fps``.
    """

    def __init__(self, path: Path, *, width: int, height: int, fps: Fraction | float,
                 time_base: Fraction | None = None, crf: int = 18, preset: str = "veryfast",
                 audio_from: Path | None = None, metadata: dict[str, str] | None = None,
                 inputs: Sequence[Path] = ()) -> None:
        self.path = check_output_path(Path(path), inputs=[*inputs, *( [audio_from] if audio_from else [])])
        self.fmt = container_format(self.path)
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        # Coarse source time bases (Matroska's 1/1000) would round frame times; 1/90000 holds common rates
        # exactly, and times within 1.5 ms of the rate's grid are snapped onto it (see write()).
        tb = Fraction(time_base) if time_base else 1 / self.fps
        self.time_base = tb if tb.denominator >= 10_000 or tb == 1 / self.fps else Fraction(1, 90000)
        self.settings = h264_settings(self.width, self.height, crf=crf, preset=preset)
        self._tmp = partial_path(self.path)
        self._container: av.container.OutputContainer | None = None
        self._audio_from = audio_from
        self._metadata = metadata or {}
        self._audio: _AudioCarrier | None = None
        self._last_pts: int | None = None
        self.frames_written = 0

    def __enter__(self) -> VideoWriter:
        self.open()
        return self

    def open(self) -> None:
        self._container = av.open(str(self._tmp), mode="w", format=self.fmt,
                                  options=container_options(self.fmt))
        for k, v in self._metadata.items():
            self._container.metadata[k] = v
        stream = self._container.add_stream(self.settings.codec, rate=self.fps)
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = self.settings.pix_fmt
        stream.options = dict(self.settings.options)
        # From SD up, x264's own frame threads (PyAV asks for slice threads): encode() hands a frame over and
        # returns, so one feeding thread keeps many cores busy (1080p convert on a 16-core machine was capped by
        # this thread). Small frames keep slice threads: nothing to gain, and frame threads' rate control costs
        # a little quality at high CRF.
        if self.height >= FRAME_THREADS_FROM:
            stream.codec_context.thread_type = "FRAME"
        stream.codec_context.time_base = self.time_base
        stream.time_base = self.time_base
        self._stream = stream
        if self._audio_from is not None:
            try:
                with open_container(self._audio_from) as c:
                    has_audio = bool(c.streams.audio)
            except UserError:
                has_audio = False
            if has_audio:
                self._audio = _AudioCarrier(self._audio_from, self._container, self.fmt)

    def _next_pts(self, time: float | None) -> int:
        """The timestamp of the next frame: ``time`` seconds (snapped to the rate's grid within 1.5 ms), or the
        next slot at ``fps``; strictly rising."""
        if time is None:
            pts = 0 if self._last_pts is None else self._last_pts + round(1 / self.fps / self.time_base)
        else:
            exact = Fraction(time).limit_denominator(10_000_000)
            slot = round(exact * self.fps)
            if abs(exact - slot / self.fps) < Fraction(3, 2000):
                exact = slot / self.fps
            pts = round(exact / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # timestamps must rise strictly
        self._last_pts = pts
        return pts

    def _encode(self, frame: av.VideoFrame, time: float | None) -> None:
        if self._container is None:
            raise RuntimeError("VideoWriter is not open")
        pts = self._next_pts(time)
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1
        if self._audio is not None:
            self._audio.pump(float(pts * self.time_base) + 0.5)

    def write(self, image: Frame, time: float | None = None) -> None:
        """Append one (H, W, 3) uint8 RGB frame shown at ``time`` seconds (default: next slot at ``fps``)."""
        if image.dtype != np.uint8 or image.shape != (self.height, self.width, 3):
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) uint8 frame, "
                             f"got {image.shape} {image.dtype}")
        self._encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"), time)

    def write_i420(self, planes: np.ndarray, time: float | None = None) -> None:
        """Append one frame already in the encoder's layout: OpenCV's I420 planes, (H * 3 / 2, W) uint8
        (``cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)``). Converting in the caller's threads keeps FFmpeg's
        colour conversion off the single thread that feeds the encoder. Needs even sides (yuv420p)."""
        if self.settings.pix_fmt != "yuv420p":
            raise ValueError("I420 frames need even frame sides")
        if planes.dtype != np.uint8 or planes.shape != (self.height * 3 // 2, self.width):
            raise ValueError(f"expected ({self.height * 3 // 2}, {self.width}) uint8 I420 planes, got {planes.shape}")
        self._encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(planes), format="yuv420p"), time)

    def close(self, before_publish: Callable[[Path], None] | None = None) -> Path:
        """Finish the file and move it to its final name. ``before_publish`` gets the finished file under its
        temporary name first (to sign it, say): a run killed at any moment leaves either nothing under the
        final name or the whole, signed file."""
        assert self._container is not None
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.pump(None)
            self._audio.close()
        self._container.close()
        self._container = None
        if self.frames_written == 0:
            self._tmp.unlink(missing_ok=True)
            raise UserError("no frames were written", self.path)
        try:
            if before_publish is not None:
                before_publish(self._tmp)
            # on the disk before it takes the final name (which keeps the old file until then), with the
            # permissions of a plainly written file (a signer may have rewritten it through a private temporary)
            publish(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            if self._audio is not None:
                self._audio.close()
            if self._container is not None:
                self._container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass
        self._container = None
        self._tmp.unlink(missing_ok=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: Path, frames: Sequence[Frame], fps: float, **kwargs: Any) -> Path:
    """Convenience: write a list of frames at a constant rate."""
    h, w = frames[0].shape[:2]
    with VideoWriter(path, width=w, height=h, fps=fps, **kwargs) as wr:
        for f in frames:
            wr.write(f)
    return Path(path)
