"""Training data: the faces of one side decoded once into uint8 tensors, with their masks, and an epoch
sampler whose position is part of the checkpoint (so a resumed run draws the same next batch)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from changeling.errors import UserError
from changeling.faces.facefile import FaceFileError, FaceMeta, list_faces, read_face
from changeling.masks.raster import polygon_mask
from changeling.progress import bar

log = logging.getLogger(__name__)

MASK_CHANNELS = ("face", "eyes", "mouth")  # the three mask planes stored with every face


@dataclass
class FaceSet:
    """The faces of one side at the model's resolution.

    images: (N, 3, R, R) uint8 RGB; masks: (N, 3, R, R) uint8 [face mask, eyes, mouth], 255 inside.
    """

    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    face_type: str
    skipped: int = 0  # corrupt files that were skipped
    stored_size: int = 0  # side of the face files on disk (0: unknown)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    @property
    def nbytes(self) -> int:
        return self.images.numel() + self.masks.numel()

    def to(self, device: torch.device) -> FaceSet:
        return FaceSet(self.images.to(device), self.masks.to(device), self.names, self.face_type, self.skipped,
                       self.stored_size)

    def gather(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Faces and masks at ``index`` (K,), moved to ``device``: two (K, 3, R, R) uint8 tensors."""
        if self.images.device.type == "cuda":  # pinned and asynchronous: a plain copy would wait for the GPU
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        images, masks = self.images.index_select(0, index), self.masks.index_select(0, index)
        if images.device != device:
            pin = images.device.type == "cpu" and device.type == "cuda"
            images = (images.pin_memory() if pin else images).to(device, non_blocking=pin)
            masks = (masks.pin_memory() if pin else masks).to(device, non_blocking=pin)
        return images, masks


def face_planes(image: np.ndarray, meta: FaceMeta, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """One face file's content at ``resolution``: (3, R, R) uint8 RGB (area resize) and (3, R, R) uint8 masks.

    The face mask is the 'extended' polygon if present, else the 'hull'; a face with neither trains on the
    whole crop. Eyes are the union of both eye polygons.
    """
    size = image.shape[0]
    interp = cv2.INTER_AREA if resolution < size else cv2.INTER_CUBIC
    img = image if size == resolution else cv2.resize(image, (resolution, resolution), interpolation=interp)
    scale = resolution / size
    polys = meta.masks
    outline = polys.get("extended") or polys.get("hull")
    face = polygon_mask(resolution, [outline], scale) if outline else np.ones((resolution, resolution), np.float32)
    eyes = polygon_mask(resolution, [p for k in ("left_eye", "right_eye") if (p := polys.get(k))], scale)
    mouth = polygon_mask(resolution, [p for p in [polys.get("mouth")] if p], scale)
    masks = np.stack([face, eyes, mouth]) * 255 + 0.5
    return np.ascontiguousarray(img.transpose(2, 0, 1)), masks.astype(np.uint8)


def _load_one(path: Path, resolution: int) -> tuple[np.ndarray, np.ndarray, FaceMeta] | FaceFileError:
    try:
        image, meta = read_face(path)
    except FaceFileError as exc:
        return exc
    img, masks = face_planes(image, meta, resolution)
    return img, masks, meta


def load_faces(folder: Path, resolution: int, *, side: str = "", progress: bool = True,
               workers: int = 4, occlusion: bool = True) -> FaceSet:
    """Read every face PNG in ``folder`` into a :class:`FaceSet` at ``resolution``.

    With ``occlusion``, the mask planes are cut to the visible face: the project's occlusion segmenter and the
    faces' hand corrections say what covers each face, and the loss then ignores it (see
    :func:`changeling.occlusion.project.cut_covered`). Corrupt files are skipped and counted. Raises
    :class:`UserError` when fewer than 2 faces remain, or when the faces differ in face type or size (naming the
    first file that differs).
    """
    folder = Path(folder)
    paths = list_faces(folder)
    label = f"faces of {side}" if side else "faces"
    if len(paths) < 2:
        raise UserError(f"needs at least 2 {label}, found {len(paths)}; extract more faces first", folder)
    images = np.empty((len(paths), 3, resolution, resolution), np.uint8)
    masks = np.empty_like(images)
    names: list[str] = []
    metas: list[FaceMeta] = []
    first: tuple[Path, FaceMeta] | None = None
    skipped: list[Path] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            bar(total=len(paths), desc=f"loading {label}", unit="face", enabled=progress) as pbar:
        for path, result in zip(paths, pool.map(lambda p: _load_one(p, resolution), paths), strict=True):
            pbar.update(1)
            if isinstance(result, FaceFileError):
                skipped.append(path)
                if len(skipped) <= 5:
                    log.warning("skipping %s", result)
                continue
            img, msk, meta = result
            if first is None:
                first = (path, meta)
            elif (meta.face_type, meta.size) != (first[1].face_type, first[1].size):
                raise UserError(
                    f"this face is {meta.face_type!r} at {meta.size} px but {first[0].name} is "
                    f"{first[1].face_type!r} at {first[1].size} px; all faces of a pair must share one face type "
                    "and size (move the odd ones out or extract again)", path)
            images[len(names)] = img
            masks[len(names)] = msk
            names.append(path.name)
            metas.append(meta)
    if skipped:
        log.warning("%s: skipped %d corrupt face file(s) of %d", folder, len(skipped), len(paths))
    if len(names) < 2 or first is None:
        raise UserError(f"needs at least 2 readable {label}, found {len(names)} ({len(skipped)} corrupt)", folder)
    n = len(names)
    if occlusion:
        from changeling.occlusion.project import cut_covered

        cut_covered(folder, images[:n], masks[:n], metas)
    return FaceSet(torch.from_numpy(images[:n].copy()), torch.from_numpy(masks[:n].copy()), names,
                   first[1].face_type, len(skipped), first[1].size)


def check_pair(a: FaceSet, b: FaceSet, folder_b: Path | None = None) -> str:
    """The face type shared by both sides; :class:`UserError` if A and B differ."""
    if a.face_type != b.face_type:
        raise UserError(f"faces of B are {b.face_type!r} but faces of A are {a.face_type!r}; both sides must be "
                        "extracted with one face type", folder_b)
    return a.face_type


class EpochSampler:
    """Indices in a fresh random order every epoch; the order of epoch ``e`` depends only on (seed, salt, e),
    so the position (epoch, offset) is the whole state."""

    def __init__(self, n: int, seed: int, salt: int) -> None:
        if n < 1:
            raise ValueError("cannot sample from an empty set")
        self.n, self.seed, self.salt = n, seed, salt
        self.epoch, self.offset = 0, 0
        self._order: torch.Tensor | None = None

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.salt * 7919 + self.epoch) % (2**63))
            self._order = torch.randperm(self.n, generator=g)
        return self._order

    def next(self, k: int) -> torch.Tensor:
        """The next ``k`` indices (K,) int64, crossing epoch boundaries as needed."""
        out = []
        while k > 0:
            order = self._epoch_order()
            take = min(k, self.n - self.offset)
            out.append(order[self.offset:self.offset + take])
            self.offset += take
            k -= take
            if self.offset == self.n:
                self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        return torch.cat(out)

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "epoch": self.epoch, "offset": self.offset}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a position; if the face count changed (faces added or deleted), start a fresh epoch."""
        if state.get("n") != self.n:
            log.info("the number of faces changed (%s -> %d); starting a fresh epoch", state.get("n"), self.n)
            self.epoch, self.offset = int(state.get("epoch", 0)) + 1, 0
        else:
            self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = None
