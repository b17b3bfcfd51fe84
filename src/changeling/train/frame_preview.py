"""The trainer's full-frame preview: a few frames of A's own footage with the current model's swap pasted in,
so the user sees the real result while training runs (``previews/frames.png``, marked as synthetic media as
convert marks its output)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from changeling.convert.blend import paste_back
from changeling.detect.align import face_affine, rescale_affine, transform_points, warp_face
from changeling.errors import UserError
from changeling.faces.facefile import FaceFileError, list_faces, read_meta
from changeling.faces.store import AlignmentStore
from changeling.masks.masks import face_masks, feather
from changeling.masks.raster import polygon_mask
from changeling.models.detail import output_resolution
from changeling.project import Project
from changeling.provenance.marked import write_synthetic_image
from changeling.types import Frame
from changeling.video import open_frames

log = logging.getLogger(__name__)

FRAMES = 3
MAX_SIDE = 720  # the strip is shown at most this wide or high

FramePreview = Callable[[torch.nn.Module, int, Path], None]  # (model in eval mode, step, previews folder)


def _sample(project: Project, count: int) -> list[tuple[Frame, np.ndarray]]:
    """Up to ``count`` frames of A's first extracted source with the landmarks of their largest face."""
    stores = sorted(project.alignments_dir.glob("*.A.sqlite")) if project.alignments_dir.is_dir() else []
    for db in stores:
        with AlignmentStore.open_existing(db) as store:
            faces = [f for f in store.all_faces() if f.face == 0]
            if not faces:
                continue
            try:
                source = store.source_file(project.root)  # confined: a tampered store names no other file
            except UserError as exc:
                log.info("full-frame preview: skipping %s (%s)", db.name, exc)
                continue
        picks = {faces[int(i)].frame: faces[int(i)].landmarks
                 for i in np.linspace(0, len(faces) - 1, min(count, len(faces))).round()}
        out = []
        for tf in open_frames(source):
            if tf.index in picks:
                out.append((tf.image, picks[tf.index]))
            if len(out) == len(picks):
                break
        return out
    return []


def make_frame_preview(project: Project, face_type: str, count: int = FRAMES) -> FramePreview | None:
    """A hook for the trainer (``train(..., frame_preview=...)``); ``None`` when A has no extracted footage."""
    try:
        samples = _sample(project, count)
    except Exception as exc:  # noqa: BLE001 - a preview is never worth failing training for
        log.warning("no full-frame preview (%s)", exc)
        return None
    if not samples:
        return None

    @torch.inference_mode()
    def render(model: torch.nn.Module, step: int, previews_dir: Path) -> None:
        r = int(model.config.resolution)  # type: ignore[union-attr, arg-type]
        size = output_resolution(model)  # larger behind a detail stage
        tiles = []
        for image, landmarks in samples:
            affine = face_affine(landmarks, face_type, r)  # type: ignore[arg-type]
            crop = warp_face(image, affine, r)
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
            out = model.swap(x, to="B")  # type: ignore[operator]
            face = out.face[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            paste = rescale_affine(affine, r, size)
            hull = polygon_mask(size, [face_masks(transform_points(landmarks[:, :2], paste), size)["hull"]])
            mask = np.minimum(out.mask[0, 0].clamp(0, 1).cpu().numpy(), feather(hull, max(1.0, size / 32)))
            swapped = paste_back(image, face, mask, paste)
            tiles.append(np.concatenate([image, swapped], axis=1))
        strip = np.concatenate(tiles, axis=0)
        scale = MAX_SIDE / max(strip.shape[:2])
        if scale < 1:
            import cv2

            strip = cv2.resize(strip, (round(strip.shape[1] * scale), round(strip.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        write_synthetic_image(previews_dir / "frames.png", np.ascontiguousarray(strip))

    return render


def frame_preview_for(project: Project) -> FramePreview | None:
    """The full-frame preview (A's footage with the swap pasted in) when A's faces and footage are there."""
    faces = list_faces(project.faces_dir("A"))
    try:
        face_type = read_meta(faces[0]).face_type if faces else None
    except FaceFileError:
        face_type = None
    return make_frame_preview(project, face_type) if face_type else None
