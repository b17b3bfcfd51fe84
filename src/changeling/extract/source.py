"""Extraction of one source (a video, an image, or a folder of images): decode -> detect/track -> align -> masks
-> blur measure -> face PNGs -> alignments store.

Three stages overlap: a thread decodes frames ahead; the main thread runs the networks on a batch; a small pool
of threads crops, masks and writes the faces of the previous batch (OpenCV and zlib release the GIL). A batch is
committed to the store only once its face files are on disk, so a committed frame always has its files, and a
run killed at any moment resumes at the first frame not committed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from changeling.config import ExtractSettings
from changeling.detect.align import face_affine, warp_face
from changeling.errors import UserError
from changeling.extract.decoding import Decoding, ReadStopped, read_frames, timed
from changeling.extract.preview import Sample, make_sample, pick_samples
from changeling.extract.report import SourceReport
from changeling.extract.tracking import FaceFilter, TrackedFaceLike, Tracker, TrackerFactory
from changeling.faces.facefile import FaceFileError, read_face
from changeling.faces.output import write_extracted_face
from changeling.faces.store import (
    AlignmentStore,
    FaceRecord,
    FrameRecord,
    alignments_path,
    content_hash,
    source_key,
)
from changeling.fileio import fsync_dir
from changeling.locks import ProcessLock, already_running
from changeling.progress import bar
from changeling.project import Project
from changeling.stages import Channel, Stages
from changeling.types import Frame
from changeling.video import FrameSource, TimedFrame
from changeling.video.counted import CountedFrame, FramesEnd

log = logging.getLogger(__name__)

QUEUE_FRAMES = 2  # decoded batches waiting for the networks
MEMORY_BUDGET = 512 << 20  # bytes of decoded frames held by the decode queue, and by one batch
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def source_stem(path: Path) -> str:
    p = Path(path)
    return _SAFE.sub("_", p.stem if p.suffix and not p.is_dir() else p.name).strip("._") or "input"


def face_file_name(stem: str, frame: int, face: int) -> str:
    return f"{stem}_{frame:06d}_{face}.png"


def blur_measure(face: Frame) -> float:
    """Variance of the Laplacian of the grey face (higher is sharper)."""
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@dataclass
class _Pending:
    """A processed batch whose faces are being written; committed to the store once they are on disk."""

    frames: list[FrameRecord]
    corrupt: dict[int, int]
    jobs: list[Future[FaceRecord]] = field(default_factory=list)


class SourceRun:
    """Extraction of one source (a video, an image, or a folder of images)."""

    def __init__(self, path: Path, source: FrameSource, *, project: Project, side: str,
                 settings: ExtractSettings, make_tracker: TrackerFactory, progress: bool,
                 workers: ThreadPoolExecutor, want_samples: int, face_filter: FaceFilter | None = None,
                 processes: ProcessPoolExecutor | None = None) -> None:
        self.path, self.source, self.settings = path, source, settings
        self.face_filter = face_filter
        self.side, self.make_tracker, self.progress, self.workers = side, make_tracker, progress, workers
        self.processes = processes
        self.faces_dir = project.faces_dir(side)
        self.db_path = alignments_path(project.alignments_dir, path, side)
        self.stem = source_stem(path)
        self.report = SourceReport(source=str(path), alignments=str(self.db_path))
        self.hash = content_hash(path)
        self.store: AlignmentStore | None = None
        self.done: set[int] = set()
        self.want_samples = want_samples
        self.samples: list[Sample] = []
        self.sample_at: set[int] = set()
        self.independent = source.kind == "images"  # unrelated images: no tracking from one to the next
        self._time_lock = threading.Lock()

    def _settings_record(self) -> dict[str, Any]:
        s = self.settings
        return {"face_type": s.face_type, "size": s.size, "every_nth": s.every_nth, "min_face": s.min_face,
                "max_faces": s.max_faces, "detector": s.detector, "min_score": s.min_score,
                "blur_threshold": s.blur_threshold}

    def _open_store(self, create: bool) -> AlignmentStore | None:
        if self.store is None and (create or self.db_path.exists()):
            self.store = AlignmentStore.open(self.db_path, self.path, side=self.side, frame_count=self.source.frame_count or None,
                                             settings=self._settings_record(), source_hash=self.hash)
        return self.store

    def run(self) -> SourceReport:
        """Extract the source, holding its lock (one extraction of a source and side at a time)."""
        busy = already_running(f"another extraction of {self.path} (side {self.side})")
        with ProcessLock(self.db_path.parent / f".{self.db_path.name}.lock", busy, self.path, remove=True):
            return self._run()

    def _run(self) -> SourceReport:
        store = self._open_store(create=False)
        if store is not None:
            if store.complete:
                self.report.already_complete = True
                self.report.resumed_frames = len(store.done_frames())
                log.info("%s: already extracted (%s); delete it to extract again", self.path, self.db_path)
                self.sample_at = set()  # no decoding for a finished source
                store.close()
                self.store = None
                return self.report
            self._redo_damaged_faces(store)
            self.done = store.done_frames()
            if self.done:
                log.info("%s: resuming at frame %d (%d frames already done)", self.path, min(
                    set(range(max(self.done) + 2)) - self.done), len(self.done))
        self.sample_at = pick_samples(self.want_samples, self.settings.every_nth, self.source.frame_count)
        self.faces_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        frame_bytes = max(1, self.source.width * self.source.height * 3)
        ahead = max(2, min(QUEUE_FRAMES * self.settings.batch_size, MEMORY_BUDGET // frame_bytes))
        maxsize = 2 if self.independent else ahead  # images differ in size
        decoding = Decoding(self.source, slots=maxsize + 2)
        stages = Stages(join_timeout=5)
        decoded: Channel[CountedFrame | FramesEnd] = stages.channel(maxsize)
        stages.produce("decode", decoding.frames(), decoded)  # decoding starts while the networks load
        batch: list[TimedFrame] = []
        skipped: list[FrameRecord] = []
        corrupt: dict[int, int] = {}
        pending: _Pending | None = None
        batch_bytes = 0
        total = self.source.frame_count or None
        try:
            tracker = None if self.independent else self.make_tracker()
            with bar(total=total, desc=source_key(self.path), unit="frame", enabled=self.progress) as pbar:
                for item in timed(read_frames(stages, decoded), lambda dt: self.report.add_time("decode_wait", dt)):
                    if isinstance(item, (FramesEnd, ReadStopped)):  # the end, or damage: keep what came before
                        self._last_batch(tracker, batch, skipped, corrupt, pending)
                        pending = None
                        if isinstance(item, ReadStopped):
                            if not self.report.frames_read:
                                raise item.error
                            raise UserError(f"{item.error}; the faces of the frames before it are kept") from None
                        self.report.corrupt_frames += item.corrupt_after
                        self._finish(item)
                        break
                    tf = item.frame
                    self.report.frames_read += 1
                    pbar.update(1)
                    if item.corrupt_before:
                        self.report.corrupt_frames += item.corrupt_before
                        corrupt[tf.index] = item.corrupt_before
                    if tf.index in self.sample_at:
                        self.samples.append(make_sample(tf, f"{source_key(self.path)} #{tf.index}"))
                    if tf.index in self.done:
                        self.report.resumed_frames += 1
                        continue
                    if tf.index % self.settings.every_nth:
                        skipped.append(FrameRecord(tf.index, tf.time, "skipped"))
                        self.report.skipped_frames += 1
                    else:
                        batch.append(tf)
                        batch_bytes += tf.image.nbytes
                    if (len(batch) >= self.settings.batch_size or batch_bytes >= MEMORY_BUDGET
                            or len(skipped) >= 4 * self.settings.batch_size):
                        # the networks run on this batch while the workers finish the previous one
                        last = self._process(tracker, batch, skipped, corrupt)
                        self._commit(pending)
                        pending = last
                        batch, skipped, corrupt, batch_bytes = [], [], {}, 0
        finally:
            if pending is not None:  # stopped by an error: keep what is complete
                for job in pending.jobs:
                    job.cancel()
            stages.close()
            decoding.close()  # in case the decode thread is stuck in the child
            self.report.add_time("decode", decoding.decode_s)
            self.report.decoder = "process" if decoding.in_child else "thread"
            if self.store is not None:
                self.store.close()
                self.store = None
        return self.report

    def _remove_stale_temporaries(self) -> None:
        """A run killed while writing a face leaves its temporary file (``.NAME.png.XXXX.part``); its frame was
        not committed and is done again, so the temporary is garbage. (Only this source's: the name is matched
        whole, so source ``a`` does not take the temporaries of source ``a_1``, which may be running.)"""
        own = re.compile(rf"^\.{re.escape(self.stem)}_\d{{6,}}_\d+\.png\..+\.part$")
        for p in self.faces_dir.iterdir():
            if own.match(p.name):
                p.unlink(missing_ok=True)

    def _redo_damaged_faces(self, store: AlignmentStore) -> None:
        """Before resuming, check that the face files of committed frames decode; a frame whose file is damaged
        (empty or cut off by a power cut before durable writes, say) is forgotten, its files removed, and done
        again. A missing file is the user's pruning and is left alone."""
        files = [(f.frame, self.faces_dir / f.file) for f in store.all_faces() if f.file is not None]
        present = [(frame, path) for frame, path in files if path.exists()]
        damaged = sorted({frame for (frame, _), ok in zip(present, self.workers.map(_decodes, [p for _, p in present]),
                                                          strict=True) if not ok})
        if not damaged:
            return
        log.warning("%s: %d committed frames have damaged face files (a crash before they reached the disk?); "
                    "doing them again", self.path, len(damaged))
        for frame in damaged:
            for face in store.faces_for_frame(frame, include_deleted=True):
                if face.file is not None:
                    (self.faces_dir / face.file).unlink(missing_ok=True)
        store.forget_frames(damaged)

    def _process(self, tracker: Tracker | None, batch: list[TimedFrame], skipped: list[FrameRecord],
                 corrupt: dict[int, int]) -> _Pending:
        """Run the networks on a batch and hand each face's crop, masks and file to the worker threads."""
        t0 = time.perf_counter()
        if batch:
            if tracker is None:  # independent images: a fresh tracker for each, so nothing carries over
                found: list[Sequence[TrackedFaceLike]] = []
                for tf in batch:
                    found.extend(self.make_tracker().process([tf.image]))
            else:
                found = list(tracker.process([tf.image for tf in batch]))
            if len(found) != len(batch):
                raise RuntimeError(f"tracker returned {len(found)} results for {len(batch)} frames")
        else:
            found = []
        self.report.add_time("networks", time.perf_counter() - t0)
        pending = _Pending(frames=list(skipped), corrupt=dict(corrupt))
        for tf, faces in zip(batch, found, strict=True):
            kept = self._select(tf.image, faces)
            for k, face in enumerate(kept):
                pending.jobs.append(self.workers.submit(self._face, tf, k, face))
            self.report.frames_processed += 1
            pending.frames.append(FrameRecord(tf.index, tf.time, "done" if kept else "no_face"))
            if not kept:
                self.report.frames_without_face += 1
        return pending

    def _last_batch(self, tracker: Tracker | None, batch: list[TimedFrame], skipped: list[FrameRecord],
                    corrupt: dict[int, int], pending: _Pending | None) -> None:
        """Process what is left and commit it after the batch still pending."""
        last = self._process(tracker, batch, skipped, corrupt) if batch or skipped or corrupt else None
        self._commit(pending)
        self._commit(last)

    def _commit(self, pending: _Pending | None) -> None:
        """Wait for a batch's faces to be on disk, then record the batch in one transaction."""
        if pending is None:
            return
        t0 = time.perf_counter()
        records = [job.result() for job in pending.jobs]
        t1 = time.perf_counter()
        self.report.add_time("faces_wait", t1 - t0)
        for rec in records:
            if rec.file is None:
                self.report.blurry_faces += 1
            else:
                self.report.faces_written += 1
        if any(rec.file is not None for rec in records):
            fsync_dir(self.faces_dir)  # the files' names are on the disk before the store says they exist
        store = self._open_store(create=True)
        assert store is not None
        store.record(sorted(pending.frames, key=lambda f: f.index), records, pending.corrupt)
        self.report.add_time("store", time.perf_counter() - t1)

    def _select(self, frame: Frame, faces: Sequence[TrackedFaceLike]) -> list[TrackedFaceLike]:
        big = []
        for f in faces:
            box = np.asarray(f.box, dtype=np.float64)
            if max(box[2] - box[0], box[3] - box[1]) >= self.settings.min_face:
                big.append(f)
            else:
                self.report.small_faces += 1
        if self.face_filter is not None and big:
            keep = self.face_filter.matches_all(frame, [f.box for f in big], [f.landmarks for f in big])
            self.report.other_people += sum(1 for k in keep if not k)
            big = [f for f, k in zip(big, keep, strict=True) if k]
        big.sort(key=lambda f: -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
        return big[: self.settings.max_faces]

    def _face(self, tf: TimedFrame, k: int, face: TrackedFaceLike) -> FaceRecord:
        """Align, crop, measure, mask and write one face (runs in a worker thread)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return self._face_work(tf, k, face)
        finally:
            with self._time_lock:  # wall time, and this thread's CPU time (wall well above CPU: waiting)
                self.report.add_time("faces", time.perf_counter() - t0)
                self.report.add_time("faces_cpu", time.thread_time() - c0)

    def _face_work(self, tf: TimedFrame, k: int, face: TrackedFaceLike) -> FaceRecord:
        s = self.settings
        lm = np.asarray(face.landmarks, dtype=np.float32)
        affine = face_affine(lm, s.face_type, s.size)
        crop = warp_face(tf.image, affine, s.size)
        blur = blur_measure(crop)
        box = np.asarray(face.box, dtype=np.float32)
        if blur < s.blur_threshold:
            return FaceRecord(tf.index, k, box, lm, float(face.score), blur, None)
        name = face_file_name(self.stem, tf.index, k)
        fields = {"source": str(self.path), "frame_index": tf.index, "face_index": k, "face_type": s.face_type,
                  "box": [round(float(v), 2) for v in box], "score": float(face.score), "time": float(tf.time),
                  "blur": round(blur, 3), "side": self.side, "source_hash": self.hash}
        args = (self.faces_dir / name, crop, lm, affine, fields, False)  # the folder is flushed once per batch
        if self.processes is None:
            write_extracted_face(*args)
        else:  # masks, metadata and PNG in another process: this thread waits without holding the GIL
            self.processes.submit(write_extracted_face, *args).result()
        return FaceRecord(tf.index, k, box, lm, float(face.score), blur, name)

    def _finish(self, end: FramesEnd) -> None:
        store = self._open_store(create=True)
        assert store is not None
        if end.corrupt_after:
            store.record([], [], {end.count: end.corrupt_after})
        store.finish(end.count)
        counts = store.status_counts()
        if store.no_faces_found:
            log.warning("%s: no faces found in %d frames", self.path, end.count)
        log.debug("%s: %s", self.db_path, counts)


def _decodes(path: Path) -> bool:
    """Whether a face file reads whole (metadata and pixels)."""
    try:
        read_face(path)
    except FaceFileError:
        return False
    return True

