"""Where converted frames go: a video with the source's audio, an image sequence, or swapped patches with their
transforms. Every writer works under a temporary name (``.NAME.partial``) and renames only when complete, so an
interrupted convert never leaves a partial result under the final name.

Provenance: the frames arrive watermarked (the converter marks every frame it swapped a face into); the patch
writer marks each swapped face itself, through ``mark`` (:func:`marked_patch`); the writers add the synthetic-media metadata
(container tags; PNG/JPEG tags and XMP) and, through ``sign``, a C2PA manifest (each image, or the finished
mp4/mov) where c2pa-python is installed.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from changeling.errors import UserError
from changeling.fileio import publish
from changeling.provenance.watermark import MIN_SIDE
from changeling.types import Affine, Frame, Mask
from changeling.video.reader import FrameSource
from changeling.video.writer import VideoWriter, partial_path
from changeling.vocab import IMAGE_FORMATS, WRITER_KINDS, ImageFormat, WriterKind, check_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patch:
    """One swapped face as pasted: colour-matched face (S, S, 3) uint8, its blend mask (S, S) float32 in
    [0, 1], and the frame -> crop affine it was pasted with."""

    face_index: int
    face: Frame
    mask: Mask
    affine: Affine


@dataclass(frozen=True)
class RenderedFrame:
    """A frame ready to write. ``swapped`` is False for frames passed through untouched (then ``image`` is the
    decoded frame itself)."""

    index: int
    time: float
    image: Frame
    swapped: bool
    patches: list[Patch] = field(default_factory=list)


class FrameWriter(Protocol):
    """Receives frames in order; ``close`` publishes the result under its final name, ``abort`` removes it.

    ``prepare`` does a frame's share of the work that needs no order (colour conversion, image encoding): the
    converter calls it from several threads at once; its result is handed to ``write``, which is called from
    one thread, in frame order."""

    path: Path

    def prepare(self, frame: RenderedFrame) -> object: ...

    def write(self, frame: RenderedFrame, prepared: object) -> None: ...

    def close(self) -> Path: ...

    def abort(self) -> None: ...


WriterFactory = Callable[[Path, FrameSource], FrameWriter]
ImageSigner = Callable[[bytes, str, str], "bytes | None"]  # (data, mime type, title) -> signed data or None
class FileSigner(Protocol):
    """Signs a finished file in place (``name``: its final name while it is still under a temporary one);
    False when it could not."""

    def __call__(self, path: Path, *, name: str | None = None) -> bool: ...


def tagged_image(image: np.ndarray, fmt: ImageFormat, metadata: Mapping[str, str], quality: int = 95) -> bytes:
    """PNG (RGB or RGBA) or JPEG bytes carrying ``metadata`` as PNG text chunks or the JPEG comment."""
    buf = io.BytesIO()
    img = Image.fromarray(image)
    if fmt == "png":
        img.save(buf, format="PNG", pnginfo=_png_info(metadata), compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=quality, comment=json.dumps(dict(metadata), sort_keys=True).encode())
    return buf.getvalue()


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file or folder (following links)."""
    try:
        if a.exists() and b.exists() and a.samefile(b):
            return True
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_input(output: Path, source: Path) -> None:
    """Refuse to write over the input (or into the folder of images being read)."""
    if same_file(Path(output), Path(source)):
        raise UserError("the output path is the input; choose another name", output)


class VideoFileWriter:
    """H.264 video (mp4, mkv, mov) with the source's audio and timestamps, and container metadata."""

    def __init__(self, path: Path, source: FrameSource, *, crf: int = 18, preset: str = "veryfast",
                 metadata: Mapping[str, str] | None = None, sign: FileSigner | None = None) -> None:
        self.path = Path(path)
        self._sign = sign
        audio = source.path if source.kind == "video" else None
        # a video keeps its frames' times and audio; a live stream (kind "stream") its frames' times only
        timed = source.kind in ("video", "stream")
        self._writer = VideoWriter(self.path, width=source.width, height=source.height, fps=source.fps,
                                   time_base=source.time_base if timed else None, crf=crf,
                                   preset=preset, audio_from=audio, metadata=dict(metadata or {}),
                                   inputs=[source.path])
        self._writer.open()
        self._video = timed
        self._i420 = self._writer.settings.pix_fmt == "yuv420p"

    def prepare(self, frame: RenderedFrame) -> object:
        if not self._i420:
            return None
        return cv2.cvtColor(frame.image, cv2.COLOR_RGB2YUV_I420)  # (H * 3 / 2, W): Y, then U, then V

    def write(self, frame: RenderedFrame, prepared: object) -> None:
        t = frame.time if self._video else None
        if isinstance(prepared, np.ndarray):
            self._writer.write_i420(prepared, t)
        else:
            self._writer.write(frame.image, t)

    def close(self) -> Path:
        return self._writer.close(before_publish=self._sign_before_publish)

    def _sign_before_publish(self, tmp: Path) -> None:
        if self._sign is not None and not self._sign(tmp, name=self.path.name):
            log.info("%s: no C2PA manifest attached (watermark and metadata tags are there)", self.path)

    def abort(self) -> None:
        self._writer.abort()


class _FolderWriter:
    """Writes files into ``.NAME.partial/`` beside the final folder and renames it at the end."""

    def __init__(self, path: Path, source: FrameSource) -> None:
        self.path = Path(path)
        check_not_input(self.path, source.path)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise UserError("the output folder's parent does not exist", parent)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            what = "is a file" if not self.path.is_dir() else "is a folder that is not empty"
            raise UserError(f"the output {what}; give a new or empty folder", self.path)
        self._tmp = partial_path(self.path)
        if self._tmp.exists():
            shutil.rmtree(self._tmp) if self._tmp.is_dir() else self._tmp.unlink()
        try:
            self._tmp.mkdir()
        except PermissionError:
            raise UserError("cannot write here (permission denied)", parent) from None
        self.frames_written = 0

    def close(self) -> Path:
        if self.path.is_dir():
            self.path.rmdir()  # empty (checked at the start)
        publish(self._tmp, self.path)  # every image flushed to the disk before the folder takes its name
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


def _png_info(metadata: Mapping[str, str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for k, v in metadata.items():
        info.add_text(str(k), str(v))
    return info


_MIME = {"png": "image/png", "jpg": "image/jpeg"}
check_registry("image format", _MIME, IMAGE_FORMATS)


class ImageSequenceWriter(_FolderWriter):
    """One PNG (lossless) or JPEG per frame, ``NAME_000000.png``..., numbered by the source's frame index.
    ``encode`` turns a frame into file bytes with the provenance metadata (default: PNG text chunks or the
    JPEG comment); ``sign`` adds a C2PA manifest to each file."""

    def __init__(self, path: Path, source: FrameSource, *, fmt: ImageFormat = "png", quality: int = 95,
                 metadata: Mapping[str, str] | None = None,
                 encode: Callable[[np.ndarray, ImageFormat], bytes] | None = None,
                 sign: ImageSigner | None = None) -> None:
        super().__init__(path, source)
        self.fmt = fmt
        self.quality = int(quality)
        meta = dict(metadata or {})
        self._encode = encode or (lambda image, f: tagged_image(image, f, meta, self.quality))
        self._sign = sign
        self._stem = Path(source.path).stem or "frame"

    def name(self, index: int) -> str:
        return f"{self._stem}_{index:06d}.{self.fmt}"

    def prepare(self, frame: RenderedFrame) -> object:
        data = self._encode(frame.image, self.fmt)
        if self._sign is not None:
            data = self._sign(data, _MIME[self.fmt], self.name(frame.index)) or data
        return data

    def write(self, frame: RenderedFrame, prepared: object) -> None:
        data = prepared if isinstance(prepared, bytes) else self.prepare(frame)
        assert isinstance(data, bytes)
        (self._tmp / self.name(frame.index)).write_bytes(data)
        self.frames_written += 1

    def close(self) -> Path:
        if self.frames_written == 0:
            self.abort()
            raise UserError("no frames were written", self.path)
        return super().close()


def marked_patch(patch: Patch, mark: Callable[[Frame], Frame]) -> tuple[Frame, Mask, Affine]:
    """A patch's face (S, S, 3) marked by ``mark`` (the watermark), with its mask and frame -> patch affine.

    A face under 128 px cannot hold the watermark: it is enlarged by the smallest whole factor ``k`` that makes
    room (bicubic; the mask bilinear), and the affine is scaled to match: pixel centres ``x`` of the face become
    ``k x + (k - 1) / 2``.
    """
    s = int(patch.face.shape[0])
    k = -(-MIN_SIDE // s)  # ceil(MIN_SIDE / s)
    face, mask, affine = patch.face, patch.mask, np.asarray(patch.affine, dtype=np.float64)
    if k > 1:
        size = (s * k, s * k)
        face = np.asarray(cv2.resize(face, size, interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
        mask = np.asarray(cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR), dtype=np.float32)
        affine = affine * k
        affine[:, 2] += (k - 1) / 2
    return mark(np.ascontiguousarray(face)), mask, affine


class PatchWriter(_FolderWriter):
    """Swapped faces for compositing elsewhere: per face ``NNNNNN_F.png`` (RGBA: the face, its blend mask as
    alpha) and ``NNNNNN_F.json`` (frame index, time, the frame -> patch affine and its inverse, sizes), plus
    ``patches.json`` describing the source and listing the frames that have faces. With ``mark`` (the
    watermark), each face is marked, at least 128 px wide (:func:`marked_patch`)."""

    def __init__(self, path: Path, source: FrameSource, *, metadata: Mapping[str, str] | None = None,
                 sign: ImageSigner | None = None, mark: Callable[[Frame], Frame] | None = None) -> None:
        super().__init__(path, source)
        self._metadata = dict(metadata or {})
        self._sign = sign
        self._mark = mark
        self._source = source
        self._frames: list[int] = []
        self._count = 0

    def prepare(self, frame: RenderedFrame) -> object:
        files: dict[str, bytes] = {}
        for p in frame.patches:
            stem = f"{frame.index:06d}_{p.face_index}"
            if self._mark is not None:
                face, mask, a = marked_patch(p, self._mark)
            else:
                face, mask, a = p.face, p.mask, np.asarray(p.affine, dtype=np.float64)
            alpha = np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
            data = tagged_image(np.dstack([face, alpha]), "png", self._metadata)
            if self._sign is not None:
                data = self._sign(data, "image/png", f"{stem}.png") or data
            files[f"{stem}.png"] = data
            inv = np.linalg.inv(a[:, :2])
            inverse = np.concatenate([inv, -(inv @ a[:, 2])[:, None]], axis=1)
            meta = {"frame_index": frame.index, "time": frame.time, "face_index": p.face_index,
                    "size": int(face.shape[0]), "model_size": int(p.face.shape[0]),
                    "frame_width": self._source.width,
                    "frame_height": self._source.height, "affine_frame_to_patch": a.tolist(),
                    "affine_patch_to_frame": inverse.tolist()}
            files[f"{stem}.json"] = json.dumps(meta, indent=1).encode("utf-8")
        return files

    def write(self, frame: RenderedFrame, prepared: object) -> None:
        self._count += 1
        if not frame.patches:
            return
        self._frames.append(frame.index)
        files = prepared if isinstance(prepared, dict) else self.prepare(frame)
        assert isinstance(files, dict)
        for name, data in files.items():
            (self._tmp / name).write_bytes(data)

    def close(self) -> Path:
        if self._count == 0:
            self.abort()
            raise UserError("no frames were written", self.path)
        manifest = {"source": str(self._source.path), "width": self._source.width, "height": self._source.height,
                    "fps": str(self._source.fps), "frames": self._count, "frames_with_faces": self._frames,
                    "metadata": self._metadata}
        (self._tmp / "patches.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        return super().close()


@dataclass(frozen=True)
class WriterParts:
    """The provenance parts of :func:`writer_factory`; each kind of writer takes the ones it uses."""

    crf: int
    image_format: ImageFormat
    metadata: Mapping[str, str]
    encode_image: Callable[[np.ndarray, ImageFormat], bytes] | None
    sign_image: ImageSigner | None
    sign_file: FileSigner | None
    mark_patch: Callable[[Frame], Frame] | None


WRITERS: dict[str, Callable[[Path, FrameSource, WriterParts], FrameWriter]] = {
    "video": lambda output, source, p: VideoFileWriter(output, source, crf=p.crf, metadata=p.metadata,
                                                       sign=p.sign_file),
    "images": lambda output, source, p: ImageSequenceWriter(output, source, fmt=p.image_format, metadata=p.metadata,
                                                            encode=p.encode_image, sign=p.sign_image),
    "patches": lambda output, source, p: PatchWriter(output, source, metadata=p.metadata, sign=p.sign_image,
                                                     mark=p.mark_patch),
}
check_registry("writer", WRITERS, WRITER_KINDS)


def writer_factory(kind: WriterKind, *, crf: int = 18, image_format: ImageFormat = "png",
                   metadata: Mapping[str, str] | None = None,
                   encode_image: Callable[[np.ndarray, ImageFormat], bytes] | None = None,
                   sign_image: ImageSigner | None = None, sign_file: FileSigner | None = None,
                   mark_patch: Callable[[Frame], Frame] | None = None) -> WriterFactory:
    """A factory ``(output, source) -> FrameWriter`` for one kind of output, with its provenance parts:
    container/image ``metadata``, an image encoder that embeds it, C2PA signers and the watermark for patches
    (see :func:`provenance_writer_factory` for the ones changeling uses)."""
    build = WRITERS[kind]
    parts = WriterParts(crf, image_format, dict(metadata or {}), encode_image, sign_image, sign_file, mark_patch)

    def make(output: Path, source: FrameSource) -> FrameWriter:
        return build(output, source, parts)

    return make


def provenance_writer_factory(kind: WriterKind, *, crf: int = 18, image_format: ImageFormat = "png",
                              quality: int = 95) -> WriterFactory:
    """The writers as ``changeling convert`` uses them: synthetic-media tags and XMP from
    :mod:`changeling.provenance`, a C2PA manifest on every image and on finished mp4/mov files, and the
    watermark on every patch."""
    from changeling.provenance import attach_c2pa, embed_watermark, synthetic_metadata
    from changeling.provenance.c2pa import sign_bytes
    from changeling.provenance.metadata import encode_image

    tags = synthetic_metadata()

    def encode(image: np.ndarray, fmt: ImageFormat) -> bytes:
        return encode_image(image, "PNG" if fmt == "png" else "JPEG", quality=quality, tags=tags)

    return writer_factory(kind, crf=crf, image_format=image_format, metadata=tags, encode_image=encode,
                          sign_image=sign_bytes, sign_file=attach_c2pa, mark_patch=embed_watermark)
