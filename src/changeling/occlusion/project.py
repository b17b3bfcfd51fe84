"""The occlusion segmenter as a project sees it: finding and checking the project's segmenter, and each face's
occlusion mask (its hand correction when it has one, else the segmenter's prediction). These are the calls a UI
makes: :func:`face_mask` to show a face's mask, :func:`save_face_mask` to keep a hand-corrected one,
:func:`changeling.occlusion.trainer.train_segmenter` to train or fine-tune."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from changeling.errors import UserError
from changeling.faces.facefile import FaceFileError, FaceMeta, list_faces, read_face, read_meta
from changeling.masks.raster import polygon_mask
from changeling.occlusion.corrections import IMPORT_HINT, corrections_dir, import_mask, read_correction
from changeling.occlusion.predict import Segmenter
from changeling.occlusion.store import TRAIN_HINT, check_fits, read_segmenter, segmenter_path
from changeling.project import Project
from changeling.types import Mask

log = logging.getLogger(__name__)

SIGNATURE_FACES = 48  # faces per side read to learn the project's face type, size and sources


@dataclass(frozen=True)
class FacesSignature:
    """What the project's faces are: one face type and size, extracted from these sources."""

    face_type: str | None
    face_size: int | None
    sources: tuple[str, ...]


def source_id(meta: FaceMeta) -> str:
    """The source a face came from: its content hash, or its file name when it has none."""
    return meta.source_hash or meta.source


def faces_signature(faces_dirs: Sequence[Path], per_side: int = SIGNATURE_FACES) -> FacesSignature:
    """Face type, size and sources of the faces in ``faces_dirs``, read from an even spread of at most
    ``per_side`` face files per folder (unreadable ones are skipped)."""
    face_type, face_size, sources = None, None, set()
    for folder in faces_dirs:
        paths = list_faces(folder)
        if len(paths) > per_side:
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, per_side).round().astype(int)]
        for p in paths:
            try:
                meta = read_meta(p)
            except FaceFileError:
                continue
            if face_type is None:
                face_type, face_size = meta.face_type, meta.size
            sources.add(source_id(meta))
    return FacesSignature(face_type, face_size, tuple(sorted(sources)))


def project_of_faces(faces_dir: Path) -> Path | None:
    """The project folder that holds ``faces_dir`` (``PROJECT/faces/SIDE``), or None if it is not laid out so."""
    faces_dir = Path(faces_dir)
    return faces_dir.parent.parent if faces_dir.parent.name == "faces" else None


def load_project_segmenter(root: Path, device: str = "cpu", *, required: bool = False,
                           signature: FacesSignature | None = None) -> Segmenter | None:
    """The project's segmenter, checked against its faces; None when it has none (unless ``required``: then
    :class:`UserError` says how to train one). A segmenter that does not fit is refused whatever ``required``."""
    root = Path(root)
    path = segmenter_path(root)
    if not path.exists():
        if required:
            raise UserError("this project has no occlusion segmenter; " + TRAIN_HINT.format(root=root), root)
        return None
    loaded = read_segmenter(path)
    sig = signature or faces_signature([root / "faces" / "A", root / "faces" / "B"])
    check_fits(loaded.info, path, face_type=sig.face_type, face_size=sig.face_size, sources=sig.sources)
    return Segmenter(loaded, device)


MaskSource = Literal["correction", "segmenter", "outline"]


def outline_mask(meta: FaceMeta, size: int) -> Mask:
    """The face's outline (extended polygon, else hull) at ``size`` px; the whole crop when it has neither."""
    poly = meta.masks.get("extended") or meta.masks.get("hull")
    if not poly:
        return np.ones((size, size), np.float32)
    return polygon_mask(size, [poly], size / meta.size)


def face_mask(project: Project, side: str, face_path: Path, segmenter: Segmenter | None = None
              ) -> tuple[Mask, MaskSource]:
    """The occlusion mask of one face file at its own size (S, S) float32 in [0, 1] (1: visible face) and where
    it came from: the hand correction, else the segmenter's prediction cut to the outline, else the outline."""
    faces_dir = project.faces_dir(side)
    image, meta = read_face(Path(face_path))
    corrected = read_correction(faces_dir, meta)
    if corrected is not None:
        return corrected, "correction"
    outline = outline_mask(meta, meta.size)
    if segmenter is None:
        return outline, "outline"
    return np.minimum(outline, segmenter(image[None])[0]), "segmenter"


def save_face_mask(project: Project, side: str, face_path: Path, mask: np.ndarray, hint: str = IMPORT_HINT
                   ) -> Path:
    """Keep a hand-corrected mask (S, S) for the face file named like ``face_path`` among ``side``'s faces
    (white / > 0.5: visible face), checked as `masks import` checks its PNGs (:func:`import_mask`: the face
    exists, the mask is its size). Returns the correction's file."""
    return import_mask(project.faces_dir(side), Path(face_path).name, mask, hint)


def visible_planes(faces_dir: Path, images: np.ndarray, metas: Sequence[FaceMeta], segmenter: Segmenter | None
                   ) -> np.ndarray:
    """(N, R, R) float32 visibility for faces already at resolution R: each face's hand correction (resized)
    when it has one, else the segmenter's prediction on ``images`` (N, 3, R, R) uint8 (ones without one)."""
    n, r = images.shape[0], images.shape[-1]
    out = np.ones((n, r, r), np.float32)
    if segmenter is not None and n:
        out = segmenter(np.ascontiguousarray(images.transpose(0, 2, 3, 1)))
    for i, meta in enumerate(metas):
        corrected = read_correction(faces_dir, meta)
        if corrected is not None:
            interp = cv2.INTER_AREA if r < corrected.shape[0] else cv2.INTER_LINEAR
            out[i] = np.asarray(cv2.resize(corrected, (r, r), interpolation=interp), np.float32)
    return out


def cut_covered(faces_dir: Path, images: np.ndarray, masks: np.ndarray, metas: Sequence[FaceMeta],
                chunk: int = 256) -> int:
    """Training's hook: cut what covers each face out of its mask planes, in place, so the pair model's loss
    ignores covered pixels. ``images`` (N, 3, R, R) uint8, ``masks`` (N, 3, R, R) uint8 [face, eyes, mouth].

    Uses the project's segmenter (when ``faces_dir`` lies in a project that has one; one that does not fit is
    refused) and the faces' hand corrections. Returns how many faces had covered pixels (nothing changes, and 0
    comes back, without either)."""
    root = project_of_faces(faces_dir)
    segmenter = load_project_segmenter(root) if root is not None else None
    if segmenter is None and not corrections_dir(faces_dir).is_dir():
        return 0
    cut = 0
    for start in range(0, len(metas), chunk):
        vis = visible_planes(faces_dir, images[start:start + chunk], metas[start:start + chunk], segmenter)
        keep = np.rint(vis * 255.0).astype(np.uint8)[:, None]  # (n, 1, R, R)
        part = masks[start:start + chunk]
        before = part[:, 0].astype(np.int32).sum(axis=(1, 2))
        np.minimum(part, keep, out=part)
        cut += int(np.count_nonzero(part[:, 0].astype(np.int32).sum(axis=(1, 2)) < before - 255))
    if segmenter is not None:
        log.info("%s: occlusion masks from %s cut covered pixels of %d of %d faces out of the loss", faces_dir,
                 segmenter.path, cut, len(metas))
    return cut


def export_masks(project: Project, side: str, out_dir: Path, segmenter: Segmenter | None = None, *,
                 progress: bool = True) -> dict[MaskSource, int]:
    """Write every face's current mask (:func:`face_mask`) as a grey PNG named like its face file into
    ``out_dir``: the files to correct by hand and import again. Returns how many came from each source."""
    from changeling.progress import bar
    from changeling.video.images import write_image_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[MaskSource, int] = {"correction": 0, "segmenter": 0, "outline": 0}
    paths = list_faces(project.faces_dir(side))
    for path in bar(paths, desc="exporting masks", unit="face", enabled=progress):
        try:
            mask, source = face_mask(project, side, path, segmenter)
        except FaceFileError as exc:
            log.warning("skipping %s", exc)
            continue
        write_image_atomic(out_dir / path.name, np.where(mask > 0.5, 255, 0).astype(np.uint8))
        counts[source] += 1
    return counts
