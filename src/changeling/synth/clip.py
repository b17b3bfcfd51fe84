"""Render a portrait under a motion into frames, and write them as a clip with a speech-like audio track.

Every frame comes with its ground truth: the 468 landmarks where the motion put them (output pixels) and the
motion's parameters at that frame's time.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from changeling import __version__
from changeling.masks import regions as R
from changeling.progress import iterate
from changeling.synth.audio import SAMPLE_RATE, speech_audio
from changeling.synth.lighting import relight
from changeling.synth.motion import PARAMS, Motion
from changeling.synth.portraits import Portrait, load_portrait
from changeling.synth.rig import Rig, make_rig, pose
from changeling.synth.warp import piecewise_affine_maps, warp
from changeling.types import Frame
from changeling.video.writer import VideoWriter, check_output_path

log = logging.getLogger(__name__)

_MOUTH_DARK = np.array([48, 14, 18], dtype=np.float32)
_TEETH = np.array([214, 206, 192], dtype=np.float32)


@dataclass(frozen=True)
class SynthFrame:
    index: int
    time: float  # seconds
    image: Frame  # (H, W, 3) uint8 RGB
    landmarks: NDArray[np.float32]  # (468, 3) ground truth: x, y output pixels, z depth scaled like x
    params: dict[str, float]  # the motion at this frame


@dataclass(frozen=True)
class ClipInfo:
    """What :func:`make_clip` wrote, with the ground truth of every frame."""

    path: Path
    portrait: str
    seed: int  # the motion's seed
    width: int
    height: int
    fps: Fraction
    frames: int
    duration: float  # seconds of video (frames / fps)
    audio_seconds: float  # seconds of audio written
    landmarks: NDArray[np.float32] = field(repr=False)  # (frames, 468, 3)
    params: dict[str, NDArray[np.float64]] = field(repr=False)  # name -> (frames,)

    def save_truth(self, path: Path) -> Path:
        """Write the ground truth as a NumPy .npz (landmarks and one array per parameter; no pickle)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        os.close(fd)
        try:
            arrays: dict[str, NDArray[np.float64] | NDArray[np.float32]] = {
                "landmarks": self.landmarks, "fps": np.array(float(self.fps)), **self.params}
            np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _paint_mouth(image: Frame, landmarks: NDArray[np.float32], mouth_open: float) -> Frame:
    """Fill the opening between the inner lips with a dark mouth and a band of upper teeth, fading in as the
    mouth opens (a portrait smiling with its teeth shows them as they are while the mouth is at rest)."""
    inner = landmarks[list(R.LIPS_INNER), :2]
    opening = float(np.linalg.norm(landmarks[14, :2] - landmarks[13, :2]))
    alpha = float(np.clip(mouth_open / 0.15, 0.0, 1.0))
    if alpha <= 0 or opening < 1.0:
        return image
    h, w = image.shape[:2]
    x0, y0 = np.floor(inner.min(0)).astype(int) - 2
    x1, y1 = np.ceil(inner.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return image
    poly = np.round((inner - [x0, y0]) * 16).astype(np.int32)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    teeth = np.zeros_like(mask)
    band = 0.22 * opening
    cv2.fillPoly(teeth, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    shifted = np.zeros_like(mask)
    cv2.fillPoly(shifted, [poly + np.array([0, int(round(band * 16))])], 255, lineType=cv2.LINE_AA, shift=4)
    teeth = np.minimum(teeth, 255 - shifted).astype(np.float32) / 255.0
    m = mask.astype(np.float32)[..., None] / 255.0 * alpha
    fill = _MOUTH_DARK + (_TEETH - _MOUTH_DARK) * teeth[..., None]
    out = image.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(region * (1 - m) + fill * m + 0.5, 0, 255).astype(np.uint8)
    return out


def render_frame(rig: Rig, params: dict[str, float]) -> tuple[Frame, NDArray[np.float32]]:
    """One frame of ``rig`` under ``params``: the (H, W, 3) uint8 image and its (468, 3) landmarks."""
    posed = pose(rig, params)
    maps = piecewise_affine_maps(rig.points[:, :2], posed.points, rig.triangles, rig.size, posed.to_canvas,
                                 depth=posed.depth)
    image = warp(rig.canvas, maps)
    image = _paint_mouth(image, posed.landmarks, params["mouth_open"])
    image = relight(image, params["light_angle"], params["light_strength"], params["warmth"])
    return image, posed.landmarks


def render_frames(portrait: Portrait | str, motion: Motion, size: int | tuple[int, int], fps: float,
                  *, progress: bool = False) -> Iterator[SynthFrame]:
    """The frames of ``portrait`` under ``motion`` at ``fps``, with their ground truth. ``size``: W or (W, H)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    face = load_portrait(portrait) if isinstance(portrait, str) else portrait
    rig = make_rig(face, _size(size))
    times = motion.frame_times(fps)
    table = motion.at(times)
    for i in iterate(range(len(times)), desc=f"rendering {face.name}", enabled=progress, total=len(times)):
        params = {name: float(table[name][i]) for name in PARAMS}
        image, landmarks = render_frame(rig, params)
        yield SynthFrame(index=i, time=float(times[i]), image=image, landmarks=landmarks, params=params)


def _write_wav(path: Path, samples: NDArray[np.float32], sample_rate: int) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=sample_rate)
        stream.codec_context.layout = "mono"
        for start in range(0, len(pcm), 4096):
            chunk = pcm[start: start + 4096]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def clip_metadata(portrait: str, seed: int) -> dict[str, str]:
    """Tags of a sample clip: it says what it is (it is not changeling's face-swap output)."""
    return {
        "title": f"changeling sample clip: {portrait}, motion {seed}",
        "comment": (f"Synthetic sample clip made by changeling {__version__} (changeling.synth): a public-domain "
                    "portrait animated by warping; not a recording."),
    }


def make_clip(portrait: Portrait | str, motion: Motion, size: int | tuple[int, int], fps: float, path: Path,
              *, crf: int = 18, audio: bool = True, progress: bool = False) -> ClipInfo:
    """Render ``portrait`` under ``motion`` and write an H.264 clip (mp4/mkv/mov) with a speech-like AAC track
    as long as the video. Written to a temporary name and renamed when complete."""
    path = check_output_path(Path(path))
    face = load_portrait(portrait) if isinstance(portrait, str) else portrait
    w, h = _size(size)
    rate = Fraction(fps).limit_denominator(1001)
    n = len(motion.frame_times(float(rate)))
    if n == 0:
        raise ValueError(f"a {motion.duration} s motion at {fps} fps has no frames")
    duration = n / float(rate)
    landmarks = np.zeros((n, 468, 3), np.float32)
    params = {name: np.zeros(n) for name in PARAMS}
    with tempfile.TemporaryDirectory(prefix=".synth-", dir=path.parent) as tmp:
        wav = None
        if audio:
            wav = Path(tmp) / "voice.wav"
            _write_wav(wav, speech_audio(motion, duration, SAMPLE_RATE), SAMPLE_RATE)
        with VideoWriter(path, width=w, height=h, fps=rate, crf=crf, audio_from=wav,
                         metadata=clip_metadata(face.name, motion.seed)) as writer:
            for frame in render_frames(face, motion, (w, h), float(rate), progress=progress):
                writer.write(frame.image)
                landmarks[frame.index] = frame.landmarks
                for name, value in frame.params.items():
                    params[name][frame.index] = value
    return ClipInfo(path=path, portrait=face.name, seed=motion.seed, width=w, height=h, fps=rate, frames=n,
                    duration=duration, audio_seconds=duration if audio else 0.0, landmarks=landmarks,
                    params=params)
