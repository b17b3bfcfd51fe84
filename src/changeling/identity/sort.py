"""Order a faces folder for pruning: rename each face with a rank prefix (``0001_``), reversibly.

The original names are kept in a small manifest (``.changeling-sort.json``) in the folder, so sorting again
replaces the prefix instead of stacking a second one, and :func:`unsort_faces` restores the names. Renames go
through hidden names (``.changeling-sorting-<final name>``) so that no rename can overwrite another face; a
run that was interrupted between the two steps is finished by the next run.

Orders (the faces most worth deleting come last):
- ``identity``: distance to the folder's mean embedding, ascending, so other people and bad crops come last.
- ``blur``: variance of the Laplacian of the grey face (inside its hull mask when the metadata has one),
  sharpest first.
- ``yaw``: head turn estimated from the landmarks, from turned toward the image's left to turned right.
- ``size``: the face box side in the source frame, largest first.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.errors import UserError
from changeling.faces.facefile import FaceMeta, list_faces, read_face, read_meta
from changeling.identity.embed import FaceEmbedder, distances
from changeling.masks.raster import polygon_mask
from changeling.progress import iterate
from changeling.vocab import SORT_KEYS, SortKey

log = logging.getLogger(__name__)

MANIFEST = ".changeling-sort.json"
PENDING = ".changeling-sorting-"

# MediaPipe face-mesh points used for yaw: nose tip, and the face-oval points at the cheeks (image left and
# right of a frontal face). In MediaPipe's canonical face model the nose tip stands 9.91 units in front of the
# cheek points, which are 7.66 units either side of the centre; YAW_DEPTH is that ratio.
NOSE_TIP, CHEEK_LEFT, CHEEK_RIGHT = 1, 234, 454
YAW_DEPTH = (7.475604 + 2.435867) / 7.664182


def blur_score(image: NDArray[np.uint8], mask: NDArray[np.float32] | None = None) -> float:
    """Variance of the Laplacian of the grey image ((H, W, 3) uint8 RGB), over ``mask`` > 0.5 if given.
    Higher is sharper."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_64F)
    if mask is not None:
        inside = lap[mask > 0.5]
        if inside.size >= 16:
            return float(inside.var())
    return float(lap.var())


def yaw_degrees(landmarks: NDArray[np.float32]) -> float:
    """Head turn in degrees from (N, 2+) MediaPipe landmarks: 0 frontal, > 0 turned toward the image's right.

    Uses only x, y (depth scales differ between landmark models): the nose tip's offset from the midpoint of the
    two cheek points along the line joining them, over half their distance, is ``YAW_DEPTH * tan(yaw)`` for a
    rigid head turned by ``yaw`` under orthographic projection. Roll does not change the result.
    """
    pts = np.asarray(landmarks, np.float64)[:, :2]
    left, right, nose = pts[CHEEK_LEFT], pts[CHEEK_RIGHT], pts[NOSE_TIP]
    axis = right - left
    half = float(np.linalg.norm(axis)) / 2
    if half < 1e-9:
        return 0.0
    offset = float((nose - (left + right) / 2) @ axis) / (2 * half)
    return math.degrees(math.atan(offset / half / YAW_DEPTH))


def face_size(meta: FaceMeta) -> float:
    """Side of the face box in the source frame, pixels (geometric mean of width and height)."""
    x0, y0, x1, y1 = meta.box
    return math.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))


def sort_keys(paths: Sequence[Path], by: SortKey, *, embedder: FaceEmbedder | None = None,
              progress: bool = True) -> NDArray[np.float64]:
    """(N,) key per face; ascending key order is the sorted order (keys are negated where larger is better)."""
    if by not in SORT_KEYS:
        raise ValueError(f"sort key must be one of {', '.join(SORT_KEYS)}, got {by!r}")
    if by == "identity":
        embedder = embedder if embedder is not None else FaceEmbedder()
        emb = embedder.embed_face_files(list(paths), progress=progress)
        return distances(emb, emb.mean(axis=0, keepdims=True))[:, 0]
    keys = np.zeros(len(paths))
    for i, path in enumerate(iterate(paths, total=len(paths), desc=f"sorting by {by}", unit="face",
                                     enabled=progress)):
        if by == "blur":
            image, meta = read_face(path)
            hull = meta.masks.get("hull")
            mask = polygon_mask(meta.size, [hull]) if hull else None
            keys[i] = -blur_score(image, mask)
        elif by == "yaw":
            keys[i] = yaw_degrees(read_meta(path).landmarks_array)
        else:
            keys[i] = -face_size(read_meta(path))
    return keys


def _read_manifest(folder: Path) -> dict[str, str]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = data["original"]
        if not isinstance(names, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in names.items()):
            raise ValueError("'original' must map names to names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"sort manifest is damaged ({exc}); delete it to start afresh (names keep their "
                        "current prefixes)", path) from None
    return {k: v for k, v in names.items() if _plain_name(k) and _plain_name(v)}


def _plain_name(name: str) -> bool:
    return bool(name) and name == Path(name).name and not name.startswith(".")


def _write_manifest(folder: Path, names: dict[str, str]) -> None:
    path = folder / MANIFEST
    if not names:
        path.unlink(missing_ok=True)
        return
    tmp = folder / f"{MANIFEST}.part"
    tmp.write_text(json.dumps({"version": 1, "original": names}, indent=0, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _finish_pending(folder: Path) -> None:
    """Give faces left under a hidden name by an interrupted run their final name."""
    for p in sorted(folder.glob(f"{PENDING}*")):
        final = folder / p.name[len(PENDING):]
        if final.exists():
            log.warning("%s: left as it is, %s already exists", p, final.name)
        else:
            os.rename(p, final)


def _rename_all(folder: Path, plan: dict[str, str], manifest: dict[str, str]) -> None:
    """Rename current -> final names in two steps; ``manifest`` (final -> original) is saved first, merged
    with the old one so that an interruption never loses an original name."""
    moving = {cur: fin for cur, fin in plan.items() if cur != fin}
    old = _read_manifest(folder)
    _write_manifest(folder, {**old, **manifest})
    for cur, fin in moving.items():
        os.rename(folder / cur, folder / f"{PENDING}{fin}")
    for fin in moving.values():
        os.rename(folder / f"{PENDING}{fin}", folder / fin)
    _write_manifest(folder, {k: v for k, v in manifest.items() if k != v})


def _originals(folder: Path, faces: list[Path]) -> list[str]:
    manifest = _read_manifest(folder)
    originals = [manifest.get(p.name, p.name) for p in faces]
    if len(set(originals)) != len(originals):
        # two faces claim the same original name (the folder was edited by hand): keep current names
        log.warning("%s: sort manifest does not fit the folder any more; current names are kept as originals",
                    folder)
        originals = [p.name for p in faces]
    return originals


def sort_faces(faces_dir: Path, by: SortKey, *, embedder: FaceEmbedder | None = None,
               progress: bool = True) -> list[Path]:
    """Rename the faces of ``faces_dir`` to ``<rank>_<original name>`` in the order ``by``; returns the new
    paths in that order. Every key is computed before any file is renamed."""
    faces_dir = Path(faces_dir)
    if not faces_dir.is_dir():
        raise UserError("no such faces folder", faces_dir)
    _finish_pending(faces_dir)
    faces = list_faces(faces_dir)
    if not faces:
        raise UserError("no face PNGs in this folder to sort", faces_dir)
    originals = _originals(faces_dir, faces)
    keys = sort_keys(faces, by, embedder=embedder, progress=progress)
    order = sorted(range(len(faces)), key=lambda i: (keys[i], originals[i]))
    width = max(4, len(str(len(faces))))
    plan, manifest = {}, {}
    for rank, i in enumerate(order, start=1):
        final = f"{rank:0{width}d}_{originals[i]}"
        plan[faces[i].name] = final
        manifest[final] = originals[i]
    _rename_all(faces_dir, plan, manifest)
    log.info("%s: %d faces sorted by %s", faces_dir, len(faces), by)
    return [faces_dir / plan[faces[i].name] for i in order]


def unsort_faces(faces_dir: Path) -> list[Path]:
    """Give the faces of ``faces_dir`` back the names they had before :func:`sort_faces`; returns them."""
    faces_dir = Path(faces_dir)
    if not faces_dir.is_dir():
        raise UserError("no such faces folder", faces_dir)
    _finish_pending(faces_dir)
    faces = list_faces(faces_dir)
    originals = _originals(faces_dir, faces)
    _rename_all(faces_dir, {p.name: o for p, o in zip(faces, originals, strict=True)}, {})
    return sorted(faces_dir / o for o in originals)
