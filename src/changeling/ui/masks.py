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

LAYER_RGB = (40, 200, 80)  # the editor paints the visible face in the overlay's green
LAYER_ALPHA = 120  # translucent: the face stays visible under the paint
PAINTED = 40  # a layer pixel above this alpha is visible face (a brush's antialiased rim fades below it)
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
    """A face opened in the mask editor: the editor's value, the face's identity (to notice a face replaced
    under the same name before the save) and a line saying where its mask came from."""

    value: dict[str, Any]
    key: str
    note: str


def editor_value(image: Frame, visible: Mask) -> dict[str, Any]:
    """The mask editor's value for a face (S, S, 3) uint8 and its visible-face mask (S, S) in [0, 1]: the face as
    the background and the mask painted translucent green on the one layer (S, S, 4) uint8."""
    layer = np.zeros((*visible.shape, 4), np.uint8)
    layer[np.asarray(visible) > 0.5] = (*LAYER_RGB, LAYER_ALPHA)
    return {"background": image, "layers": [layer], "composite": image}


def open_face(project: Project, side: str, face: Path, segmenter: Segmenter | None) -> OpenedFace:
    """Open ``face`` (a face file of ``side``, already confined) in the editor with its current mask: its hand
    correction, else the segmenter's prediction, else its outline."""
    from changeling.faces.facefile import read_face
    from changeling.occlusion.corrections import face_key
    from changeling.occlusion.project import face_mask

    image, meta = read_face(face)
    visible, source = face_mask(project, side, face, segmenter)
    note = (f"**{face.name}** ({meta.size}x{meta.size} px), mask from {SOURCE_WORDS[source]}. Paint the face "
            "where it is visible; erase what covers it (a hand, a microphone, glasses, hair); then save.")
    return OpenedFace(editor_value(image, visible), face_key(meta), note)


def painted_mask(value: Mapping[str, Any] | None) -> Mask:
    """The visible-face mask (H, W) float32 in {0, 1} the user painted: pixels of any layer of the editor's
    ``value`` (RGBA arrays) above :data:`PAINTED` alpha. :class:`UserError` when it holds no layer."""
    layers = [np.asarray(x) for x in (value or {}).get("layers") or [] if x is not None]
    if not layers:
        raise UserError(f"the editor holds no mask; {EDITOR_HINT}")
    shapes = {x.shape for x in layers}
    if len(shapes) != 1 or layers[0].ndim != 3 or layers[0].shape[-1] != 4:
        raise UserError(f"the editor's layers are not one size of RGBA image ({sorted(shapes)}); {EDITOR_HINT}")
    return np.any(np.stack([x[..., 3] > PAINTED for x in layers]), axis=0).astype(np.float32)


def save_painted(project: Project, side: str, face: Path, opened_key: str, value: Mapping[str, Any] | None
                 ) -> Path:
    """Store what the user painted as the hand correction of ``face`` (a face file of ``side``, already
    confined), checked as ``masks import`` checks a PNG (the face exists, the mask is its size); refused when
    the file now holds another face than the one opened (``opened_key``). Returns the correction's file."""
    from changeling.faces.facefile import read_meta
    from changeling.occlusion.corrections import face_key
    from changeling.occlusion.project import save_face_mask

    mask = painted_mask(value)
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
