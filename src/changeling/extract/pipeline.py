"""Extraction: decode -> detect/track -> align -> masks -> blur measure -> face PNGs -> alignments store.

Three stages overlap: a thread decodes frames ahead; the main thread runs the networks on a batch; a small pool
of threads crops, masks and writes the faces of the previous batch (OpenCV and zlib release the GIL). A batch is
committed to the store only once its face files are on disk, so a committed frame always has its files, and a
run killed at any moment resumes at the first frame not committed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

from changeling.config import ExtractSettings
from changeling.detect.align import face_affine, warp_face
from changeling.errors import UserError
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
from changeling.threads import opencv_threads, torch_threads, worker_processes_allowed
from changeling.types import Frame
from changeling.video import FrameSource, TimedFrame, open_frames
from changeling.video.counted import CountedFrame, FramesEnd, counted_frames
from changeling.video.images import write_image_atomic
from changeling.video.process_reader import ProcessFrames, decode_process_wanted, start_process_frames
from changeling.video.writer import check_output_path

log = logging.getLogger(__name__)
T = TypeVar("T")

PREVIEW_SAMPLES = 4  # sample frames per source in the preview
PREVIEW_MAX_SAMPLES = 8  # in all
PREVIEW_SIDE = 480  # longest side of one preview tile
QUEUE_FRAMES = 2  # decoded batches waiting for the networks
MEMORY_BUDGET = 512 << 20  # bytes of decoded frames held by the decode queue, and by one batch
GPU_FRAMES_PER_LANE = 8  # on a GPU, a batch of B frames is tracked as B / 8 runs side by side
# threads that crop, mask and write faces (OpenCV and zlib release the GIL): 2 on a laptop, more where the
# cores are (on an H100 machine the 720p benchmark was limited by this CPU side; see bench/RESULTS.md)
FACE_WORKERS = max(2, min(12, 3 * (os.cpu_count() or 2) // 4))
# From this many cores, the masks, metadata and PNG of each face are made in worker processes (one per face
# thread): with a dozen threads the Python parts of that work queue on the GIL (measured on a 16-core H100
# machine: 59 ms of face work per frame summed over 12 threads, against 21 on 2 threads of a 2-core laptop).
FACE_PROCESSES_FROM_CORES = 8


class TrackedFaceLike(Protocol):
    """What extraction needs of a tracked face (``changeling.detect.TrackedFace`` provides it)."""

    landmarks: np.ndarray  # (468 or 478, 3) float32 frame pixels
    box: np.ndarray  # (4,) x0, y0, x1, y1 frame pixels
    score: float


class Tracker(Protocol):
    """Finds faces in consecutive frames, reusing what it found in earlier ones."""

    def process(self, frames: Sequence[Frame]) -> Sequence[Sequence[TrackedFaceLike]]: ...


TrackerFactory = Callable[[], Tracker]  # a fresh tracker (no memory of earlier frames)


class FaceFilter(Protocol):
    """Keeps the faces of one person (``changeling.identity.IdentityFilter`` provides it)."""

    def matches_all(self, frame: Frame, boxes: Sequence[Any], landmarks: Sequence[Any] | None = None
                    ) -> list[bool]: ...


@dataclass
class SourceReport:
    source: str
    alignments: str
    frames_read: int = 0  # decoded in this run
    frames_processed: int = 0  # went through the networks in this run
    faces_written: int = 0
    frames_without_face: int = 0
    corrupt_frames: int = 0  # undecodable frames (or unreadable images in a folder), skipped
    resumed_frames: int = 0  # already done by an earlier run, not processed again
    skipped_frames: int = 0  # not selected by every-Nth
    blurry_faces: int = 0  # found but below the blur threshold (kept in the alignments, no file)
    small_faces: int = 0  # smaller than min_face (dropped)
    other_people: int = 0  # rejected by the identity filter (--reference / --exclude)
    already_complete: bool = False
    decoder: str = ""  # "thread", or "process" where frames were decoded in a child process ("": not decoded)
    # seconds of work per stage: the decode thread decoding, or waiting for the decoder process ("decode");
    # the main thread waiting for decoded frames ("decode_wait"), running the networks ("networks"), waiting
    # for the face threads ("faces_wait") and writing the store ("store"); "faces" is the face threads'
    # crop/mask/PNG work summed over the threads (it overlaps the others), and "faces_cpu" those threads'
    # CPU time (with worker processes, the masks and PNG are not in it)
    stages: dict[str, float] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


@dataclass
class ExtractReport:
    sources: list[SourceReport] = field(default_factory=list)
    seconds: float = 0.0
    preview: str | None = None

    def _sum(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.sources)

    @property
    def frames_read(self) -> int:
        return self._sum("frames_read")

    @property
    def frames_processed(self) -> int:
        return self._sum("frames_processed")

    @property
    def faces_written(self) -> int:
        return self._sum("faces_written")

    @property
    def frames_without_face(self) -> int:
        return self._sum("frames_without_face")

    @property
    def corrupt_frames(self) -> int:
        return self._sum("corrupt_frames")

    @property
    def resumed_frames(self) -> int:
        return self._sum("resumed_frames")

    @property
    def blurry_faces(self) -> int:
        return self._sum("blurry_faces")

    @property
    def stages(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for src in self.sources:
            for k, v in src.stages.items():
                out[k] = out.get(k, 0.0) + v
        return out

    @property
    def frames_per_second(self) -> float:
        return self.frames_read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sources": [asdict(s) for s in self.sources], "seconds": self.seconds, "preview": self.preview}


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


def default_tracker_factory(settings: ExtractSettings) -> TrackerFactory:
    """Build the detector (``settings.detector`` from :data:`changeling.detect.registry.DETECTORS`) and the
    landmarker (a MediaPipe port) once; each call gives a fresh tracker over them.

    On a GPU each batch is split into several lanes tracked side by side, so the landmarker sees many faces at
    once (each extra lane starts with one detection); on the CPU tracking is plainly sequential."""
    from changeling.detect import FaceLandmarker, FaceTracker, make_detector
    from changeling.device import resolve_device

    device = resolve_device(settings.device)
    detector = make_detector(settings.detector, device=device, min_score=settings.min_score,
                             batch_size=max(settings.batch_size, 1))
    landmarker = FaceLandmarker(device=device, iris=settings.iris, batch_size=max(settings.batch_size, 1))
    lanes = 1 if device.type == "cpu" else max(1, settings.batch_size // GPU_FRAMES_PER_LANE)

    def make() -> Tracker:
        return FaceTracker(detector, landmarker, max_faces=settings.max_faces, lanes=lanes)

    return make


def _lazy(build: Callable[[], TrackerFactory]) -> TrackerFactory:
    """A factory that loads the networks on first use only (nothing to load when every source is done)."""
    built: list[TrackerFactory] = []

    def make() -> Tracker:
        if not built:
            built.append(build())
        return built[0]()

    return make


class _Decoder:
    """Runs :func:`counted_frames` in a thread, or (``CHANGELING_DECODE_PROCESS=1``) in a child process feeding
    that thread (see :mod:`changeling.video.process_reader`); iterate it in the consumer. Errors are re-raised
    there."""

    def __init__(self, source: FrameSource, maxsize: int) -> None:
        self._q: queue.Queue[CountedFrame | FramesEnd | BaseException] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._child: ProcessFrames | None = None
        self.decode_s = 0.0  # the decode thread's time getting frames (decoding, or waiting for the child)
        self._thread = threading.Thread(target=self._run, args=(source, maxsize), daemon=True, name="decode")
        self._thread.start()

    def _put(self, item: CountedFrame | FramesEnd | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: FrameSource, maxsize: int) -> None:
        try:
            if decode_process_wanted(source, many_cores=False):  # only when asked: slower here on 16 cores
                self._child = start_process_frames(source, counted_frames, slots=maxsize + 2)
            items = self._child if self._child is not None else counted_frames(source)
            for item in _timed(items, self._add_decode):
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
        finally:
            if self._child is not None:
                self._child.close()

    def _add_decode(self, seconds: float) -> None:
        self.decode_s += seconds

    @property
    def in_child(self) -> bool:
        """Whether a child process did the decoding."""
        return self._child is not None

    def __iter__(self) -> Iterator[CountedFrame | FramesEnd | _ReadStopped]:
        while True:
            item = self._q.get()
            if isinstance(item, UserError):  # the input is damaged there: what came before is still good
                yield _ReadStopped(item)
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, FramesEnd):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._child is not None:
            self._child.close()


@dataclass
class _ReadStopped:
    """Reading the source failed part of the way through (the decoder's :class:`UserError`)."""

    error: UserError


@dataclass
class _Pending:
    """A processed batch whose faces are being written; committed to the store once they are on disk."""

    frames: list[FrameRecord]
    corrupt: dict[int, int]
    jobs: list[Future[FaceRecord]] = field(default_factory=list)


@dataclass
class _Sample:
    index: int
    image: Frame  # downscaled
    scale: float  # tile pixels per frame pixel
    title: str


def _timed(items: Iterable[T], add: Callable[[float], None]) -> Iterator[T]:
    """The items of ``items``, passing the seconds spent getting each to ``add``."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        add(time.perf_counter() - t0)
        yield item


class _SourceRun:
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
        self.samples: list[_Sample] = []
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
                self._pick_samples(store.frame_count or 0)
                self.sample_at = set()  # no decoding for a finished source
                store.close()
                self.store = None
                return self.report
            self._redo_damaged_faces(store)
            self.done = store.done_frames()
            if self.done:
                log.info("%s: resuming at frame %d (%d frames already done)", self.path, min(
                    set(range(max(self.done) + 2)) - self.done), len(self.done))
        self._pick_samples(self.source.frame_count)
        self.faces_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        frame_bytes = max(1, self.source.width * self.source.height * 3)
        ahead = max(2, min(QUEUE_FRAMES * self.settings.batch_size, MEMORY_BUDGET // frame_bytes))
        decoder = _Decoder(self.source, maxsize=2 if self.independent else ahead)  # images differ in size
        tracker = None if self.independent else self.make_tracker()
        batch: list[TimedFrame] = []
        skipped: list[FrameRecord] = []
        corrupt: dict[int, int] = {}
        pending: _Pending | None = None
        batch_bytes = 0
        total = self.source.frame_count or None
        try:
            with bar(total=total, desc=source_key(self.path), unit="frame", enabled=self.progress) as pbar:
                for item in _timed(decoder, lambda dt: self.report.add_time("decode_wait", dt)):
                    if isinstance(item, (FramesEnd, _ReadStopped)):  # the end, or damage: keep what came before
                        self._last_batch(tracker, batch, skipped, corrupt, pending)
                        pending = None
                        if isinstance(item, _ReadStopped):
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
                        self._keep_sample(tf)
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
            decoder.close()
            self.report.add_time("decode", decoder.decode_s)
            self.report.decoder = "process" if decoder.in_child else "thread"
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

    # --- preview -----------------------------------------------------------------------------------
    def _pick_samples(self, frame_count: int) -> None:
        n = self.want_samples
        if n <= 0:
            return
        nth = self.settings.every_nth
        if frame_count > 0:
            selected = np.arange(0, frame_count, nth)
            picks = selected[np.linspace(0, len(selected) - 1, min(n, len(selected))).round().astype(int)]
            self.sample_at = {int(i) for i in picks}
        else:
            self.sample_at = {i * nth for i in range(n)}

    def _keep_sample(self, tf: TimedFrame) -> None:
        h, w = tf.image.shape[:2]
        scale = min(1.0, PREVIEW_SIDE / max(h, w))
        small = np.asarray(cv2.resize(tf.image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                      interpolation=cv2.INTER_AREA), dtype=np.uint8) if scale < 1 else tf.image.copy()
        self.samples.append(_Sample(tf.index, small, scale, f"{source_key(self.path)} #{tf.index}"))


def _decodes(path: Path) -> bool:
    """Whether a face file reads whole (metadata and pixels)."""
    try:
        read_face(path)
    except FaceFileError:
        return False
    return True


def _draw_sample(sample: _Sample, faces: Sequence[FaceRecord]) -> Frame:
    img = np.ascontiguousarray(sample.image.copy())
    s = sample.scale
    for f in faces:
        x0, y0, x1, y1 = (float(v) * s for v in f.box)
        colour = (0, 255, 0) if f.file else (255, 160, 0)
        cv2.rectangle(img, (round(x0), round(y0)), (round(x1), round(y1)), colour, 1, cv2.LINE_AA)
        for x, y in f.landmarks[:, :2] * s:
            cv2.circle(img, (round(float(x)), round(float(y))), 1, (255, 0, 0), -1)
        cv2.putText(img, f"{f.face} {f.score:.2f}", (round(x0), max(10, round(y0) - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, colour, 1, cv2.LINE_AA)
    cv2.putText(img, sample.title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return img


def _write_preview(path: Path, tiles: list[Frame]) -> None:
    if not tiles:
        tiles = [np.zeros((64, 64, 3), np.uint8)]
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    cols = min(len(tiles), 2)
    rows = (len(tiles) + cols - 1) // cols
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th: r * th + t.shape[0], c * tw: c * tw + t.shape[1]] = t
    write_image_atomic(path, grid)


def extract(project: Project, side: str, inputs: Sequence[Path], settings: ExtractSettings, *,
            progress: bool = True, preview: Path | None = None,
            tracker_factory: TrackerFactory | None = None, face_filter: FaceFilter | None = None) -> ExtractReport:
    """Extract the faces of one person from videos, images, folders or image patterns into
    ``project.faces_dir(side)``, with one alignments store per input in ``project.alignments_dir``.

    Every input is checked before any work starts (bad input raises :class:`UserError`); a source already
    complete is skipped; an interrupted one resumes. ``tracker_factory`` replaces the MediaPipe-port tracker
    (tests inject fakes); ``face_filter`` keeps only the faces of one person (``--reference``)."""
    if side not in ("A", "B"):
        raise UserError(f"side must be A or B, got {side!r}")
    if not inputs:
        raise UserError("no inputs given")
    t0 = time.perf_counter()
    if preview is not None:
        check_output_path(Path(preview), list(inputs))
    sources: list[tuple[Path, FrameSource]] = []
    keys: dict[str, Path] = {}
    for p in inputs:
        path = Path(p)
        src = open_frames(path)
        for key in (source_key(path), source_stem(path)):
            if key in keys and keys[key] != path:
                raise UserError(f"has the same name as {keys[key]}; rename one of them (faces and alignments "
                                "are named after their source)", path)
            keys[key] = path
        sources.append((path, src))
    make = tracker_factory or _lazy(lambda: default_tracker_factory(settings))
    project.alignments_dir.mkdir(parents=True, exist_ok=True)
    with _cpu_threads(settings):
        report = _extract_sources(project, side, sources, settings, make, progress, preview, face_filter)
    report.seconds = time.perf_counter() - t0
    return report


@contextmanager
def _cpu_threads(settings: ExtractSettings) -> Iterator[None]:
    """Give the networks part of the CPU only: with every core in torch's pool, its worker threads spin
    waiting for each other while the decode and face threads hold the cores, and extraction crawls (measured
    20x slower on two cores)."""
    cores = os.cpu_count() or 1
    with torch_threads(settings.threads or max(1, cores // 2)), opencv_threads(1):  # face workers: the rest
        yield


_PROCESS_POOL: list[ProcessPoolExecutor] = []
_NO_PROCESSES: list[bool] = []  # set once starting them failed in this process: do not try again


def use_face_processes() -> bool:
    """Whether faces are written from worker processes: on machines with ``FACE_PROCESSES_FROM_CORES`` or more
    cores, when run from changeling's command line (see :func:`changeling.threads.allow_worker_processes`)."""
    return (os.cpu_count() or 1) >= FACE_PROCESSES_FROM_CORES and worker_processes_allowed()


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle; workers end with it


def face_process_pool() -> ProcessPoolExecutor | None:
    """The face-writing processes (started once, kept for later extractions in this process), or ``None``
    where faces are written from threads."""
    if not use_face_processes() or _NO_PROCESSES:
        return None
    pool = _PROCESS_POOL[0] if _PROCESS_POOL else None
    if pool is not None and getattr(pool, "_broken", False):  # a worker died (killed): start afresh
        pool.shutdown(wait=False, cancel_futures=True)
        _PROCESS_POOL.clear()
        pool = None
    if pool is None:
        # spawn, not fork: this process has threads (and maybe CUDA) that a fork would copy half-way
        pool = ProcessPoolExecutor(FACE_WORKERS, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_quiet_worker)
        try:  # start them now: a program that cannot spawn (an unguarded script, say) gets threads instead
            for job in [pool.submit(int) for _ in range(FACE_WORKERS)]:
                job.result(timeout=120)
        except Exception as exc:  # noqa: BLE001 - BrokenProcessPool, a timeout, an OS limit: threads will do
            pool.shutdown(wait=False, cancel_futures=True)
            log.warning("face-writing processes could not start (%s); writing faces from threads",
                        type(exc).__name__)
            _NO_PROCESSES.append(True)
            return None
        _PROCESS_POOL.append(pool)
    return pool


def _extract_sources(project: Project, side: str, sources: list[tuple[Path, FrameSource]],
                     settings: ExtractSettings, make: TrackerFactory, progress: bool,
                     preview: Path | None, face_filter: FaceFilter | None = None) -> ExtractReport:
    report = ExtractReport()
    tiles: list[Frame] = []
    per_source = PREVIEW_SAMPLES if len(sources) * PREVIEW_SAMPLES <= PREVIEW_MAX_SAMPLES else max(
        1, PREVIEW_MAX_SAMPLES // len(sources))
    processes = face_process_pool()
    with ThreadPoolExecutor(max_workers=FACE_WORKERS, thread_name_prefix="faces") as workers:
        for path, src in sources:
            run = _SourceRun(path, src, project=project, side=side, settings=settings, make_tracker=make,
                             progress=progress, workers=workers, want_samples=per_source if preview else 0,
                             face_filter=face_filter, processes=processes)
            report.sources.append(run.run())
            if preview is not None and run.samples and run.db_path.exists():
                with AlignmentStore.open_existing(run.db_path) as store:
                    tiles += [_draw_sample(s, store.faces_for_frame(s.index, include_deleted=True))
                              for s in run.samples]
    if preview is not None:
        _write_preview(Path(preview), tiles)
        report.preview = str(preview)
    return report
