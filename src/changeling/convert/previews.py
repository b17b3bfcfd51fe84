"""``convert --preview FRAME``: one frame rendered with each colour mode, side by side with the original and the
blend mask, so the user can choose a mode without rendering the whole video. Each image shows a swapped face, so
it is marked as convert marks its output: the converter's watermark over the whole image (the picture a user
downloads), the synthetic-media metadata and a C2PA manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from changeling.convert.blend import paste_back
from changeling.convert.color import COLOR_MATCHERS, color_matcher
from changeling.convert.pipeline import Converter, FramePlan
from changeling.convert.writers import RenderedFrame
from changeling.errors import UserError
from changeling.provenance.marked import write_marked_image
from changeling.provenance.watermark import has_room
from changeling.types import Affine, Frame, Mask
from changeling.video.reader import TimedFrame, open_frames

log = logging.getLogger(__name__)


def _label(panel: Frame, text: str) -> Frame:
    out = panel.copy()
    scale = max(out.shape[1] / 900.0, 0.4)
    thick = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, 0), (w + 8, h + base + 8), (0, 0, 0), -1)
    cv2.putText(out, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def mask_image(shape: tuple[int, ...], rendered: RenderedFrame) -> Frame:
    """The blend masks of a rendered frame's faces in frame pixels, as a grey RGB image."""
    out = np.zeros(shape, np.uint8)
    for p in rendered.patches:
        white = np.full_like(p.face, 255)
        paste_back(out, white, p.mask, p.affine, inplace=True)
    return out


def side_by_side(original: Frame, swapped: Frame, mask: Frame, mode: str, max_panel_width: int = 1280,
                 middle: str | None = None) -> Frame:
    """original | swapped | mask, labelled (the middle one ``middle``, else 'swapped (MODE)'), each panel at
    most ``max_panel_width`` wide."""
    h, w = original.shape[:2]
    panels = [original, swapped, mask]
    if w > max_panel_width:
        size = (max_panel_width, max(1, round(h * max_panel_width / w)))
        panels = [np.asarray(cv2.resize(p, size, interpolation=cv2.INTER_AREA), np.uint8) for p in panels]
    names = ["original", middle or f"swapped ({mode})", "mask"]
    return np.hstack([_label(p, n) for p, n in zip(panels, names, strict=True)])


def find_frame(source: Path, index: int) -> TimedFrame:
    """Decode up to frame ``index`` of ``source``."""
    if index < 0:
        raise UserError(f"--preview takes a frame number from 0, got {index}")
    n = 0
    for tf in open_frames(source):
        n += 1
        if tf.index == index:
            return tf
    raise UserError(f"has {n} frames; --preview {index} is past the end (frames count from 0)", source)


def write_previews(converter: Converter, source: Path, frame_index: int, out_dir: Path, *,
                   modes: Sequence[str] = tuple(COLOR_MATCHERS), metadata: Mapping[str, str] | None = None,
                   max_panel_width: int = 1280) -> list[Path]:
    """Write ``NAME_fNNNNNN_MODE.png`` (original | swapped | mask) into ``out_dir`` for each colour mode, marked
    by the converter's marker, with ``metadata`` (default: the synthetic-media tags) and a C2PA manifest.

    The model runs once; each mode re-renders the same faces. Raises :class:`UserError` when the frame does
    not exist or holds no face.
    """
    source, out_dir = Path(source), Path(out_dir)
    converter.faces.open(open_frames(source))
    tf = find_frame(source, frame_index)
    plan = converter.prepare([tf], smoother=None)[0]
    if not plan.faces:
        raise UserError(f"no face found in frame {frame_index}; choose a frame with a face", source)
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = dict(metadata) if metadata is not None else None
    written = []
    for mode in modes:
        rendered = converter.render(plan, color=color_matcher(mode))
        img = side_by_side(tf.image, rendered.image, mask_image(tf.image.shape, rendered), mode, max_panel_width)
        if converter.marker is not None and has_room(*img.shape[:2]):
            img = converter.marker(img)
        path = out_dir / f"{source.stem}_f{frame_index:06d}_{mode}.png"
        write_marked_image(path, img, tags=tags)
        written.append(path)
        log.info("preview: %s", path)
    occluded = _occlusion_preview(converter, plan, tf.image, mask_image(tf.image.shape, rendered), max_panel_width)
    if occluded is not None:  # written as the others are: it comes from a swap, so it is marked alike
        if converter.marker is not None and has_room(*occluded.shape[:2]):
            occluded = converter.marker(occluded)
        path = out_dir / f"{source.stem}_f{frame_index:06d}_occlusion.png"
        write_marked_image(path, occluded, tags=tags)
        written.append(path)
        log.info("preview: %s", path)
    return written


def _occlusion_preview(converter: Converter, plan: FramePlan, frame: Frame, mask: Frame, max_panel_width: int
                       ) -> Frame | None:
    """original | the occlusion mask over the frame (red: covered, green: swapped) | blend mask; None when no
    occlusion segmenter ran."""
    from changeling.convert.maskops import hull_mask
    from changeling.detect.align import transform_points
    r = int(converter.swapper.resolution)
    faces = [(j.occlusion_mask, hull_mask(transform_points(j.landmarks, j.affine), r), j.affine)
             for j in plan.faces if j.occlusion_mask is not None]
    if not faces:
        return None
    return side_by_side(frame, frame_overlay(frame, faces), mask, "occlusion", max_panel_width,
                        middle="occlusion: red covered, green swapped")


def frame_overlay(frame: Frame, faces: Sequence[tuple[Mask, Mask, Affine]]) -> Frame:
    """``frame`` (H, W, 3) uint8 with each face's occlusion mask drawn over it
    (:func:`changeling.occlusion.overlay.tint_layers`). ``faces``: (visible, outline, affine) per face, masks
    (R, R) in the face crop and ``affine`` (2, 3) frame -> crop."""
    from changeling.occlusion.overlay import tint_layers

    out = frame.copy()
    for visible, outline, affine in faces:
        for colour, weight in tint_layers(visible, outline):
            solid = np.broadcast_to(colour, (*weight.shape, 3)).copy()
            paste_back(out, solid, weight, affine, inplace=True)
    return out
