"""Extraction: turn videos, images or folders of one person into aligned faces plus one alignments store per
input. :func:`extract` checks every input, then runs each source (:mod:`changeling.extract.source`) with the
face workers (:mod:`changeling.extract.workers`) and draws the preview (:mod:`changeling.extract.preview`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from changeling.config import ExtractSettings
from changeling.errors import UserError
from changeling.extract.preview import draw_sample, samples_per_source, write_preview
from changeling.extract.report import ExtractReport
from changeling.extract.source import SourceRun, source_stem
from changeling.extract.tracking import FaceFilter, TrackerFactory, default_tracker_factory, lazy_factory
from changeling.extract.workers import FACE_WORKERS, cpu_threads, face_process_pool
from changeling.faces.store import AlignmentStore, source_key
from changeling.project import Project
from changeling.types import Frame
from changeling.video import FrameSource, open_frames
from changeling.video.writer import check_output_path


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
    make = tracker_factory or lazy_factory(lambda: default_tracker_factory(settings))
    project.alignments_dir.mkdir(parents=True, exist_ok=True)
    with cpu_threads(settings):
        report = _extract_sources(project, side, sources, settings, make, progress, preview, face_filter)
    report.seconds = time.perf_counter() - t0
    return report



def _extract_sources(project: Project, side: str, sources: list[tuple[Path, FrameSource]],
                     settings: ExtractSettings, make: TrackerFactory, progress: bool,
                     preview: Path | None, face_filter: FaceFilter | None = None) -> ExtractReport:
    report = ExtractReport()
    tiles: list[Frame] = []
    per_source = samples_per_source(len(sources))
    processes = face_process_pool()
    with ThreadPoolExecutor(max_workers=FACE_WORKERS, thread_name_prefix="faces") as workers:
        for path, src in sources:
            run = SourceRun(path, src, project=project, side=side, settings=settings, make_tracker=make,
                             progress=progress, workers=workers, want_samples=per_source if preview else 0,
                             face_filter=face_filter, processes=processes)
            report.sources.append(run.run())
            if preview is not None and run.samples and run.db_path.exists():
                with AlignmentStore.open_existing(run.db_path) as store:
                    tiles += [draw_sample(s, store.faces_for_frame(s.index, include_deleted=True))
                              for s in run.samples]
    if preview is not None:
        write_preview(Path(preview), tiles)
        report.preview = str(preview)
    return report
