"""Hand-corrected occlusion masks, kept beside the faces in ``faces/<side>/masks/``.

A correction is a grey PNG the size of its face: white where the face is visible (swap it), black where it is
covered or not face. It is named and keyed by the face's identity (its source video's content hash, frame and
face index), not by the face file's name, so it survives ``faces sort`` (renames), ``faces cluster`` (moves)
and ``faces clean``; the face's alignment (its affine) is stored with it, so a face extracted again with
another alignment is not paired with a stale mask (it is ignored, with a warning).

Import takes PNGs named like the face files (what ``changeling masks export`` writes); a mask of the wrong size
or for a face that is not in the folder is refused with one line naming it, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from changeling.errors import UserError
from changeling.faces.facefile import FaceFileError, FaceMeta, list_faces, read_meta
from changeling.types import Mask
from changeling.video.images import write_image_atomic

log = logging.getLogger(__name__)

FOLDER = "masks"
CHUNK_KEY = "changeling-mask"
MAX_PIXELS = 4096 * 4096
IMPORT_HINT = "name each mask like its face file, as `changeling masks export` does"
_AFFINE_TOLERANCE = 0.05  # px: an affine further off than this means the face was aligned again


def face_key(meta: FaceMeta) -> str:
    """A face's identity as a file stem: ``HASH16_FRAME_FACE`` (the source's content hash, or a hash of its
    name when it has none)."""
    src = meta.source_hash or hashlib.sha256(meta.source.encode("utf-8", "surrogatepass")).hexdigest()
    src = "".join(c for c in src if c.isalnum())[:16] or "0"
    return f"{src}_{meta.frame_index:06d}_{meta.face_index:02d}"


def corrections_dir(faces_dir: Path) -> Path:
    return Path(faces_dir) / FOLDER


def correction_path(faces_dir: Path, meta: FaceMeta) -> Path:
    return corrections_dir(faces_dir) / f"{face_key(meta)}.png"


def mask_from_image(image: Image.Image) -> Mask:
    """(H, W) float32 in {0, 1} from a grey, RGB or RGBA picture: white (> 127 in grey) is visible face."""
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        rgb = np.asarray(image.convert("L"), np.float32)
        alpha = np.asarray(image.getchannel("A"), np.float32)
        grey = rgb * alpha / 255.0  # transparent counts as black (not face)
    else:
        grey = np.asarray(image.convert("L"), np.float32)
    return (grey > 127.5).astype(np.float32)


def check_mask_size(path: Path, shape: tuple[int, ...], size: int, face_name: str = "") -> None:
    """:class:`UserError` naming ``path`` when a mask of ``shape`` (H, W) is not its face's ``size`` square."""
    h, w = (tuple(shape) + (0, 0))[:2]
    if (w, h) != (size, size):
        target = f"face {face_name}" if face_name else "its face"
        raise UserError(f"mask is {w}x{h} but {target} is {size}x{size}; masks must match their face", path)


def read_mask_png(path: Path, size: int, face_name: str = "") -> Mask:
    """A user's mask PNG for a face of ``size`` px; :class:`UserError` naming the file when it is unreadable or
    of another size."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise UserError(f"mask is {w}x{h}, far larger than any face", path)
            check_mask_size(path, (h, w), size, face_name)
            img.load()
            return mask_from_image(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"not a readable image ({exc})", path) from None


def _record(meta: FaceMeta) -> dict[str, object]:
    return {"key": face_key(meta), "size": meta.size, "affine": meta.affine, "frame_index": meta.frame_index,
            "face_index": meta.face_index, "source_hash": meta.source_hash}


def save_correction(faces_dir: Path, meta: FaceMeta, mask: np.ndarray) -> Path:
    """Store a hand-corrected mask (S, S) (float in [0, 1] or uint8 0/255; > half is visible) for the face
    ``meta`` describes; replaces an earlier correction of that face. Returns the file written."""
    m = np.asarray(mask)
    if m.shape != (meta.size, meta.size):
        raise UserError(f"mask is {m.shape[1] if m.ndim > 1 else '?'}x{m.shape[0]} but the face is "
                        f"{meta.size}x{meta.size}", correction_path(faces_dir, meta))
    top = 255.0 if m.dtype == np.uint8 else 1.0
    binary = np.where(m.astype(np.float32) > top / 2, 255, 0).astype(np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text(CHUNK_KEY, json.dumps(_record(meta), separators=(",", ":")))
    path = correction_path(faces_dir, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image_atomic(path, binary, pnginfo=info)
    return path


def read_correction(faces_dir: Path, meta: FaceMeta) -> Mask | None:
    """The stored correction of this face (S, S) float32 in {0, 1}, or None when there is none or it belongs to
    an earlier alignment of the face (then a warning names it)."""
    path = correction_path(faces_dir, meta)
    if not path.is_file():
        return None
    try:
        with Image.open(path) as img:
            record = json.loads(getattr(img, "text", {}).get(CHUNK_KEY, "null"))
            if img.size != (meta.size, meta.size) or not isinstance(record, dict):
                raise ValueError("size or record does not match its face")
            affine = np.asarray(record.get("affine"), dtype=np.float64)
            if affine.shape != (2, 3) or not np.allclose(affine, meta.affine_array, atol=_AFFINE_TOLERANCE):
                raise ValueError("made for an earlier alignment of this face")
            img.load()
            return mask_from_image(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as exc:
        log.warning("%s: correction ignored (%s)", path, exc)
        return None


def remove_correction(faces_dir: Path, meta: FaceMeta) -> bool:
    """Forget the correction of this face; True if there was one."""
    path = correction_path(faces_dir, meta)
    if path.is_file():
        path.unlink()
        return True
    return False


def count_corrections(faces_dir: Path) -> int:
    folder = corrections_dir(faces_dir)
    return sum(1 for p in folder.glob("*.png") if not p.name.startswith(".")) if folder.is_dir() else 0


def import_masks(faces_dir: Path, mask_paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Store each mask PNG as the correction of the face file of the same name in ``faces_dir``.

    Every mask is checked first (a face of that name exists and is readable, the mask is its size); the first
    problem raises :class:`UserError` naming the mask and nothing is written. Returns (mask, face) pairs."""
    faces_dir = Path(faces_dir)
    faces = {p.name: p for p in list_faces(faces_dir)}
    checked: list[tuple[Path, Path, FaceMeta, Mask]] = []
    for mask_path in mask_paths:
        mask_path = Path(mask_path)
        face, meta = _face_named(faces_dir, faces, mask_path.name, mask_path)
        checked.append((mask_path, face, meta, read_mask_png(mask_path, meta.size, face.name)))
    for _mask_path, _face, meta, mask in checked:
        save_correction(faces_dir, meta, mask)
    return [(m, f) for m, f, _meta, _mask in checked]


def import_mask(faces_dir: Path, face_name: str, mask: np.ndarray, hint: str = IMPORT_HINT) -> Path:
    """Store ``mask`` (H, W) (float in [0, 1] or uint8 0/255; > half is visible) as the correction of the face
    file ``face_name`` in ``faces_dir``, with :func:`import_masks`' checks: a face of that name exists and is
    readable, the mask is its size; else :class:`UserError` naming the face's path (``hint`` ends the message
    when the face is missing). Returns the correction's file."""
    faces_dir = Path(faces_dir)
    where = faces_dir / face_name
    faces = {p.name: p for p in list_faces(faces_dir)}
    face, meta = _face_named(faces_dir, faces, face_name, where, hint)
    check_mask_size(where, np.shape(mask), meta.size, face.name)
    return save_correction(faces_dir, meta, mask)


def _face_named(faces_dir: Path, faces: dict[str, Path], name: str, origin: Path, hint: str = IMPORT_HINT
                ) -> tuple[Path, FaceMeta]:
    """The face file ``name`` of ``faces`` (name -> path) and its metadata; :class:`UserError` naming
    ``origin`` when there is none of that name (ending with ``hint``) or it cannot be read."""
    face = faces.get(name)
    if face is None:
        raise UserError(f"no face named {name} in {faces_dir} (deleted, or renamed by `faces sort`?); {hint}",
                        origin)
    try:
        return face, read_meta(face)
    except FaceFileError as exc:
        raise UserError(f"its face cannot be read: {exc}", origin) from None


def mask_files(paths: Sequence[Path]) -> list[Path]:
    """The PNGs named by ``paths``: files as given, folders expanded to their PNGs (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() == ".png" and not q.name.startswith("."))
        elif p.exists():
            out.append(p)
        else:
            raise UserError("no such file or folder", p)
    if not out:
        raise UserError("no mask PNGs given (a folder holds none)")
    return out
