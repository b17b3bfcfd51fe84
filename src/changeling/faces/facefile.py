"""One aligned face per PNG, with its metadata as JSON in a PNG text chunk (never pickle).

This module is the contract between extraction (which writes faces), training (which reads them) and the
faces tools. The metadata is validated strictly on read: a missing, malformed or hostile chunk raises
:class:`FaceFileError` naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from changeling.errors import UserError
from changeling.fileio import NotRegularFile, open_regular
from changeling.masks.masks import MASK_NAMES, Polygon
from changeling.types import Frame
from changeling.video.images import write_image_atomic
from changeling.vocab import FACE_TYPES

CHUNK_KEY = "changeling"
FORMAT_VERSION = 1
MAX_META_BYTES = 4_000_000
# Bounds of coordinates, so that a value such as 1e308 is refused rather than trained on. Landmarks, the box
# (mapped through the affine) and mask polygons must lie within MARGIN crop sides of the crop: the 'half' crop
# cuts through the face, so its outline reaches about a fifth of a side past the crop's edges; a real face
# never reaches a whole side past them.
MARGIN = 1.0
MAX_FRAME_COORD = 1e6  # frame pixels (frames are at most 10,000 px a side; faces may overhang an edge)
SCALE_RANGE = (1e-4, 1e4)  # crop pixels per frame pixel of the affine
MAX_AFFINE = 1e12  # its entries (the translation is frame coordinates times the scale)
MAX_SECONDS = 1e9
MAX_BLUR = 1e9


class FaceFileError(UserError):
    """A face PNG that cannot be used (unreadable image, missing or malformed metadata)."""


@dataclass
class FaceMeta:
    """What is known about one aligned face. Coordinates are pixels; ``affine`` maps frame -> face crop."""

    source: str  # file the face came from (as given to extract)
    frame_index: int  # index of the frame in that source
    face_index: int  # 0 = largest face in the frame
    size: int  # side of the square crop in pixels
    face_type: str  # one of FACE_TYPES
    affine: list[list[float]]  # (2, 3)
    landmarks: list[list[float]]  # (N, 3) in frame pixels (x, y) and relative depth z
    box: list[float]  # (4,) x0, y0, x1, y1 in frame pixels
    score: float  # detector or landmark presence score in [0, 1]
    masks: dict[str, Polygon] = field(default_factory=dict)  # name -> polygon in face pixels
    time: float = 0.0  # seconds into the source
    blur: float = 0.0  # variance of the Laplacian of the grey face (higher is sharper)
    side: str = ""  # "A" or "B" (informational)
    source_hash: str = ""  # identifies the source file's content (see faces.store)
    version: int = FORMAT_VERSION

    @property
    def affine_array(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=np.float64)  # (2, 3)

    @property
    def landmarks_array(self) -> np.ndarray:
        return np.asarray(self.landmarks, dtype=np.float32)  # (N, 3)

    def landmarks_in_face(self) -> np.ndarray:
        """(N, 2) landmarks mapped into face-crop pixels."""
        pts = self.landmarks_array[:, :2].astype(np.float64)
        a = self.affine_array
        return (pts @ a[:, :2].T + a[:, 2]).astype(np.float32)

    def to_json(self) -> str:
        # the fields as they are: asdict() would deep-copy the 468 landmark lists first (3 of the 4 ms)
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, separators=(",", ":"),
                          allow_nan=False)


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number")
    try:
        out = float(value)  # an integer of hundreds of digits overflows a float
    except OverflowError:
        raise ValueError(f"{name} must be a finite number") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number")
    return out


def _matrix(value: Any, name: str, shape: tuple[int | None, int]) -> list[list[float]]:
    if not isinstance(value, list) or (shape[0] is not None and len(value) != shape[0]):
        raise ValueError(f"{name} must be a list of {shape[0] or 'N'} rows")
    out = []
    for row in value:
        if not isinstance(row, list) or len(row) != shape[1]:
            raise ValueError(f"{name} rows must have {shape[1]} numbers")
        out.append([_num(v, name) for v in row])
    return out


def meta_from_dict(d: Any) -> FaceMeta:
    """Validate untrusted parsed JSON into a :class:`FaceMeta`; ``ValueError`` says what is wrong."""
    if not isinstance(d, dict):
        raise ValueError("metadata must be a JSON object")
    known = set(FaceMeta.__dataclass_fields__)
    extra = set(d) - known
    if extra:
        shown = sorted(k if k.isprintable() else repr(k) for k in map(str, extra))  # no newlines or escapes
        raise ValueError(f"unknown metadata keys: {', '.join(shown)}")
    for key in ("source", "frame_index", "face_index", "size", "face_type", "affine", "landmarks", "box", "score"):
        if key not in d:
            raise ValueError(f"metadata lacks {key!r}")
    version = d.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"metadata version {version!r} is not {FORMAT_VERSION}")
    if not isinstance(d["source"], str):
        raise ValueError("source must be a string")
    ints = {}
    for key in ("frame_index", "face_index", "size"):
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{key} must be a non-negative integer")
        ints[key] = v
    if not 8 <= ints["size"] <= 4096:
        raise ValueError("size must be from 8 to 4096")
    if d["face_type"] not in FACE_TYPES:
        raise ValueError(f"face_type must be one of {', '.join(FACE_TYPES)}")
    landmarks = _matrix(d["landmarks"], "landmarks", (None, 3))
    if len(landmarks) not in (468, 478):
        raise ValueError("landmarks must have 468 or 478 points")
    box = d["box"]
    if not isinstance(box, list) or len(box) != 4:
        raise ValueError("box must have 4 numbers")
    masks_in = d.get("masks", {})
    if not isinstance(masks_in, dict):
        raise ValueError("masks must be an object")
    masks: dict[str, Polygon] = {}
    for name, poly in masks_in.items():
        if name not in MASK_NAMES:
            raise ValueError(f"unknown mask {name!r}")
        pts = _matrix(poly, f"mask {name}", (None, 2))
        if len(pts) < 3 or len(pts) > 10_000:
            raise ValueError(f"mask {name} must have 3 to 10000 points")
        masks[name] = pts
    for key in ("source_hash", "side"):
        if key in d and not isinstance(d[key], str):
            raise ValueError(f"{key} must be a string")
    score = _num(d["score"], "score")
    meta = FaceMeta(source=d["source"], frame_index=ints["frame_index"], face_index=ints["face_index"],
                    size=ints["size"], face_type=d["face_type"], affine=_matrix(d["affine"], "affine", (2, 3)),
                    landmarks=landmarks, box=[_num(v, "box") for v in box], score=score, masks=masks,
                    time=_num(d.get("time", 0.0), "time"), blur=_num(d.get("blur", 0.0), "blur"),
                    side=d.get("side", ""), source_hash=d.get("source_hash", ""))
    check_bounds(meta)
    return meta


def check_bounds(meta: FaceMeta) -> None:
    """``ValueError`` unless every coordinate lies where a real face can: frame coordinates within
    ``MAX_FRAME_COORD``, an affine of sane scale, and landmarks, box corners (through the affine) and mask
    polygons within ``MARGIN`` crop sides of the crop; score in [0, 1], time and blur not negative."""
    s = float(meta.size)
    lo, hi = -MARGIN * s, (1 + MARGIN) * s
    _in_range(meta.score, "score", 0.0, 1.0)
    _in_range(meta.time, "time", 0.0, MAX_SECONDS)
    _in_range(meta.blur, "blur", 0.0, MAX_BLUR)
    a = np.asarray(meta.affine, dtype=np.float64)  # (2, 3) frame -> crop
    if np.abs(a).max() > MAX_AFFINE:
        raise ValueError(f"affine holds values beyond {MAX_AFFINE:g}")
    scale = math.sqrt(abs(float(np.linalg.det(a[:, :2]))))
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise ValueError(f"affine scales by {scale:.3g} crop pixels per frame pixel, expected "
                         f"{SCALE_RANGE[0]:g} to {SCALE_RANGE[1]:g}")
    lm = np.asarray(meta.landmarks, dtype=np.float64)  # (N, 3) frame pixels
    box = np.asarray(meta.box, dtype=np.float64).reshape(2, 2)  # two corners
    for name, pts in (("landmarks", lm), ("box", box)):
        if np.abs(pts).max() > MAX_FRAME_COORD:
            raise ValueError(f"{name} reach beyond {MAX_FRAME_COORD:g} frame pixels")
        in_crop = pts[:, :2] @ a[:, :2].T + a[:, 2]
        if in_crop.min() < lo or in_crop.max() > hi:
            raise ValueError(f"{name} lie outside the {meta.size} px crop by more than {MARGIN:g} crop side")
    if np.abs(lm[:, 2]).max() * scale > (1 + 2 * MARGIN) * s:
        raise ValueError(f"landmark depths exceed {1 + 2 * MARGIN:g} crop sides")
    for name, poly in meta.masks.items():
        pts = np.asarray(poly, dtype=np.float64)
        if pts.min() < lo or pts.max() > hi:
            raise ValueError(f"mask {name} lies outside the {meta.size} px crop by more than {MARGIN:g} crop side")


def _in_range(value: float, name: str, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low:g} to {high:g}")


def write_face(path: Path, image: Frame, meta: FaceMeta, *, sync_dir: bool = True) -> None:
    """Write an aligned face crop (S, S, 3) uint8 RGB with its metadata, atomically and durably (see
    :func:`~changeling.video.images.write_image_atomic`; ``sync_dir=False``: the caller flushes the folder)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square (S, S, 3) uint8 face, got {image.shape} {image.dtype}")
    if image.shape[0] != meta.size:
        raise ValueError(f"face is {image.shape[0]} px but metadata says {meta.size}")
    info = PngImagePlugin.PngInfo()
    info.add_text(CHUNK_KEY, meta.to_json(), zip=True)
    write_image_atomic(Path(path), image, pnginfo=info, sync_dir=sync_dir)


def read_meta(path: Path) -> FaceMeta:
    """Read only the metadata of a face PNG (no pixel decode)."""
    path = Path(path)
    try:
        with _open(path) as fh, Image.open(fh) as img:
            if img.format != "PNG":
                raise FaceFileError("not a PNG face file", path)
            text = getattr(img, "text", {}).get(CHUNK_KEY)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FaceFileError):
            raise
        raise FaceFileError(f"unreadable face image ({exc})", path) from None
    if text is None:
        raise FaceFileError("no changeling metadata in this PNG (not made by changeling extract?)", path)
    if len(text) > MAX_META_BYTES:
        raise FaceFileError("metadata is too large", path)
    try:
        return meta_from_dict(json.loads(text, parse_constant=_reject_constant))
    except (ValueError, RecursionError) as exc:
        raise FaceFileError(f"bad metadata: {exc}", path) from None


def _open(path: Path) -> BinaryIO:
    """The face file opened for reading, if it is a regular file: a FIFO named like a face would block every
    reader for ever."""
    try:
        return open_regular(path)
    except NotRegularFile as exc:
        raise FaceFileError(str(exc), path) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in metadata")


def read_face(path: Path) -> tuple[Frame, FaceMeta]:
    """Read a face PNG: (S, S, 3) uint8 RGB and its validated metadata."""
    path = Path(path)
    meta = read_meta(path)
    try:
        with _open(path) as fh, Image.open(fh) as img:
            img.load()
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FaceFileError):
            raise
        raise FaceFileError(f"damaged face image ({exc})", path) from None
    if arr.shape[:2] != (meta.size, meta.size):
        raise FaceFileError(f"image is {arr.shape[1]}x{arr.shape[0]} but metadata says {meta.size}", path)
    return np.ascontiguousarray(arr), meta


def list_faces(folder: Path) -> list[Path]:
    """Face PNGs in a folder, sorted by name (deleted files are simply absent)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
