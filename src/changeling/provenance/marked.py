"""Writing pictures marked as synthetic media: the metadata tags (:mod:`changeling.provenance.metadata`), a signed
C2PA manifest where c2pa-python is installed (:mod:`changeling.provenance.c2pa`) and, for pictures not yet
marked, the watermark (:mod:`changeling.provenance.watermark`)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from changeling.fileio import finish_file, publish
from changeling.provenance import c2pa as c2pa_marks
from changeling.provenance.metadata import encode_image
from changeling.provenance.watermark import embed_watermark, has_room
from changeling.types import Frame

log = logging.getLogger(__name__)

_IMAGE_FORMATS = {".png": ("PNG", "image/png"), ".jpg": ("JPEG", "image/jpeg"), ".jpeg": ("JPEG", "image/jpeg")}


def write_marked_image(path: Path, frame: Frame, *, quality: int = 95, tags: dict[str, str] | None = None) -> Path:
    """Write an already watermarked (H, W, 3) uint8 RGB frame as PNG or JPEG with the synthetic-media metadata
    (``tags``, default :func:`synthetic_metadata`) and, when c2pa-python is installed, a signed C2PA manifest.
    Written to a temporary name, then renamed."""
    path = Path(path)
    fmt = _IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: expected a .png, .jpg or .jpeg name")
    data = encode_image(frame, fmt[0], quality=quality, tags=tags)
    signed = c2pa_marks.sign_bytes(data, fmt[1], path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(signed if signed is not None else data)
            finish_file(fh)  # the permissions a plainly written file has, flushed before the rename
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_synthetic_image(path: Path, image: Frame, *, quality: int = 95, tags: dict[str, str] | None = None) -> Path:
    """Write an (H, W, 3) uint8 RGB picture that shows swapped faces (a preview grid, a frame strip) marked as
    ``convert`` marks its output: the watermark over the whole picture, the synthetic-media metadata and, where
    c2pa-python is installed, a C2PA manifest (:func:`write_marked_image`). A picture too small to hold the
    watermark (fewer than 61 blocks of 16x16 pixels) keeps its metadata and manifest."""
    if has_room(*image.shape[:2]):
        image = embed_watermark(image)
    else:
        log.info("%s: %dx%d is too small for the watermark; metadata only", path, image.shape[1], image.shape[0])
    return write_marked_image(path, image, quality=quality, tags=tags)

