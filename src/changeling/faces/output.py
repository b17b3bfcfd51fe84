"""Writing one extracted face: its mask polygons, its metadata and the PNG. A plain function of plain values,
so extraction can run it in worker processes (it imports no torch), as well as in its own threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from changeling.faces.facefile import FaceMeta, write_face
from changeling.masks import face_masks
from changeling.types import Frame


def write_extracted_face(path: Path, crop: Frame, landmarks: np.ndarray, affine: np.ndarray,
                         fields: dict[str, Any], sync_dir: bool = True) -> None:
    """Write ``crop`` (S, S, 3) uint8 to ``path`` with metadata: ``fields`` (the other :class:`FaceMeta`
    fields) plus the affine, the landmarks rounded to 1/1000 px and the mask polygons, which are computed here
    from the (N, 3) frame-pixel ``landmarks`` and the (2, 3) frame -> crop ``affine``. The file is on the disk
    when this returns (its folder entry too, unless ``sync_dir`` is off)."""
    a = np.asarray(affine, dtype=np.float64)
    lm = np.asarray(landmarks, dtype=np.float64)
    in_face = lm[:, :2] @ a[:, :2].T + a[:, 2]
    size = int(crop.shape[0])
    meta = FaceMeta(**fields, size=size, affine=a.tolist(), landmarks=np.round(lm, 3).tolist(),
                    masks=face_masks(in_face, size))
    write_face(Path(path), crop, meta, sync_dir=sync_dir)
