"""Who does the swap look like? The identity part of the paired benchmark.

A swap from A to B should carry B's identity: its faces should lie near B's faces in embedding space and far
from A's. Distances are means over all (output face, reference face) pairs, on the same scale as the
same-person threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from changeling.identity.embed import (
    EMBED_DIM,
    SAME_PERSON_DISTANCE,
    Embeddings,
    FaceAt,
    FaceEmbedder,
    distances,
)

FaceInput = Path | str | FaceAt  # a face PNG with metadata, or (frame, box[, landmarks]) of a face in a frame
CHUNK = 1024  # output faces per block of the distance matrix


def embed_inputs(items: Sequence[FaceInput], embedder: FaceEmbedder, *, progress: bool = False) -> Embeddings:
    """Embeddings (N, 128) in input order: face files as stored, faces in frames by box or landmarks."""
    out = np.zeros((len(items), EMBED_DIM), np.float32)
    file_idx: list[int] = []
    files: list[Path] = []
    face_idx: list[int] = []
    faces: list[FaceAt] = []
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            file_idx.append(i)
            files.append(Path(item))
        else:
            face_idx.append(i)
            faces.append(item)
    if files:
        out[file_idx] = embedder.embed_face_files(files, progress=progress)
    if faces:
        out[face_idx] = embedder.embed_many(faces)
    return out


def _mean_distance_rows(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    """(N,) mean distance of each row of a to all rows of b, in blocks to bound memory."""
    out = np.zeros(len(a))
    for start in range(0, len(a), CHUNK):
        out[start:start + CHUNK] = distances(a[start:start + CHUNK], b).mean(axis=1)
    return out


def identity_distances(output: NDArray[Any], faces_a: NDArray[Any], faces_b: NDArray[Any],
                       threshold: float = SAME_PERSON_DISTANCE) -> dict[str, Any]:
    """Identity score from embeddings (N, 128), (MA, 128), (MB, 128).

    Returns ``to_A`` and ``to_B`` (mean distance of output faces to A's and to B's faces; a good A-to-B swap
    has ``to_B`` low and ``to_A`` high), ``A_to_B`` (how far apart the two people are, for scale),
    ``closer_to_B`` (fraction of output faces nearer to B than to A), ``matches_B`` (fraction whose mean
    distance to B is within ``threshold``), and the counts.
    """
    out = np.asarray(output, np.float32).reshape(-1, EMBED_DIM)
    a = np.asarray(faces_a, np.float32).reshape(-1, EMBED_DIM)
    b = np.asarray(faces_b, np.float32).reshape(-1, EMBED_DIM)
    if len(out) == 0 or len(a) == 0 or len(b) == 0:
        raise ValueError(f"identity score needs faces in every set, got {len(out)} output, {len(a)} A, "
                         f"{len(b)} B")
    d_a = _mean_distance_rows(out, a)
    d_b = _mean_distance_rows(out, b)
    return {
        "to_A": float(d_a.mean()),
        "to_B": float(d_b.mean()),
        "A_to_B": float(_mean_distance_rows(a, b).mean()),
        "closer_to_B": float((d_b < d_a).mean()),
        "matches_B": float((d_b <= threshold).mean()),
        "threshold": float(threshold),
        "n_output": len(out),
        "n_A": len(a),
        "n_B": len(b),
    }


def identity_score(output_faces: Sequence[FaceInput], faces_a: Sequence[FaceInput],
                   faces_b: Sequence[FaceInput], *, threshold: float = SAME_PERSON_DISTANCE,
                   embedder: FaceEmbedder | None = None, progress: bool = False) -> dict[str, Any]:
    """Identity score of swapped faces against A's and B's faces (see :func:`identity_distances`).

    Each face is a face PNG path or a (frame, box) or (frame, box, landmarks) tuple, e.g. an output frame with
    the box and landmarks of the face that was swapped there.
    """
    embedder = embedder if embedder is not None else FaceEmbedder()
    return identity_distances(embed_inputs(output_faces, embedder, progress=progress),
                              embed_inputs(faces_a, embedder, progress=progress),
                              embed_inputs(faces_b, embedder, progress=progress), threshold)
