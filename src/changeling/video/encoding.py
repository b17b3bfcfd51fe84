"""Pure builders of encoder and muxer settings: testable without running a codec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from changeling.errors import UserError

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

# Audio codecs that each container takes as they are (stream copy); others are re-encoded to AAC.
_COPYABLE_AUDIO = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}),
    "mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"}),
    "matroska": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "vorbis", "flac", "pcm_s16le",
                           "pcm_s24le", "pcm_f32le"}),
}


@dataclass(frozen=True)
class VideoEncoderSettings:
    codec: str
    pix_fmt: str
    options: dict[str, str] = field(default_factory=dict)


def container_format(path: Path) -> str:
    """The FFmpeg muxer for an output path, from its suffix."""
    fmt = CONTAINERS.get(Path(path).suffix.lower())
    if fmt is None:
        allowed = ", ".join(sorted(CONTAINERS))
        raise UserError(f"unsupported output type {Path(path).suffix or '(none)'!r}; use one of {allowed}", path)
    return fmt


def h264_settings(width: int, height: int, *, crf: int = 18, preset: str = "veryfast",
                  threads: int = 0) -> VideoEncoderSettings:
    """libx264 settings. yuv420p needs even sides; odd-sized frames use yuv444p so no pixel is lost."""
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    opts = {"crf": str(crf), "preset": preset}
    if threads:
        opts["threads"] = str(threads)
    return VideoEncoderSettings(codec="libx264", pix_fmt=pix_fmt, options=opts)


def can_copy_audio(codec: str, fmt: str) -> bool:
    """Whether ``codec`` can be stream-copied into container ``fmt`` (else it is re-encoded to AAC)."""
    return codec in _COPYABLE_AUDIO.get(fmt, frozenset())


def container_options(fmt: str) -> dict[str, str]:
    """mp4/mov keep free-form metadata tags only with ``use_metadata_tags``."""
    return {"movflags": "use_metadata_tags"} if fmt in ("mp4", "mov") else {}
