"""128-d face embeddings from dlib's ResNet face recognition model (optional extra ``[identity]``).

The models come from the ``face-recognition-models`` package: ``shape_predictor_5_face_landmarks.dat`` (five
points: eye corners and the base of the nose) and ``dlib_face_recognition_resnet_model_v1.dat``; both are
CC0. The files are located without importing that package (its ``__init__`` needs ``pkg_resources``, which new
setuptools releases no longer ship). dlib is imported only when an embedder is built, so the rest of
changeling works without the extra, and every identity feature says how to install it.

Where a face is matters: dlib's shape predictor starts from its mean face placed in the box it is given, and
was trained on boxes from dlib's own HOG detector; a box of another shape (shifted toward the chin, or much
tighter) can make it mistake the nostrils for the eyes. So when the face's MediaPipe landmarks are known, a
box in the HOG detector's convention is derived from them (:func:`box_from_landmarks`) and dlib still places
its own five points: every embedding is made the same way whichever detector found the face. Feeding the
MediaPipe points to dlib directly was tried and is worse: their eye corners sit a few percent of the eye
distance away from dlib's, which moved embeddings by 0.05 to 0.2.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from changeling.errors import UserError
from changeling.faces.facefile import FaceMeta, read_face
from changeling.progress import bar
from changeling.types import Box, Frame, Landmarks

log = logging.getLogger(__name__)

INSTALL_HINT = "face identity features need dlib and its face models: pip install 'changeling[identity]'"
MODELS_PACKAGE = "face_recognition_models"
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
EMBED_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
EMBED_DIM = 128
# dlib documents 0.6 as the decision threshold of this model: two faces of the same person are nearly always
# closer than 0.6, faces of different people farther (99.38% on the LFW benchmark).
SAME_PERSON_DISTANCE = 0.6
BATCH = 32  # faces per call into dlib's network

# MediaPipe face-mesh indices: the corners of each eye and of the mouth.
EYE_A, EYE_B, MOUTH = (33, 133), (263, 362), (61, 291)
# dlib's HOG face box measured against MediaPipe landmarks (the two test portraits alone and in six scenes,
# each also mirrored: 28 faces): its
# centre lies 0.58 eye-to-mouth distances below the eyes' midpoint, its side is 2.21 eye distances or 2.40
# eye-to-mouth distances (spread 7%). The larger of the two sides is used: a turned head shortens the first,
# a nodding head the second.
BOX_CENTRE_DOWN, BOX_PER_EYES, BOX_PER_EYE_MOUTH = 0.58, 2.21, 2.40

Embeddings = NDArray[np.float32]  # (N, 128)
FaceAt = tuple[Frame, Box] | tuple[Frame, Box, Landmarks]  # a face in a frame: its box, and landmarks if known


def load_dlib() -> ModuleType:
    """Import dlib, or raise :class:`UserError` telling how to install the extra."""
    try:
        return importlib.import_module("dlib")
    except ImportError:
        raise UserError(INSTALL_HINT) from None


def model_file(name: str) -> Path:
    """Path of one model file shipped by ``face-recognition-models`` (the package itself is not imported)."""
    try:
        spec = importlib.util.find_spec(MODELS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(INSTALL_HINT)
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise UserError(f"model file {name} is missing from the {MODELS_PACKAGE} package; reinstall it: "
                    "pip install --force-reinstall 'changeling[identity]'")


def check_frame(frame: Any) -> Frame:
    """A C-contiguous (H, W, 3) uint8 RGB frame, or ``ValueError`` saying what came instead."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {got}")
    return np.ascontiguousarray(frame)


def check_box(box: Any) -> Box:
    """A finite (4,) x0, y0, x1, y1 box with positive width and height, as float32."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"expected a box (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box!r}")
    return b.astype(np.float32)


def box_in_crop(meta: FaceMeta) -> Box:
    """The face's detector box mapped from frame pixels into its aligned crop, (4,) x0, y0, x1, y1.

    The crop is upright, so the box keeps its centre (moved by the affine) and its size (scaled by the
    affine's scale); a rotated frame box does not become a larger axis-aligned one.
    """
    x0, y0, x1, y1 = check_box(meta.box).astype(np.float64)
    a = meta.affine_array
    scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    cx, cy = a[:, :2] @ np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + a[:, 2]
    hw, hh = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], dtype=np.float32)


def box_from_landmarks(landmarks: NDArray[Any], fallback: Box | None = None) -> Box:
    """A face box in dlib's HOG-detector convention, (4,) x0, y0, x1, y1, from (468 or 478, 2+) MediaPipe
    landmarks (pixels). Landmarks that do not span a face (eyes or mouth collapsed to a point) give
    ``fallback``, or ``ValueError`` without one."""
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[0] not in (468, 478) or pts.shape[1] < 2 or not np.all(np.isfinite(pts[:, :2])):
        raise ValueError(f"expected (468 or 478, 2+) finite landmarks, got {pts.shape}")
    pts = pts[:, :2]
    eye_a, eye_b = pts[list(EYE_A)].mean(0), pts[list(EYE_B)].mean(0)
    mid = (eye_a + eye_b) / 2
    down = pts[list(MOUTH)].mean(0) - mid
    eyes, eye_mouth = float(np.linalg.norm(eye_b - eye_a)), float(np.linalg.norm(down))
    if eyes < 1.0 or eye_mouth < 1.0:
        if fallback is not None:
            return check_box(fallback)
        raise ValueError("landmarks do not span a face (eyes or mouth collapsed to a point)")
    centre = mid + BOX_CENTRE_DOWN * down
    half = max(BOX_PER_EYES * eyes, BOX_PER_EYE_MOUTH * eye_mouth) / 2
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], np.float32)


def face_file_box(meta: FaceMeta) -> Box:
    """Where to look for the face in its aligned crop: from the landmarks, else the stored detector box."""
    return box_from_landmarks(meta.landmarks_in_face(), fallback=box_in_crop(meta))


def distances(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.float64]:
    """Euclidean distances (N, M) between embeddings a (N, 128) and b (M, 128)."""
    a = np.asarray(a, np.float64).reshape(-1, EMBED_DIM)
    b = np.asarray(b, np.float64).reshape(-1, EMBED_DIM)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


class FaceEmbedder:
    """dlib's five-point shape predictor plus ResNet embedder, loaded once and reused.

    ``jitters`` > 0 averages that many randomly jittered copies per face (steadier, that many times slower).
    """

    def __init__(self, *, jitters: int = 0) -> None:
        if jitters < 0:
            raise ValueError(f"jitters must be >= 0, got {jitters}")
        self._dlib = load_dlib()
        self.jitters = jitters
        self._shape = self._dlib.shape_predictor(str(model_file(SHAPE_MODEL)))
        self._net = self._dlib.face_recognition_model_v1(str(model_file(EMBED_MODEL)))
        self._hog: Any = None

    def _rect(self, box: Box) -> Any:
        x0, y0, x1, y1 = (int(round(float(v))) for v in check_box(box))
        # dlib's right and bottom are inclusive
        return self._dlib.rectangle(x0, y0, max(x1 - 1, x0), max(y1 - 1, y0))

    def _shapes(self, frame: Frame, boxes: Sequence[Box]) -> Any:
        shapes = self._dlib.full_object_detections()
        for box in boxes:
            shapes.append(self._shape(frame, self._rect(box)))
        return shapes

    def embed(self, frame: Frame, boxes: Sequence[Box],
              landmarks: Sequence[Landmarks] | None = None) -> Embeddings:
        """Embeddings (N, 128) float32 of the faces at ``boxes`` ((4,) x0, y0, x1, y1 frame pixels) in a
        (H, W, 3) uint8 RGB frame. With ``landmarks`` (one (468 or 478, 2+) array per box, frame pixels) the
        face is located from them instead of the box (see the module notes); prefer that when they are known."""
        frame = check_frame(frame)
        if landmarks is not None:
            if len(landmarks) != len(boxes):
                raise ValueError(f"got {len(boxes)} boxes but {len(landmarks)} landmark sets")
            boxes = [box_from_landmarks(lm, fallback=box) for lm, box in zip(landmarks, boxes, strict=True)]
        if len(boxes) == 0:
            return np.zeros((0, EMBED_DIM), np.float32)
        vecs = self._net.compute_face_descriptor(frame, self._shapes(frame, boxes), self.jitters)
        return np.asarray([np.asarray(v) for v in vecs], np.float32).reshape(-1, EMBED_DIM)

    def embed_one(self, frame: Frame, box: Box, landmarks: Landmarks | None = None) -> NDArray[np.float32]:
        """Embedding (128,) float32 of one face (see :meth:`embed`)."""
        return self.embed(frame, [box], None if landmarks is None else [landmarks])[0]

    def embed_many(self, items: Sequence[FaceAt]) -> Embeddings:
        """Embeddings (N, 128) of one face per (frame, box) or (frame, box, landmarks) item, sent to the
        network in batches (landmarks locate the face as in :meth:`embed`)."""
        out = np.zeros((len(items), EMBED_DIM), np.float32)
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            frames, shapes = [], []
            for item in chunk:
                if not isinstance(item, tuple) or len(item) not in (2, 3):
                    raise ValueError(f"expected (frame, box) or (frame, box, landmarks), got {type(item).__name__}")
                frame = check_frame(item[0])
                box = box_from_landmarks(item[2], fallback=item[1]) if len(item) == 3 else item[1]
                frames.append(frame)
                shapes.append(self._shapes(frame, [box]))
            vecs = self._net.compute_face_descriptor(frames, shapes, self.jitters)
            out[start:start + len(chunk)] = np.asarray([np.asarray(v[0]) for v in vecs], np.float32)
        return out

    def embed_face_files(self, paths: Sequence[Path], *, progress: bool = True) -> Embeddings:
        """Embeddings (N, 128) of aligned face PNGs, located in each crop by :func:`face_file_box`.

        Raises :class:`~changeling.faces.facefile.FaceFileError` (a ``UserError``) naming a bad file before
        anything else is computed for it.
        """
        out = np.zeros((len(paths), EMBED_DIM), np.float32)
        with bar(total=len(paths), desc="embedding faces", unit="face", enabled=progress) as b:
            for start in range(0, len(paths), BATCH):
                items = []
                for p in paths[start:start + BATCH]:
                    image, meta = read_face(Path(p))
                    items.append((image, face_file_box(meta)))
                out[start:start + len(items)] = self.embed_many(items)
                b.update(len(items))
        return out

    def detect(self, frame: Frame, *, min_face: int = 40, max_side: int = 4000) -> list[tuple[Box, float]]:
        """Faces found by dlib's HOG detector as (box, score), most confident first.

        The detector's window is 80 px; the frame is upsampled (doubling) so that faces down to ``min_face``
        px are found, as far as the upsampled frame's longer side stays within ``max_side``.
        """
        frame = check_frame(frame)
        if self._hog is None:
            self._hog = self._dlib.get_frontal_face_detector()
        upsample = max(0, math.ceil(math.log2(80 / max(min_face, 1))))
        while upsample and max(frame.shape[:2]) * 2 ** upsample > max_side:
            upsample -= 1
        rects, scores, _ = self._hog.run(frame, upsample, 0.0)
        found = [(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32), float(s))
                 for r, s in zip(rects, scores, strict=True)]
        return sorted(found, key=lambda fs: -fs[1])
