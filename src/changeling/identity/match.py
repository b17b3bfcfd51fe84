"""Keep only the faces of one person: the reference/exclude filter used by extract and convert."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from changeling.errors import UserError
from changeling.faces.facefile import CHUNK_KEY, read_face
from changeling.identity.embed import (
    EMBED_DIM,
    SAME_PERSON_DISTANCE,
    Embeddings,
    FaceEmbedder,
    distances,
    face_file_box,
)
from changeling.types import Box, Frame, Landmarks
from changeling.video.images import read_image

log = logging.getLogger(__name__)


def _is_face_file(path: Path) -> bool:
    """True for a PNG written by changeling (it carries the metadata chunk)."""
    if path.suffix.lower() != ".png":
        return False
    try:
        with Image.open(path) as img:
            return CHUNK_KEY in getattr(img, "text", {})
    except (OSError, SyntaxError, ValueError):
        return False


def embed_reference(path: Path, embedder: FaceEmbedder) -> NDArray[np.float32]:
    """Embedding (128,) of the person in a reference image.

    A changeling face PNG is located by its landmarks (else its stored box); any other image is searched with
    dlib's HOG detector and its most confident face is used. Raises :class:`UserError` naming the file when no
    face is found.
    """
    path = Path(path)
    if _is_face_file(path):
        image, meta = read_face(path)
        return embedder.embed_one(image, face_file_box(meta))
    image = read_image(path)
    found = embedder.detect(image)
    if not found:
        raise UserError("no face found in this reference image (use a clear, roughly frontal photo of the "
                        "person, face at least 40 px wide)", path)
    if len(found) > 1:
        log.warning("%s: %d faces found, using the most confident one at %s", path, len(found),
                    [round(float(v)) for v in found[0][0]])
    return embedder.embed_one(image, found[0][0])


class IdentityFilter:
    """Decides whether a face belongs to the reference person.

    A face is kept when its embedding lies within ``threshold`` of the nearest reference embedding and is closer
    to that reference than to any excluded person. With exclude images only, a face is kept unless it lies
    within ``threshold`` of an excluded person.
    """

    def __init__(self, reference_images: Sequence[Path | str], threshold: float = SAME_PERSON_DISTANCE,
                 exclude_images: Sequence[Path | str] = (), *, embedder: FaceEmbedder | None = None) -> None:
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold must be a positive distance, got {threshold}")
        self.embedder = embedder if embedder is not None else FaceEmbedder()
        refs = [embed_reference(Path(p), self.embedder) for p in reference_images]
        excl = [embed_reference(Path(p), self.embedder) for p in exclude_images]
        self._setup(np.asarray(refs, np.float32), np.asarray(excl, np.float32), threshold)

    @classmethod
    def from_embeddings(cls, reference: NDArray[np.float32], threshold: float = SAME_PERSON_DISTANCE,
                        exclude: NDArray[np.float32] | None = None, *,
                        embedder: FaceEmbedder | None = None) -> IdentityFilter:
        """A filter from embeddings already computed: reference (R, 128), exclude (E, 128)."""
        self = cls.__new__(cls)
        self.embedder = embedder if embedder is not None else FaceEmbedder()
        self._setup(np.asarray(reference, np.float32),
                    np.zeros((0, EMBED_DIM), np.float32) if exclude is None else np.asarray(exclude, np.float32),
                    threshold)
        return self

    def _setup(self, reference: NDArray[np.float32], exclude: NDArray[np.float32], threshold: float) -> None:
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold must be a positive distance, got {threshold}")
        self.reference = reference.reshape(-1, EMBED_DIM)  # (R, 128)
        self.exclude = exclude.reshape(-1, EMBED_DIM)  # (E, 128)
        if len(self.reference) == 0 and len(self.exclude) == 0:
            raise ValueError("an identity filter needs at least one reference or exclude image")
        self.threshold = float(threshold)

    def _nearest(self, bank: NDArray[np.float32], emb: Embeddings) -> NDArray[np.float64]:
        if len(bank) == 0:
            return np.full(len(emb), np.inf)
        return distances(emb, bank).min(axis=1)

    def reference_distances(self, embeddings: Embeddings) -> NDArray[np.float64]:
        """(N,) distance of each embedding to the nearest reference (inf without references)."""
        return self._nearest(self.reference, np.asarray(embeddings, np.float32).reshape(-1, EMBED_DIM))

    def accepts(self, embeddings: Embeddings) -> NDArray[np.bool_]:
        """(N,) keep decision for embeddings (N, 128)."""
        emb = np.asarray(embeddings, np.float32).reshape(-1, EMBED_DIM)
        d_ex = self._nearest(self.exclude, emb)
        if len(self.reference) == 0:
            return np.asarray(d_ex > self.threshold)
        d_ref = self._nearest(self.reference, emb)
        return np.asarray((d_ref <= self.threshold) & (d_ref < d_ex))

    def distance(self, frame: Frame, box: Box, landmarks: Landmarks | None = None) -> float:
        """Distance of the face at ``box`` in a (H, W, 3) uint8 RGB frame to the nearest reference."""
        return float(self.reference_distances(self.embedder.embed_one(frame, box, landmarks)[None])[0])

    def matches(self, frame: Frame, box: Box, landmarks: Landmarks | None = None) -> bool:
        """Whether the face at ``box`` ((4,) x0, y0, x1, y1 frame pixels) is the reference person. Pass the
        face's (468 or 478, 3) landmarks when known: the face is then located from them (steadier)."""
        return bool(self.accepts(self.embedder.embed_one(frame, box, landmarks)[None])[0])

    def matches_all(self, frame: Frame, boxes: Sequence[Box],
                    landmarks: Sequence[Landmarks] | None = None) -> list[bool]:
        """One decision per box, all faces of the frame embedded in one call."""
        return [bool(v) for v in self.accepts(self.embedder.embed(frame, boxes, landmarks))]
