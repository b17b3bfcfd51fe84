"""Still images: reading any mode PIL knows into RGB uint8, and writing atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from changeling.errors import UserError
from changeling.fileio import finish_file, fsync_dir
from changeling.types import Frame

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS = 100_000_000  # 10,000 x 10,000

Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves and say so in a clear message


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def pil_to_rgb(img: Image.Image) -> Frame:
    """Any PIL mode (grey, 16-bit, CMYK, palette, alpha) to (H, W, 3) uint8 RGB; alpha is composited on black."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        arr = np.asarray(rgba).astype(np.float32)
        rgb = arr[..., :3] * (arr[..., 3:4] / 255.0)
        return np.ascontiguousarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def read_image(path: Path) -> Frame:
    """Read one image as RGB uint8 or raise :class:`UserError` naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise UserError("no such file", path)
    if path.is_dir():
        raise UserError("is a folder, expected an image file", path)
    if path.stat().st_size == 0:
        raise UserError("empty file (0 bytes)", path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise UserError(f"image is {w}x{h}, larger than the {MAX_PIXELS // 1_000_000} megapixel limit", path)
            if w < 2 or h < 2:
                raise UserError(f"image is {w}x{h}, too small to hold a face", path)
            img.load()
            return pil_to_rgb(img)
    except UnidentifiedImageError:
        raise UserError("not an image that can be read", path) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"image is damaged or truncated ({exc})", path) from None


def write_image_atomic(path: Path, image: np.ndarray, *, pnginfo: object | None = None, quality: int = 95,
                       sync_dir: bool = True) -> None:
    """Write a PNG/JPEG to a temporary name in the same folder, flush it to the disk, then rename: never a
    half-written or empty file under ``path``, even after a power cut. The file gets the permissions of any
    file written by this process (not the temporary's private 0600). ``sync_dir=False`` leaves flushing the
    folder's entry to the caller (extraction flushes the faces folder once per batch)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    try:
        with os.fdopen(fd, "wb") as fh:
            img = Image.fromarray(image)
            if fmt == "PNG":
                img.save(fh, format="PNG", pnginfo=pnginfo, compress_level=1)
            else:
                img.save(fh, format="JPEG", quality=quality)
            finish_file(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)
