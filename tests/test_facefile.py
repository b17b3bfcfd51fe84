"""Face files from an untrusted project: coordinates are bounded by the crop, and only regular files are read.

A face PNG's metadata is trained on (mask polygons are rasterised, landmarks mapped through the affine), so a
value such as 1e308 must be refused with a clear message, and training skips such a face as it skips a corrupt
one. A FIFO named like a face would block every reader for ever.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from changeling.faces.facefile import (
    FaceFileError,
    FaceMeta,
    meta_from_dict,
    read_face,
    read_meta,
    write_face,
)
from changeling.train.data import load_faces
from changeling.train.testfaces import make_faces
from hangs import outcome


@pytest.fixture(scope="module")
def real_meta(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The metadata of a test face (synthetic landmarks on a portrait crop), as a plain dict."""
    folder = tmp_path_factory.mktemp("faces")
    make_faces(folder, "A", 1, size=64)
    meta = read_meta(next(folder.iterdir()))
    return {k: copy.deepcopy(getattr(meta, k)) for k in FaceMeta.__dataclass_fields__}


def _edit(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(d)
    if key == "mask":
        out["masks"]["hull"][3] = value
    elif key == "landmark":
        out["landmarks"][10] = value
    elif key == "affine-entry":
        out["affine"][0][2] = value
    elif key == "affine-scale":
        out["affine"] = [[value, 0.0, 0.0], [0.0, value, 0.0]]
    else:
        out[key] = value
    return out


OUT_OF_BOUNDS = [
    ("mask", [1e308, 5.0], "mask hull lies outside the 64 px crop"),
    ("mask", [-200.0, 5.0], "mask hull lies outside the 64 px crop"),
    ("landmark", [1e7, 5.0, 0.0], "landmarks reach beyond"),
    ("landmark", [5000.0, 100.0, 0.0], "landmarks lie outside the 64 px crop"),
    ("landmark", [200.0, 100.0, 1e6], "landmark depths exceed"),
    ("box", [0.0, 0.0, 1e9, 10.0], "box reach beyond"),
    ("box", [-4000.0, 0.0, 10.0, 10.0], "box lie outside"),
    ("affine-entry", 1e300, "affine holds values beyond"),
    ("affine-scale", 1e-9, "affine scales by"),
    ("score", 7.5, "score must be from 0 to 1"),
    ("time", -3.0, "time must be from 0"),
    ("blur", -1.0, "blur must be from 0"),
]


@pytest.mark.parametrize(("key", "value", "says"), OUT_OF_BOUNDS, ids=[f"{k}-{i}" for i, (k, _v, _s)
                                                                         in enumerate(OUT_OF_BOUNDS)])
def test_coordinates_are_bounded_by_the_crop(real_meta: dict[str, Any], key: str, value: Any, says: str) -> None:
    meta_from_dict(real_meta)  # the unedited one is fine
    with pytest.raises(ValueError, match=says):
        meta_from_dict(_edit(real_meta, key, value))


def test_training_skips_a_face_with_a_huge_mask_polygon(tmp_path: Path, real_meta: dict[str, Any]) -> None:
    paths = make_faces(tmp_path / "A", "A", 3, size=64)
    image, meta = read_face(paths[1])
    meta.masks["hull"][3] = [1e308, 5.0]
    write_face(paths[1], image, meta)  # writing does not check: a hand-edited or downloaded file could hold it
    with pytest.raises(FaceFileError, match="mask hull lies outside") as err:
        read_meta(paths[1])
    assert str(paths[1]) in str(err.value) and "\n" not in str(err.value)
    faces = load_faces(tmp_path / "A", 32, progress=False)
    assert len(faces) == 2 and faces.skipped == 1 and paths[1].name not in faces.names


def test_a_fifo_named_like_a_face_is_refused_without_blocking(tmp_path: Path) -> None:
    make_faces(tmp_path / "A", "A", 2, size=32)
    fifo = tmp_path / "A" / "z_fifo.png"
    os.mkfifo(fifo)
    err = outcome(lambda: read_face(fifo))
    assert isinstance(err, FaceFileError) and "not a regular file (a FIFO)" in str(err)
    assert len(load_faces(tmp_path / "A", 32, progress=False)) == 2  # training skips it
