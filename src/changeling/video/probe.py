"""What a video holds: size, frame rate, frame count, duration, audio."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from changeling.errors import UserError
from changeling.fileio import describe_mode


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction  # average frame rate
    time_base: Fraction  # of the video stream's timestamps
    frames: int  # as the container reports it (0 when unknown)
    duration: float  # seconds, of the video stream
    audio_codec: str | None
    audio_duration: float | None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def check_readable_file(path: Path) -> Path:
    """The checks every input gets before FFmpeg sees it."""
    path = Path(path)
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise UserError("no such file or folder", path) from None
    except OSError as exc:  # a name too long, a loop of links...: one line, not a traceback
        raise UserError(f"cannot be read ({exc.strerror or type(exc).__name__})", path) from None
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise UserError("empty file (0 bytes)", path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):  # opening a FIFO waits for a writer
        raise UserError(f"not a regular file or folder ({describe_mode(st.st_mode)})", path)
    return path


def open_container(path: Path) -> av.container.InputContainer:
    path = check_readable_file(path)
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise UserError(f"not a video FFmpeg can read ({exc.strerror or type(exc).__name__})", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot be opened ({exc})", path) from None


def _seconds(value: int | None, tb: Fraction | None) -> float | None:
    if value is None or tb is None:
        return None
    return float(value * tb)


def probe(path: Path) -> VideoInfo:
    """Read a video's header. Raises :class:`UserError` for missing, empty, unreadable or video-less files."""
    path = Path(path)
    with open_container(path) as container:
        if not container.streams.video:
            raise UserError("has no video stream", path)
        vs = container.streams.video[0]
        if vs.codec_context is None:  # FFmpeg has no decoder for it: an unknown codec or a damaged header
            raise UserError("video stream cannot be decoded (unknown codec or damaged header)", path)
        width, height = vs.codec_context.width, vs.codec_context.height
        if not width or not height:
            raise UserError("video stream has no frame size (damaged header?)", path)
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        tb = vs.time_base or Fraction(1, 90000)
        duration = _seconds(vs.duration, vs.time_base)
        if duration is None and container.duration is not None:
            duration = container.duration / 1_000_000
        audio_codec = audio_duration = None
        if container.streams.audio:
            a = container.streams.audio[0]
            audio_codec = a.codec_context.name
            audio_duration = _seconds(a.duration, a.time_base)
        return VideoInfo(path=path, width=width, height=height, fps=Fraction(rate), time_base=Fraction(tb),
                         frames=int(vs.frames or 0), duration=float(duration or 0.0), audio_codec=audio_codec,
                         audio_duration=audio_duration)
