"""The converter: one object built from injected parts, with one call that renders a whole video.

Stages, each overlapping the others::

    decode thread ──▶ main: faces (store or tracker) → choose → smooth → align → crop, in batches
                      ──▶ model thread: the swap, one batch behind the main thread
                      ──▶ render pool: colour → mask → sharpen → paste back → watermark
                      ──▶ write thread: encode / save, in frame order

Frames without a face are handed to the writer as decoded (bit-exact). Any failure stops every stage and the
writer removes its temporary output, so nothing appears under the final name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.convert.blend import paste_back, scale_about_centre
from changeling.convert.color import ColorMatcher
from changeling.convert.maskops import MaskBuilder
from changeling.convert.sharpen import unsharp_mask
from changeling.convert.smooth import LandmarkSmoother, params_for_strength
from changeling.convert.temporal import FaceBlender
from changeling.convert.writers import FrameWriter, Patch, RenderedFrame, WriterFactory, check_not_input
from changeling.detect.align import face_affine, rescale_affine, transform_points, warp_face
from changeling.errors import UserError
from changeling.locks import ProcessLock, already_running
from changeling.progress import bar
from changeling.stages import END, Channel, Stages
from changeling.threads import opencv_threads
from changeling.types import Affine, FaceType, Frame
from changeling.video.process_reader import decode_process_wanted, start_process_frames
from changeling.video.reader import FrameSource, TimedFrame, open_frames
from changeling.video.writer import partials

log = logging.getLogger(__name__)


# ---- the parts --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectedFace:
    """A face in a frame: (N, 3) landmarks and (4,) box in frame pixels; the source's track id if it has one."""

    landmarks: NDArray[np.float32]
    box: NDArray[np.float32]
    track_id: int | None = None
    score: float = 1.0

    @property
    def area(self) -> float:
        b = self.box
        return float(max(b[2] - b[0], 0) * max(b[3] - b[1], 0))


class FaceSource(Protocol):
    """Where the faces of each frame come from (a stored alignments file, or detection on the fly)."""

    def open(self, source: FrameSource) -> None:
        """Check that this face source fits the video (raise :class:`UserError` if not)."""

    def faces(self, frames: Sequence[TimedFrame]) -> list[list[DetectedFace]]:
        """The faces of each frame of a batch, frames given in order."""


class Swapper(Protocol):
    """The model, seen from the converter: aligned crops in, swapped faces and their masks out. The faces may
    come out larger than the crops went in (a detail stage): ``output_resolution`` says how large."""

    resolution: int
    output_resolution: int
    face_type: FaceType

    def __call__(self, crops: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(N, R, R, 3) uint8 crops -> (N, S, S, 3) float32 faces in [0, 1] and (N, S, S) float32 masks, S the
        output resolution."""


FaceFilter = Callable[[Frame, list[DetectedFace]], list[DetectedFace]]
# the occlusion segmenter: (N, R, R, 3) uint8 crops -> (N, R, R) float32 visible-face probabilities
Occlusion = Callable[[NDArray[np.uint8]], NDArray[np.float32]]
Marker = Callable[[Frame], Frame]
Aligner = Callable[[np.ndarray, FaceType, int], Affine]


def scaled_mask_builder(builder: MaskBuilder, k: float) -> MaskBuilder:
    """``builder`` for faces ``k`` times larger than the model's crops: its erosion and feather widths are in
    the model's crop pixels, so the blend looks the same with or without a detail stage."""
    return dataclasses.replace(builder, erode=round(builder.erode * k), blur=round(builder.blur * k))


def largest_face(frame: Frame, faces: list[DetectedFace]) -> list[DetectedFace]:
    """Keep only the largest face (by box area)."""
    return [max(faces, key=lambda f: f.area)] if faces else []


def all_faces(frame: Frame, faces: list[DetectedFace]) -> list[DetectedFace]:
    """Keep every face."""
    return list(faces)


@dataclass
class ConvertReport:
    """What a run did. ``stages`` holds seconds of work per stage (summed over threads)."""

    output: Path
    frames: int
    frames_swapped: int
    faces_swapped: int
    skipped: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    faces_found: int = 0  # before choosing which to swap (largest, reference)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FaceJob:
    """One face of one frame on its way through the converter."""

    face_index: int
    landmarks: NDArray[np.float32]  # (N, 3) frame px, smoothed
    affine: Affine  # frame -> crop
    crop: NDArray[np.uint8]  # (R, R, 3) the original face crop
    swapped: NDArray[np.float32] | None = None  # (S, S, 3) in [0, 1], S the swapper's output resolution
    predicted_mask: NDArray[np.float32] | None = None  # (S, S)
    occlusion_mask: NDArray[np.float32] | None = None  # (R, R) visible face, when an occlusion segmenter runs
    track: int | None = None  # the landmark smoother's key for this face across frames (None: no smoother)

    @property
    def key(self) -> int:
        """What follows this face from frame to frame: its track, or its place among the frame's faces."""
        return self.face_index if self.track is None else self.track


@dataclass
class FramePlan:
    frame: TimedFrame
    faces: list[FaceJob]


class _Timer:
    """Thread-safe sums of seconds per stage, and the faces the face source found."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.faces_found = 0  # only the main thread counts

    def add(self, stage: str, seconds: float) -> None:
        self.add_all({stage: seconds})

    def add_all(self, spent: dict[str, float]) -> None:
        with self._lock:
            for stage, seconds in spent.items():
                self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


# ---- the converter ----------------------------------------------------------------------------------------


def output_lock(output: Path) -> AbstractContextManager[object]:
    """The lock of one output (``.NAME.lock`` beside it, removed on release). Where its folder is missing or not
    writable there is no lock: the writer refuses such an output with its own message."""
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        return nullcontext()
    return ProcessLock(parent / f".{output.name}.lock", already_running(f"another convert to {output}"), output,
                       remove=True)


@dataclass
class Converter:
    """Renders the swap into a video. Build it from parts (:func:`changeling.convert.build_converter` assembles
    the usual ones for a project), then call :meth:`run`.

    ``color``: colour matcher ``(face, target, mask) -> face``; ``masks``: the blend mask builder;
    ``select``: which faces of a frame to swap; ``smooth``: temporal smoothing strength in [0, 1] (0: off);
    ``face_smooth``: temporal blending of the swapped faces (:mod:`changeling.convert.temporal`; 0: off);
    ``sharpen``: unsharp-mask amount; ``face_scale``: size of the pasted face relative to the original;
    ``marker``: the provenance watermark applied to every frame written (frames without a face are otherwise
    passed through untouched);
    ``batch_size``: frames per model batch; ``workers``: render threads (0: render on the main thread);
    ``occlusion``: the occlusion segmenter, run on the crops beside the model when the mask kind uses it.
    """

    faces: FaceSource
    swapper: Swapper
    color: ColorMatcher
    masks: MaskBuilder
    writer_factory: WriterFactory
    marker: Marker | None
    select: FaceFilter = largest_face
    smooth: float = 0.5
    face_smooth: float = 0.0
    sharpen: float = 0.0
    face_scale: float = 1.0
    batch_size: int = 8
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    progress: bool = True
    label: str = ""  # what the run uses, logged once the inputs are checked
    occlusion: Occlusion | None = None
    align: Aligner = face_affine
    timer: _Timer = field(default_factory=_Timer, repr=False)

    # -- steps usable on their own (preview, tests) --

    def prepare(self, frames: Sequence[TimedFrame], smoother: LandmarkSmoother | None = None) -> list[FramePlan]:
        """Find, choose, smooth and align the faces of a batch of frames, and run the model on their crops."""
        plans = self.plan(frames, smoother)
        self.swap(plans)
        return plans

    def plan(self, frames: Sequence[TimedFrame], smoother: LandmarkSmoother | None = None) -> list[FramePlan]:
        """Find, choose, smooth and align the faces of a batch of frames and crop them (no model yet)."""
        r, face_type = int(self.swapper.resolution), self.swapper.face_type
        t0 = time.perf_counter()
        detected = self.faces.faces(frames)
        if len(detected) != len(frames):
            raise RuntimeError(f"face source gave {len(detected)} results for {len(frames)} frames")
        t1 = time.perf_counter()
        self.timer.add("faces", t1 - t0)
        plans: list[FramePlan] = []
        jobs: list[FaceJob] = []
        for tf, found in zip(frames, detected, strict=True):
            self.timer.faces_found += len(found)
            chosen = self.select(tf.image, list(found)) if found else []
            lms: list[NDArray[np.float32]] = [np.asarray(f.landmarks, np.float32) for f in chosen]
            tracks: list[int | None] = [None] * len(lms)
            if smoother is not None:
                lms = smoother.update(tf.time, lms, [f.box for f in chosen], [f.track_id for f in chosen])
                tracks = list(smoother.keys)
            fjobs = []
            for i, (lm, track) in enumerate(zip(lms, tracks, strict=True)):
                affine = np.asarray(self.align(lm, face_type, r), dtype=np.float64)
                crop = warp_face(tf.image, affine, r, border="replicate")
                fjobs.append(FaceJob(i, lm, affine, crop, track=track))
            jobs.extend(fjobs)
            plans.append(FramePlan(tf, fjobs))
        self.timer.add("align", time.perf_counter() - t1)
        return plans

    def swap(self, plans: Sequence[FramePlan], blender: FaceBlender | None = None) -> None:
        """Run the model on the planned crops, in batches of ``batch_size`` faces; fills each job's swapped face
        and predicted mask. ``blender`` (carried over a video's consecutive frames, in order) blends each face
        with the previous frame's."""
        t2 = time.perf_counter()
        jobs = [job for plan in plans for job in plan.faces]
        for start in range(0, len(jobs), self.batch_size):
            part = jobs[start:start + self.batch_size]
            faces, masks = self.swapper(np.stack([j.crop for j in part]))
            for j, f, m in zip(part, faces, masks, strict=True):
                j.swapped, j.predicted_mask = f, m
        if blender is not None:
            for plan in plans:
                blender.next_frame()
                for j in plan.faces:
                    assert j.swapped is not None
                    j.swapped, j.predicted_mask = blender(j.key, j.crop, j.swapped, j.predicted_mask)
        t3 = time.perf_counter()
        self.timer.add("model", t3 - t2)
        if self.occlusion is not None and self.masks.uses_occlusion and jobs:
            for start in range(0, len(jobs), self.batch_size):
                part = jobs[start:start + self.batch_size]
                for j, m in zip(part, self.occlusion(np.stack([j.crop for j in part])), strict=True):
                    j.occlusion_mask = m
            self.timer.add("occlusion", time.perf_counter() - t3)

    def render(self, plan: FramePlan, color: ColorMatcher | None = None) -> RenderedFrame:
        """Colour-match, mask, sharpen and paste every face of a planned frame; watermark it if it changed."""
        tf = plan.frame
        if not plan.faces:
            # unchanged but for the provenance mark: every frame changeling renders carries it
            image = self.marker(tf.image) if self.marker is not None else tf.image
            return RenderedFrame(tf.index, tf.time, image, swapped=False)
        t0, c0 = time.perf_counter(), time.thread_time()
        match = color or self.color
        r = int(self.swapper.resolution)
        size = int(getattr(self.swapper, "output_resolution", r))
        masks = self.masks if size == r else scaled_mask_builder(self.masks, size / r)
        out = tf.image.copy()
        patches = []
        spent = {"render_mask": 0.0, "render_color": 0.0, "render_paste": 0.0}
        for job in plan.faces:
            assert job.swapped is not None
            t = time.perf_counter()
            affine = job.affine if size == r else rescale_affine(job.affine, r, size)
            points = transform_points(job.landmarks, affine)
            visible = job.occlusion_mask
            if visible is not None and size != r:
                visible = np.asarray(cv2.resize(visible, (size, size), interpolation=cv2.INTER_LINEAR), np.float32)
            mask = masks(job.predicted_mask, points, size, visible)
            paste_affine = scale_about_centre(affine, self.face_scale, size)
            target = job.crop if self.face_scale == 1.0 and size == r else \
                warp_face(tf.image, paste_affine, size, border="replicate")
            t1 = time.perf_counter()
            face = match(job.swapped, target, mask)
            face = unsharp_mask(face, self.sharpen)
            face_u8 = np.clip(np.asarray(face, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            t2 = time.perf_counter()
            paste_back(out, face_u8, mask, paste_affine, inplace=True)
            patches.append(Patch(job.face_index, face_u8, mask, paste_affine))
            spent["render_mask"] += t1 - t
            spent["render_color"] += t2 - t1
            spent["render_paste"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        if self.marker is not None:
            out = self.marker(out)
        t4 = time.perf_counter()
        # wall time per part, and the render threads' CPU time: wall well above CPU means waiting (on the GIL)
        self.timer.add_all({**spent, "render_mark": t4 - t3, "render": t4 - t0, "render_cpu": time.thread_time() - c0})
        return RenderedFrame(tf.index, tf.time, out, swapped=True, patches=patches)

    # -- the whole run --

    def run(self, source: Path | str, output: Path | str) -> ConvertReport:
        """Convert ``source`` (a video, image or image folder) into ``output`` through the writer factory.

        One convert per output at a time: a second one to the same output refuses ("already running (pid N)");
        the holder of that lock removes what killed runs left under the output's temporary names."""
        source, output = Path(source), Path(output)
        check_not_input(output, source)
        if self.masks.kind == "occlusion" and self.occlusion is None:
            raise UserError("mask 'occlusion' needs an occlusion segmenter; train one with `changeling masks train`")
        with output_lock(output):
            for stale in partials(output):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
            if self.workers <= 0:
                return self._run(source, output)
            with opencv_threads(1):  # the render threads are the parallelism
                return self._run(source, output)

    def _run(self, source: Path, output: Path) -> ConvertReport:
        frames = open_frames(source)
        self.faces.open(frames)
        if self.label:
            log.info("convert %s -> %s: %s", source, output, self.label)
        self.timer = _Timer()
        writer = self.writer_factory(output, frames)
        counts = {"frames": 0, "swapped": 0, "faces": 0}
        smoother = LandmarkSmoother(params_for_strength(self.smooth))
        blender = FaceBlender(self.face_smooth) if self.face_smooth > 0 else None
        pbar = bar(total=frames.frame_count or None, desc="convert", unit="frame", enabled=self.progress)
        # on many cores the frames are decoded in a child process (its own GIL), else in the decode thread
        child = start_process_frames(frames, slots=2 * self.batch_size + 2) if decode_process_wanted(frames) else None
        start = time.perf_counter()
        try:
            with Stages(join_timeout=30) as stages:
                decoded: Channel[TimedFrame] = stages.channel(2 * self.batch_size)
                ready: Channel[Future[tuple[RenderedFrame, object]]] = stages.channel(
                    2 * self.batch_size + max(self.workers, 1))
                pool = stages.pool(self.workers, "render") if self.workers > 0 else None
                # the model runs in a thread of its own, one batch behind: the main thread plans the next batch
                # (faces, smoothing, crops) while the model works on this one
                model = stages.pool(1, "model")
                stages.produce("decode", self._decoded(child or frames), decoded)
                stages.consume("write", ready, lambda job: self._write(writer, job, counts, pbar))
                pending: tuple[list[FramePlan], Future[None]] | None = None
                chunk: list[TimedFrame] = []
                while True:
                    item = stages.get(decoded)
                    if item is not END:
                        chunk.append(item)
                    if chunk and (item is END or len(chunk) >= self.batch_size):
                        plans = self.plan(chunk, smoother)
                        swapped = model.submit(self.swap, plans, blender)
                        if pending is not None:
                            self._hand_over(*pending, pool, writer, stages, ready)
                        pending = (plans, swapped)
                        chunk = []
                    if item is END:
                        break
                if pending is not None:
                    self._hand_over(*pending, pool, writer, stages, ready)
                stages.put(ready, END)
                stages.join()
            path = writer.close()
        except BaseException:
            writer.abort()  # every stage has ended: nothing writes to the temporary output any more
            raise
        finally:
            if child is not None:
                child.close()
            pbar.close()
        seconds = time.perf_counter() - start
        report = ConvertReport(output=path, frames=counts["frames"], frames_swapped=counts["swapped"],
                               faces_swapped=counts["faces"], skipped=(child or frames).skipped, seconds=seconds,
                               stages=dict(self.timer.seconds), faces_found=self.timer.faces_found)
        if report.faces_found == 0:
            log.warning("%s: no face was found in any frame; the output holds the input's frames unchanged", source)
        elif report.faces_swapped == 0:
            log.warning("%s: %d faces were found but none was chosen (reference filter?); nothing was swapped",
                        source, report.faces_found)
        return report

    # -- stages --

    def _hand_over(self, plans: list[FramePlan], swapped: Future[None], pool: ThreadPoolExecutor | None,
                   writer: FrameWriter, stages: Stages, ready: Channel[Future[tuple[RenderedFrame, object]]]) -> None:
        """Once the model has done ``plans`` (its error raised here), render them: in the pool, in frame order
        on the writer's channel."""
        swapped.result()
        for plan in plans:
            fut: Future[tuple[RenderedFrame, object]]
            if pool is None:
                fut = Future()
                fut.set_result(self._finish(plan, writer))
            else:
                fut = pool.submit(self._finish, plan, writer)
            stages.put(ready, fut)

    def _finish(self, plan: FramePlan, writer: FrameWriter) -> tuple[RenderedFrame, object]:
        """Render a frame and do the writer's unordered share of the work (runs in the render pool)."""
        rendered = self.render(plan)
        t0 = time.perf_counter()
        prepared = writer.prepare(rendered)
        self.timer.add("prepare", time.perf_counter() - t0)
        return rendered, prepared

    def _decoded(self, frames: Iterable[TimedFrame]) -> Iterator[TimedFrame]:
        """The frames, the time spent decoding each added to the ``decode`` stage (runs in the decode thread)."""
        it = iter(frames)
        while True:
            t0 = time.perf_counter()
            tf = next(it, None)
            self.timer.add("decode", time.perf_counter() - t0)
            if tf is None:
                return
            yield tf

    def _write(self, writer: FrameWriter, job: Future[tuple[RenderedFrame, object]], counts: dict[str, int],
               pbar: Any) -> None:
        """Write one rendered frame, in frame order (runs in the write thread; a render error is raised here)."""
        rendered, prepared = job.result()
        t0 = time.perf_counter()
        writer.write(rendered, prepared)
        self.timer.add("write", time.perf_counter() - t0)
        counts["frames"] += 1
        if rendered.swapped:
            counts["swapped"] += 1
            counts["faces"] += len(rendered.patches)
        pbar.update(1)


def check_model(*, preset: str, resolution: int, face_type: str, model_dir: Path, expected_preset: str | None,
                faces_face_type: str | None, faces_size: int | None) -> None:
    """Refuse a model that does not belong to this project: another preset than the project's settings name, or
    a face type other than the project's extracted faces (its crops would not line up with what it learned).
    ``faces_size`` is informational: the converter crops at the model's own resolution."""
    if expected_preset is not None and preset != expected_preset:
        raise UserError(f"holds a '{preset}' model ({resolution} px) but the project's settings say preset "
                        f"'{expected_preset}'; train this project's model first or pass --model", model_dir)
    if faces_face_type is not None and face_type != faces_face_type:
        raise UserError(f"the model was trained on '{face_type}' crops but this project's faces are "
                        f"'{faces_face_type}' ({faces_size} px); it belongs to another project", model_dir)
