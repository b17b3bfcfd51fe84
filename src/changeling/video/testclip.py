"""Small synthetic clips (moving pattern plus a tone) for tests and benchmarks; no faces, no footage."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from changeling.types import Frame


def pattern_frame(index: int, width: int, height: int) -> Frame:
    """A deterministic colourful frame that changes with ``index``."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = (x / max(width - 1, 1) * 255 + index * 7) % 256
    g = (y / max(height - 1, 1) * 255 + index * 3) % 256
    b = ((x + y) / max(width + height - 2, 1) * 255 + index * 11) % 256
    img = np.stack([r, g, b], axis=-1).astype(np.uint8)
    s = max(4, min(width, height) // 8)
    cx = int((index * 5) % max(width - s, 1))
    img[height // 2 - s // 2: height // 2 + s // 2, cx: cx + s] = 255
    return img


def write_clip(path: Path, *, frames: int = 12, width: int = 64, height: int = 48, fps: float = 24,
               audio: str | None = "aac", sample_rate: int = 48000, vfr_times: list[float] | None = None,
               images: list[Frame] | None = None, crf: int = 18) -> Path:
    """Write a clip with PyAV directly (independent of :class:`VideoWriter`) so tests can compare the two.

    ``audio`` is an encoder name ("aac", "pcm_s16le", "libopus", ...) or None; a 440 Hz tone lasts as long as
    the video. ``vfr_times`` gives each frame's time in seconds for a variable frame rate clip.
    """
    path = Path(path)
    n = len(images) if images is not None else frames
    rate = Fraction(fps).limit_denominator(1000)
    tb = Fraction(1, 90000) if vfr_times is not None else 1 / rate
    codec = {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(path.suffix.lower(), "libx264")
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": str(crf), "preset": "ultrafast"} if codec == "libx264" else {}
        vs.codec_context.time_base = tb
        aus = None
        if audio:
            aus = out.add_stream(audio, rate=sample_rate)
            aus.codec_context.layout = "mono"
        duration = (vfr_times[-1] + 1 / float(rate)) if vfr_times is not None else n / float(rate)
        for i in range(n):
            img = images[i] if images is not None else pattern_frame(i, width, height)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = round(Fraction(vfr_times[i]).limit_denominator(90000) / tb) if vfr_times is not None else i
            vf.time_base = tb
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if aus is not None:
            fmt = aus.codec_context.format.name if aus.codec_context.format else "fltp"
            total = int(round(duration * sample_rate))
            chunk = 1024
            t0 = 0
            while t0 < total:
                m = min(chunk, total - t0)
                t = (np.arange(t0, t0 + m) / sample_rate).astype(np.float32)
                tone = 0.3 * np.sin(2 * np.pi * 440 * t)
                if fmt.startswith("s16"):
                    data = (tone * 32767).astype(np.int16)[None, :]
                    af = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
                else:
                    af = av.AudioFrame.from_ndarray(tone[None, :].astype(np.float32), format="fltp", layout="mono")
                af.sample_rate = sample_rate
                af.pts = t0
                af.time_base = Fraction(1, sample_rate)
                for p in aus.encode(af):
                    out.mux(p)
                t0 += m
            for p in aus.encode(None):
                out.mux(p)
    return path


def write_audio_only(path: Path) -> Path:
    """A file with one silent mono AAC stream and no video (a bad input for every stage that wants frames)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48000
        for pkt in stream.encode(frame):
            out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return Path(path)


def break_mp4_at(path: Path, frame: int) -> Path:
    """Damage an MP4 written by :func:`write_clip` (video only) so that demuxing fails at ``frame``: its entry in
    the sample-size table ('stsz') claims 768 MB, which FFmpeg refuses to read ("Cannot allocate memory") after
    handing out the frames before it. The container still opens and probes as a good video."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"stsz")
    if at < 0:
        raise ValueError(f"{path} has no sample-size table")
    uniform, count = int.from_bytes(data[at + 8:at + 12], "big"), int.from_bytes(data[at + 12:at + 16], "big")
    if uniform or not 0 < frame < count:
        raise ValueError(f"{path}: cannot damage frame {frame} of {count}")
    entry = at + 16 + 4 * frame
    data[entry:entry + 4] = (0x30000000).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path
