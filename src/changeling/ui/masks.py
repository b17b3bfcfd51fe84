"""What the web UI shows and edits of a project's occlusion masks (:mod:`changeling.occlusion`): the project's
segmenter (loaded again only when its file or the faces change), faces with their covered part in red (the face
galleries of the Extract and Masks tabs), and the mask editor's value for a face and the mask read back from
what the user painted on it. The tabs confine every path before it gets here; the library checks the rest."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from changeling.errors import UserError
from changeling.project import Project
from changeling.types import Frame, Mask
from changeling.ui.page import dir_sig

if TYPE_CHECKING:
    from changeling.occlusion.predict import Segmenter

log = logging.getLogger(__name__)

BRUSHES = (("rgb(40, 200, 80)", 0.6), ("rgb(235, 40, 40)", 0.6))  # the overlay's green (visible), red (covered)
PAINTED = 40  # a layer pixel above this alpha is painted (a brush's antialiased rim fades below it)
EDITOR_HINT = "choose the face again in the gallery"
SOURCE_WORDS = {"correction": "your hand correction", "segmenter": "the occlusion segmenter",
                "outline": "the face outline (no segmenter yet: train one below)"}


def file_sig(path: Path) -> tuple[int, int, int]:
    """Changes when the file at ``path`` is written again, even twice within the clock's resolution (an atomic
    write is a new inode); zeros when missing."""
    try:
        st = path.stat()
    except OSError:
        return 0, 0, 0
    return st.st_mtime_ns, st.st_ino, st.st_size


def masks_sig(project: Project) -> tuple[Any, ...]:
    """Changes when what the face galleries' overlays show may change: the segmenter file, the faces of both
    sides (the segmenter's fit is checked against them) and their corrections."""
    from changeling.occlusion.corrections import corrections_dir
    from changeling.occlusion.store import segmenter_path

    return (file_sig(segmenter_path(project.root)),
            *(dir_sig(d) for s in ("A", "B") for d in (project.faces_dir(s), corrections_dir(project.faces_dir(s)))))


@dataclass(frozen=True)
class ProjectSegmenter:
    """The project's segmenter; or None, with ``note`` saying why when it was refused (empty: none trained)."""

    segmenter: Segmenter | None
    note: str = ""


class SegmenterCache:
    """The open project's segmenter, loaded and checked against its faces
    (:func:`changeling.occlusion.project.load_project_segmenter`) once per version of its file and faces.
    Thread-safe: Gradio runs handlers of several pages at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._value = ProjectSegmenter(None)

    def get(self, project: Project) -> ProjectSegmenter:
        from changeling.occlusion.store import segmenter_path

        path = segmenter_path(project.root)
        key = (str(project.root), file_sig(path), dir_sig(project.faces_dir("A")), dir_sig(project.faces_dir("B")))
        with self._lock:
            if key != self._key:
                if not path.exists():
                    value = ProjectSegmenter(None)
                else:
                    from changeling.occlusion.project import load_project_segmenter

                    try:
                        value = ProjectSegmenter(load_project_segmenter(project.root))
                    except UserError as exc:  # shown on the page; the faces are shown without it
                        log.warning("%s", exc)
                        value = ProjectSegmenter(None, f"the occlusion segmenter is not used: {exc}")
                self._key, self._value = key, value
            return self._value


SEGMENTERS = SegmenterCache()  # one per server process: it holds only the open project's


def gallery_images(project: Project, side: str, faces: Sequence[Path], segmenter: Segmenter | None
                   ) -> list[tuple[str | Frame, bool]]:
    """Each face as a gallery shows it, and whether it has a hand correction: with the part that covers it in
    red (its correction, else ``segmenter``'s prediction, cut to its outline), or its file as it is when neither
    says anything (or it cannot be read: it is shown so that it can be deleted)."""
    from changeling.faces.facefile import read_face
    from changeling.occlusion.corrections import corrections_dir
    from changeling.occlusion.overlay import tint
    from changeling.occlusion.project import face_mask, outline_mask

    if segmenter is None and not corrections_dir(project.faces_dir(side)).is_dir():
        return [(str(f), False) for f in faces]
    out: list[tuple[str | Frame, bool]] = []
    for face in faces:
        try:
            image, meta = read_face(face)
            visible, source = face_mask(project, side, face, segmenter)
        except UserError as exc:
            log.warning("%s", exc)
            out.append((str(face), False))
            continue
        if source == "outline":
            out.append((str(face), False))
        else:
            out.append((tint(image, visible, outline_mask(meta, meta.size), green=False), source == "correction"))
    return out


@dataclass(frozen=True)
class OpenedFace:
    """A face opened in the mask editor: the editor's value, the mask it shows (S, S) float32 (what is painted
    changes it), the face's identity (to notice a face replaced under the same name before the save) and a line
    saying where its mask came from."""

    value: dict[str, Any]
    base: Mask
    key: str
    note: str


def editor_value(image: Frame, visible: Mask, outline: Mask) -> dict[str, Any]:
    """The mask editor's value for a face (S, S, 3) uint8 and its visible-face mask (S, S) in [0, 1]: the face
    with the mask drawn on it as the background (green: visible face; red: inside ``outline`` but covered),
    nothing painted yet. (Gradio's editor keeps a layer it is given but neither shows it nor keeps it once a
    stroke is drawn: the mask is drawn into the background, and the layer holds only the user's strokes.)"""
    from changeling.occlusion.overlay import tint

    shown = tint(image, visible, np.maximum(outline, visible))
    return {"background": shown, "layers": [], "composite": shown}


def open_face(project: Project, side: str, face: Path, segmenter: Segmenter | None) -> OpenedFace:
    """Open ``face`` (a face file of ``side``, already confined) in the editor with its current mask: its hand
    correction, else the segmenter's prediction, else its outline."""
    from changeling.faces.facefile import read_face
    from changeling.occlusion.corrections import face_key
    from changeling.occlusion.project import face_mask, outline_mask

    image, meta = read_face(face)
    visible, source = face_mask(project, side, face, segmenter)
    base = (np.asarray(visible) > 0.5).astype(np.float32)
    note = (f"**{face.name}** ({meta.size}x{meta.size} px), mask from {SOURCE_WORDS[source]}. Paint green where "
            "the face is visible, red over what covers it (a hand, a microphone, glasses, hair); the eraser takes "
            "paint back. Then save.")
    return OpenedFace(editor_value(image, base, outline_mask(meta, meta.size)), base, face_key(meta), note)


def painted_mask(base: Mask, value: Mapping[str, Any] | None, face: Path) -> Mask:
    """``base`` (S, S) with what the user painted on the editor's layers (``value``'s RGBA arrays, in order):
    a pixel above :data:`PAINTED` alpha is visible face where green, covered where red. A layer of another size
    than the face is refused with the library's check (:class:`UserError` naming ``face``)."""
    from changeling.occlusion.corrections import check_mask_size

    out = (np.asarray(base) > 0.5).astype(np.float32)
    for layer in (value or {}).get("layers") or []:
        if layer is None:
            continue
        layer = np.asarray(layer)
        check_mask_size(face, layer.shape, out.shape[0], face.name)
        if layer.ndim != 3 or layer.shape[-1] != 4:
            raise UserError(f"the editor's layer is not an RGBA image ({layer.shape}); {EDITOR_HINT}", face)
        painted = layer[..., 3] > PAINTED
        green = layer[..., 1].astype(np.int32) >= layer[..., 0].astype(np.int32)
        out[painted] = green[painted].astype(np.float32)
    return out


def save_painted(project: Project, side: str, face: Path, opened_key: str, base: Any,
                 value: Mapping[str, Any] | None) -> Path:
    """Store ``base`` (the mask the editor opened with) with what the user painted as the hand correction of
    ``face`` (a face file of ``side``, already confined), checked as ``masks import`` checks a PNG (the face
    exists, the mask is its size); refused when no face was opened, or the file now holds another face than the
    one opened (``opened_key``). Returns the correction's file."""
    from changeling.faces.facefile import read_meta
    from changeling.occlusion.corrections import face_key
    from changeling.occlusion.project import save_face_mask

    if base is None or not opened_key:
        raise UserError(f"no face is open in the editor; {EDITOR_HINT}")
    mask = painted_mask(np.asarray(base, np.float32), value, face)
    if face.is_file() and face_key(read_meta(face)) != opened_key:
        raise UserError(f"holds another face than the one opened (extracted again?); {EDITOR_HINT}", face)
    return save_face_mask(project, side, face, mask, hint=EDITOR_HINT)


def segmenter_summary(project: Project, loaded: ProjectSegmenter) -> str:
    """A line on the project's segmenter and its corrections, for the Masks tab."""
    from changeling.occlusion.corrections import count_corrections

    corrected = ", ".join(f"{count_corrections(project.faces_dir(s))} of {s}" for s in ("A", "B"))
    if loaded.segmenter is None:
        return f"{loaded.note or 'No occlusion segmenter yet: train one below'}. Hand-corrected faces: {corrected}."
    info = loaded.segmenter.info
    return (f"Occlusion segmenter: step **{info.step}**, {info.config.resolution} px, trained {info.seconds:.0f} s, "
            f"on {info.corrections} hand-corrected faces. Hand-corrected faces now: {corrected}.")
