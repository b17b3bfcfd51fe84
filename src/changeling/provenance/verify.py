"""``verify``: does an image or a video carry changeling's provenance marks?

Three independent marks are checked: the invisible watermark in sampled frames, the synthetic-media metadata
and a C2PA manifest. The watermark is decided two ways, and either suffices: a sampled frame reads the payload
on its own (>= 54 of 61 bits), or the soft votes of all sampled frames, pooled, do. Lossy re-encoding blurs the
mark in some frames more than in others (H.264 predicts a moving picture from frames whose mark sat elsewhere);
pooling lets the frames that kept it carry those that did not. Frames are read as written first; when that
finds nothing, at the geometries a crop, a change of scale or a mirror would have left
(:mod:`changeling.provenance.search`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from PIL import Image

from changeling.errors import UserError
from changeling.provenance import c2pa as c2pa_marks
from changeling.provenance.metadata import (
    MetadataFinding,
    read_image_metadata,
    read_video_metadata,
)
from changeling.provenance.search import find_watermark
from changeling.provenance.watermark import MIN_SIDE, N_BITS, THRESHOLD, has_room
from changeling.types import Frame
from changeling.video.images import is_image_path, read_image
from changeling.video.probe import check_readable_file, open_container, probe

log = logging.getLogger(__name__)

# What PyAV raises on damaged input (FFmpeg's errors, I/O errors, and a frame it cannot convert)
_READ_ERRORS = (av.error.FFmpegError, OSError, ValueError, MemoryError)

Verdict = Literal["marked", "not marked"]
SEEK_ABOVE_FRAMES = 1500  # longer videos are sampled by seeking instead of decoding every frame


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found in one file."""

    path: Path
    kind: Literal["image", "video"]
    width: int
    height: int
    frames_sampled: int  # frames read for the watermark
    frames_marked: int  # of those, frames that read the payload on their own
    frame_agreements: list[float]  # bit agreement of each sampled frame, in [0, 1]
    pooled_agreement: float  # bit agreement of all sampled frames' votes together
    watermark: bool  # a frame or the pool read the payload
    watermark_geometry: str | None  # where found: "as written", "scaled 0.67x, mirrored, cropped"...; else None
    metadata: MetadataFinding
    manifest: c2pa_marks.ManifestFinding | None
    notes: list[str] = field(default_factory=list)

    @property
    def evidence(self) -> list[str]:
        found = []
        if self.watermark:
            found.append("watermark")
        if self.metadata.present:
            found.append("metadata")
        if self.manifest is not None and (self.manifest.generator or "").startswith("changeling") \
                and self.manifest.state != "Invalid":
            found.append("C2PA manifest")
        return found

    @property
    def verdict(self) -> Verdict:
        return "marked" if self.evidence else "not marked"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["verdict"] = self.verdict
        d["evidence"] = self.evidence
        d["threshold"] = THRESHOLD
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"{self.path}: {self.verdict.upper()}"
                 + (f" (changeling output: {', '.join(self.evidence)})" if self.evidence
                    else " (no changeling marks found)")]
        read = f"; read {self.watermark_geometry}" if self.watermark else ""
        if self.kind == "video":
            lines.append(f"  watermark: found in {self.frames_marked} of {self.frames_sampled} sampled frames; "
                         f"all sampled frames together: {self.pooled_agreement:.0%} of {N_BITS} bits "
                         f"({'found' if self.watermark else 'not found'}{read})")
        else:
            lines.append(f"  watermark: {'found' if self.watermark else 'not found'} "
                         f"({self.pooled_agreement:.0%} of {N_BITS} bits agree{read})")
        md = self.metadata
        lines.append(f"  metadata: {'synthetic media, made with ' + (md.generator or '?') if md.present else 'none'}")
        m = self.manifest
        if m is None:
            lines.append("  C2PA manifest: none" + ("" if c2pa_marks.available() else
                                                    " (c2pa-python not installed: not read)"))
        else:
            trust = ("signed by this installation" if m.this_installation else
                     "signature valid, certificate not trusted here" if m.state == "Valid" else
                     m.state.lower())
            lines.append(f"  C2PA manifest: {m.generator or 'unknown generator'}; {trust}; signer: {m.signer}"
                         + (f"; problems: {', '.join(m.problems)}" if m.problems else ""))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _sample_indices(total: int, n: int) -> list[int]:
    if total <= 0:
        return []
    n = min(n, total)
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, n)})


def _stopped(path: Path, frame: int, exc: BaseException) -> UserError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return UserError(f"reading stopped at frame {frame} ({reason}); the video is damaged or truncated", path)


def _decode_sequential(path: Path, n: int) -> list[Frame]:
    """Every frame decoded, ``n`` evenly spaced ones kept (exact for any codec and timing). Raises
    :class:`UserError` naming the frame where demuxing or decoding failed."""
    total = 0
    try:
        with open_container(path) as container:
            stream = container.streams.video[0]
            for pkt in container.demux(stream):
                total += pkt.size > 0
    except _READ_ERRORS as exc:
        raise _stopped(path, total, exc) from None
    wanted = set(_sample_indices(total, n))
    frames: list[Frame] = []
    i = 0
    try:
        with open_container(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if i in wanted:
                    frames.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
                i += 1
    except _READ_ERRORS as exc:
        raise _stopped(path, i, exc) from None
    return frames


def _decode_seeking(path: Path, n: int, duration: float) -> list[Frame]:
    """``n`` frames near evenly spaced times, each found by seeking to the keyframe before it."""
    frames: list[Frame] = []
    with open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = Fraction(stream.time_base or Fraction(1, 90000))
        for t in np.linspace(0, max(duration - 0.5, 0), n):
            try:
                container.seek(int(Fraction(float(t)) / tb), stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.pts is None or float(frame.pts * tb) >= t - 1e-3:
                        frames.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
                        break
            except _READ_ERRORS as exc:  # the whole video is decoded instead (and its damage named there)
                log.warning("%s: could not read a frame near %.1f s (%s)", path, t, exc)
    return frames


def sample_video_frames(path: Path, n: int = 16) -> list[Frame]:
    """Up to ``n`` RGB frames spread over a video; raises :class:`UserError` for unreadable input."""
    info = probe(path)
    estimate = info.frames or int(info.duration * float(info.fps))
    if estimate > SEEK_ABOVE_FRAMES and info.duration > 0:
        frames = _decode_seeking(path, n, info.duration)
        if len(frames) >= min(n, 2):
            return frames
        log.info("%s: seeking failed; decoding the whole video", path)
    frames = _decode_sequential(path, n)
    if not frames:
        raise UserError("no frame could be decoded (truncated or damaged video?)", path)
    return frames


def _read_picture(path: Path) -> Frame:
    """An image's colour channels: as stored where it has an alpha channel (the watermark is in the colours of
    every pixel, transparent or not, as a patch writer saves them), else as :func:`read_image` reads it."""
    image = read_image(path)  # checks the file, and composites alpha on black
    try:
        with Image.open(path) as img:
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                return np.ascontiguousarray(np.asarray(img.convert("RGBA"))[..., :3])
    except (OSError, ValueError):
        pass
    return image


def _report(path: Path, kind: Literal["image", "video"], frames: list[Frame], metadata: MetadataFinding,
            key_folder: Path | None) -> VerifyReport:
    h, w = frames[0].shape[:2]
    same_size = [f for f in frames if f.shape == frames[0].shape]  # a video that changes size: its first size
    result = find_watermark(same_size)
    agreements = [f.reading.agreement for f in result.frames]
    marked = sum(f.reading.found for f in result.frames)
    watermark = marked > 0 or result.pooled.reading.found
    notes = []
    if not watermark and not has_room(h, w):
        notes.append(f"frames of {w}x{h} are too small to carry the watermark ({MIN_SIDE}x{MIN_SIDE} at least)")
    best = result.pooled if result.pooled.reading.found or not result.frames else \
        max(result.frames, key=lambda f: f.reading.agreement)
    return VerifyReport(path=path, kind=kind, width=w, height=h, frames_sampled=len(same_size),
                        frames_marked=marked, frame_agreements=[round(a, 4) for a in agreements],
                        pooled_agreement=round(result.pooled.reading.agreement, 4), watermark=watermark,
                        watermark_geometry=best.geometry.describe() if watermark else None, metadata=metadata,
                        manifest=c2pa_marks.read_manifest(path, key_folder), notes=notes)


def verify_file(path: Path | str, frames: int = 16, *, key_folder: Path | None = None) -> VerifyReport:
    """Check an image or a video for changeling's marks. Raises :class:`UserError` for a missing, empty or
    unreadable file. ``frames``: how many frames of a video to read (spread evenly over it)."""
    path = check_readable_file(Path(path))
    if path.is_dir():
        raise UserError("is a folder, expected an image or a video", path)
    if frames < 1:
        raise UserError(f"--frames must be at least 1, got {frames}")
    if is_image_path(path):
        image = _read_picture(path)
        try:
            metadata = read_image_metadata(path)
        except OSError:
            metadata = MetadataFinding(present=False, generator=None)
        return _report(path, "image", [image], metadata, key_folder)
    sampled = sample_video_frames(path, frames)
    try:
        metadata = read_video_metadata(path)
    except _READ_ERRORS:
        metadata = MetadataFinding(present=False, generator=None)
    return _report(path, "video", sampled, metadata, key_folder)
