"""Group a faces folder by identity, so the user can keep the right person's faces and drop the rest.

Clustering is average-linkage agglomeration on embedding distances, cut at the same-person distance: two groups
merge while the mean distance between their faces stays under the threshold. Average linkage does not chain
two people together through one ambiguous face, as single linkage (or a plain distance graph) can. Large sets
are first folded into tight groups of near-duplicates (video frames are highly redundant), whose mean
embeddings are then agglomerated, so memory stays far below N^2.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from changeling.errors import UserError
from changeling.faces.facefile import list_faces
from changeling.identity.embed import EMBED_DIM, SAME_PERSON_DISTANCE, FaceEmbedder

log = logging.getLogger(__name__)

CLUSTER_PREFIX = "cluster_"
_CLUSTER_RE = re.compile(rf"^{CLUSTER_PREFIX}(\d+)$")
MAX_DIRECT = 2000  # faces agglomerated directly; above this, near-duplicates are folded first


def _average_linkage(emb: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    if len(emb) == 1:
        return np.zeros(1, np.int64)
    tree = linkage(pdist(emb), method="average")
    return np.asarray(fcluster(tree, t=threshold, criterion="distance"), np.int64) - 1


def _fold_near_duplicates(emb: NDArray[np.float64], radius: float) -> NDArray[np.int64]:
    """Assign each embedding to the first earlier 'leader' within ``radius`` (else it leads a new group)."""
    leaders = np.zeros_like(emb)
    count = 0
    group = np.zeros(len(emb), np.int64)
    for i, e in enumerate(emb):
        if count:
            d = np.linalg.norm(leaders[:count] - e, axis=1)
            j = int(np.argmin(d))
            if d[j] <= radius:
                group[i] = j
                continue
        leaders[count] = e
        group[i] = count
        count += 1
    return group


def _by_size(labels: NDArray[np.int64]) -> NDArray[np.int64]:
    """Relabel so that 0 is the largest cluster; ties keep the order of first appearance."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(uniq)), key=lambda k: (-counts[k], first[k]))
    remap = np.empty(int(uniq.max()) + 1, np.int64)
    remap[uniq[order]] = np.arange(len(uniq))
    return remap[labels]


def cluster_embeddings(embeddings: NDArray[Any], threshold: float = SAME_PERSON_DISTANCE, *,
                       max_direct: int = MAX_DIRECT) -> NDArray[np.int64]:
    """(N,) cluster label per embedding of (N, 128); label 0 is the largest cluster, then by size."""
    emb = np.asarray(embeddings, np.float64).reshape(-1, EMBED_DIM)
    if not threshold > 0:
        raise ValueError(f"threshold must be a positive distance, got {threshold}")
    if len(emb) == 0:
        return np.zeros(0, np.int64)
    if len(emb) <= max_direct:
        return _by_size(_average_linkage(emb, threshold))
    group = _fold_near_duplicates(emb, threshold / 2)
    n_groups = int(group.max()) + 1
    centres = np.zeros((n_groups, EMBED_DIM))
    np.add.at(centres, group, emb)
    centres /= np.bincount(group, minlength=n_groups)[:, None]
    log.info("clustering %d faces folded into %d groups of near-duplicates", len(emb), n_groups)
    return _by_size(_average_linkage(centres, threshold)[group])


def cluster_faces(face_paths: Sequence[Path], *, threshold: float = SAME_PERSON_DISTANCE,
                  embedder: FaceEmbedder | None = None, progress: bool = True) -> list[list[Path]]:
    """Group aligned face PNGs by identity: a list of groups, largest first, each in the given order."""
    paths = [Path(p) for p in face_paths]
    if not paths:
        return []
    embedder = embedder if embedder is not None else FaceEmbedder()
    labels = cluster_embeddings(embedder.embed_face_files(paths, progress=progress), threshold)
    groups: list[list[Path]] = [[] for _ in range(int(labels.max()) + 1)]
    for path, label in zip(paths, labels, strict=True):
        groups[label].append(path)
    return groups


def cluster_folders(faces_dir: Path) -> list[Path]:
    """The ``cluster_NN`` subfolders of a faces folder, in number order."""
    faces_dir = Path(faces_dir)
    found = [(int(m.group(1)), p) for p in faces_dir.iterdir() if p.is_dir() and (m := _CLUSTER_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def move_into_clusters(faces_dir: Path, *, threshold: float = SAME_PERSON_DISTANCE,
                       embedder: FaceEmbedder | None = None, progress: bool = True) -> list[Path]:
    """Move the faces of ``faces_dir`` into subfolders ``cluster_00``, ``cluster_01``, ... (largest first).

    Every face is embedded before anything moves, so a bad file stops the command with the folder untouched.
    Each move is a rename within the folder: a face is always whole, either where it was or in its cluster
    (an interrupted run can simply be run again on the faces still left at the top). Numbering continues
    after existing cluster folders, which are never written into. Returns the new folders.
    """
    faces_dir = Path(faces_dir)
    if not faces_dir.is_dir():
        raise UserError("no such faces folder", faces_dir)
    faces = list_faces(faces_dir)
    if not faces:
        raise UserError("no face PNGs at the top of this folder to cluster", faces_dir)
    groups = cluster_faces(faces, threshold=threshold, embedder=embedder, progress=progress)
    existing = cluster_folders(faces_dir)
    start = int(_CLUSTER_RE.match(existing[-1].name).group(1)) + 1 if existing else 0  # type: ignore[union-attr]
    width = max(2, len(str(start + len(groups) - 1)))
    folders = []
    for k, group in enumerate(groups):
        folder = faces_dir / f"{CLUSTER_PREFIX}{start + k:0{width}d}"
        folder.mkdir()
        for path in group:
            os.rename(path, folder / path.name)
        folders.append(folder)
    log.info("%s: %d faces in %d clusters", faces_dir, len(faces), len(groups))
    return folders


def gather_clusters(faces_dir: Path, names: Sequence[str] | None = None) -> list[Path]:
    """Move the faces of the named cluster folders (all of them by default) back to the top of ``faces_dir``
    and remove the emptied folders. Checks every name first: nothing moves if one would overwrite a face."""
    faces_dir = Path(faces_dir)
    folders = cluster_folders(faces_dir) if names is None else [faces_dir / n for n in names]
    for folder in folders:
        if not _CLUSTER_RE.match(folder.name) or not folder.is_dir():
            raise UserError("not a cluster folder", folder)
    moves = [(p, faces_dir / p.name) for folder in folders for p in list_faces(folder)]
    targets = [t for _, t in moves]
    clash = [t for t in targets if t.exists()] or [t for t, n in Counter(targets).items() if n > 1]
    if clash:
        raise UserError("a face of this name is already at the top of the folder (or in two clusters); "
                        "rename one and run again", clash[0])
    for src, dst in moves:
        os.rename(src, dst)
    for folder in folders:
        if not any(folder.iterdir()):
            folder.rmdir()
    return targets
