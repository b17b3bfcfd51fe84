"""The parts that feed the converter: faces from a stored alignments file or from tracking on the fly, and the
trained model wrapped as a :class:`~changeling.convert.pipeline.Swapper`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from changeling.convert.pipeline import DetectedFace
from changeling.errors import UserError
from changeling.extract.tracking import Tracker, TrackerFactory
from changeling.faces.store import AlignmentStore, content_hash
from changeling.types import FaceType, Side
from changeling.video.reader import FrameSource, TimedFrame

log = logging.getLogger(__name__)


class StoreFaceSource:
    """Faces from the alignments file that ``changeling extract`` wrote for this very video.

    :meth:`open` refuses a file made for another video (content hash or frame count differ), one whose
    extraction did not finish, and one that skipped frames (``every_nth`` > 1), since those frames would pass
    through unswapped.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = Path(db_path)
        self._store: AlignmentStore | None = None
        self._known: set[int] = set()

    def open(self, source: FrameSource) -> None:
        store = AlignmentStore.open_existing(self.path)
        try:
            digest = content_hash(source.path)
            if store.source_hash != digest:
                raise UserError(f"these alignments were made for another video ({store.source_path}); "
                                f"extract {source.path} first, or convert with --track to find faces on the fly",
                                self.path)
            if not store.complete:
                raise UserError("extraction of this video did not finish; run extract again to complete it",
                                self.path)
            counts = store.status_counts()
            if counts.get("skipped", 0):
                raise UserError(f"{counts['skipped']} frames were skipped at extraction (every_nth > 1), so they "
                                "have no faces; extract with every_nth = 1, or convert with --track", self.path)
            n = store.frame_count
            if n is not None and source.frame_count and source.kind == "video" and n != source.frame_count:
                raise UserError(f"these alignments hold {n} frames but {source.path} has {source.frame_count}",
                                self.path)
            self._known = store.done_frames()
        except BaseException:
            store.close()
            raise
        if self._store is not None:
            self._store.close()
        self._store = store

    def faces(self, frames: Sequence[TimedFrame]) -> list[list[DetectedFace]]:
        if self._store is None:
            raise RuntimeError("open() the face source first")
        out = []
        for tf in frames:
            if tf.index not in self._known:
                raise UserError(f"frame {tf.index} is not in the alignments (they hold {len(self._known)} "
                                "frames): made for another video?", self.path)
            out.append([DetectedFace(r.landmarks, r.box, None, r.score)
                         for r in self._store.faces_for_frame(tf.index)])
        return out

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def find_alignments(folder: Path, source: Path) -> Path | None:
    """The alignments file in ``folder`` made for ``source`` (same content hash), or ``None``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = content_hash(source)
    for db in sorted(folder.glob("*.sqlite")):
        try:
            with AlignmentStore.open_existing(db) as store:
                if store.source_hash == digest:
                    return db
        except UserError as exc:
            log.debug("skipping %s: %s", db, exc)
    return None


class TrackerFaceSource:
    """Faces found on the fly by the landmark tracker (detection only where the face is lost).

    ``make_tracker`` gives a fresh tracker (no memory of earlier frames) for each video, e.g.
    :func:`changeling.extract.tracking.default_tracker_factory`.
    """

    def __init__(self, make_tracker: TrackerFactory) -> None:
        self._make = make_tracker
        self._tracker: Tracker | None = None

    def open(self, source: FrameSource) -> None:
        self._tracker = self._make()

    def faces(self, frames: Sequence[TimedFrame]) -> list[list[DetectedFace]]:
        if self._tracker is None:
            raise RuntimeError("open() the face source first")
        found = self._tracker.process([tf.image for tf in frames])
        # the port's TrackedFace carries a track id; other trackers may not (then faces are matched by box)
        return [[DetectedFace(np.asarray(t.landmarks, np.float32), np.asarray(t.box, np.float32),
                              getattr(t, "track_id", None), float(t.score)) for t in faces] for faces in found]


def load_model(model_dir: Path, device: torch.device) -> tuple[Any, Any]:
    """The trained model in ``model_dir`` for inference, and its info (``resolution``, ``face_type``,
    ``preset``, ``step``). Raises :class:`UserError` when there is none."""
    from changeling.models.checkpoint import refuse_pickle
    from changeling.models.load import load_for_inference

    model_dir = Path(model_dir)
    refuse_pickle(model_dir)  # a .pth/.ckpt given as --model: say why it is refused
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise UserError("no trained model here; train one first with `changeling train`", model_dir)

    return load_for_inference(model_dir, device)  # type: ignore[no-any-return]


class ModelSwapper:
    """A trained pair model as the converter's :class:`~changeling.convert.pipeline.Swapper`.

    ``model.swap(faces (N, 3, R, R) float [0, 1], to=side)`` must return an object with ``face`` (N, 3, R, R)
    and ``mask`` (N, 1, R, R) in [0, 1]. On CUDA the forward pass runs under bf16 autocast, on a stream of its
    own: convert calls it from its model thread while the main thread may run the detector on the default
    stream, and neither's synchronising download should wait for the other's kernels.
    """

    def __init__(self, model: Any, *, resolution: int, face_type: FaceType, to: Side,
                 device: torch.device | str = "cpu", output_resolution: int = 0) -> None:
        self.model = model
        self.resolution = int(resolution)
        # a model behind a detail stage says how large its faces come out; every caller gets that by default
        self.output_resolution = int(output_resolution or getattr(model, "output_resolution", 0) or resolution)
        self.face_type = face_type
        self.to: Side = to
        self.device = torch.device(device)
        self._stream: torch.cuda.Stream | None = None

    def _own_stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
            self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the weights' upload, once
        return self._stream

    def __call__(self, crops: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        r = self.resolution
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (r, r, 3):
            raise ValueError(f"expected (N, {r}, {r}, 3) uint8 crops, got {crops.shape} {crops.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(crops))
        if self.device.type != "cuda":
            return self._run(x)
        with torch.cuda.stream(self._own_stream()):
            return self._run(x.pin_memory().to(self.device, non_blocking=True))

    def _run(self, x: torch.Tensor) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, R, R)
        with torch.inference_mode():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                out = self.model.swap(x, to=self.to)
            # .cpu() waits for this stream's work (the current one) before it copies
            face = out.face.float().clamp(0, 1).permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (N, R, R, 3)
            mask = out.mask.float().clamp(0, 1)[:, 0].contiguous().cpu().numpy()  # (N, R, R)
        return face.astype(np.float32, copy=False), mask.astype(np.float32, copy=False)
