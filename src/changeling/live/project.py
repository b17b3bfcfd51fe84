"""Live mode in a project: the converter ``changeling convert`` would build (always tracking on the fly), fed
from a camera or a file played in real time, out to a file, a virtual camera or both."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from changeling.config import ConvertSettings, LiveSettings, Settings
from changeling.convert.pipeline import Converter
from changeling.convert.project import ConvertPlan, build_converter, resolve_settings
from changeling.convert.writers import check_not_input
from changeling.errors import UserError
from changeling.live.inputs import Camera, open_file, paced
from changeling.live.pipeline import Frames, run_live, warm_up
from changeling.live.sinks import CameraBackend, FileSink, Sink, VirtualCameraSink
from changeling.live.stats import LiveReport
from changeling.project import Project
from changeling.threads import opencv_threads, torch_threads

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")


@dataclass(frozen=True)
class LiveOptions:
    """Where frames come from (``input`` file or ``camera``) and go (``output`` file, ``virtual_camera``)."""

    input: Path | None = None
    camera: str | None = None
    output: Path | None = None
    virtual_camera: bool = False
    model_dir: Path | None = None
    reference: Sequence[Path] = ()


def live_converter(project: Project, settings: ConvertSettings, project_settings: Settings | None = None, *,
                   model_dir: Path | None = None, reference: Sequence[Path] = (),
                   source: Path = Path("live")) -> tuple[Converter, ConvertPlan]:
    """Convert's converter for this project (its model, colour, masks, watermark, video writer with the
    provenance tags), finding faces by tracking (there are no alignments for a live input)."""
    everything = resolve_settings(project, settings, project_settings)
    return build_converter(project, source, everything, writer="video", model_dir=model_dir, track=True,
                           reference=reference, progress=False)


def _check(options: LiveOptions) -> None:
    if (options.input is None) == (options.camera is None):
        raise UserError("give one input: --camera N or --input FILE")
    out = options.output
    if out is not None:
        if out.suffix.lower() not in VIDEO_SUFFIXES:
            raise UserError(f"the output must be a video ({', '.join(VIDEO_SUFFIXES)})", out)
        if options.input is not None:
            check_not_input(out, options.input)


def live(project: Project, settings: ConvertSettings, live_settings: LiveSettings, options: LiveOptions, *,
         project_settings: Settings | None = None, camera_backend: CameraBackend | None = None,
         stop: threading.Event | None = None) -> LiveReport:
    """Run live mode until the input ends (a file), ``stop`` is set, or Ctrl+C; returns the latency report. The
    cheapest refusals come first: the options, the input, then the model, then the virtual camera."""
    _check(options)
    camera: Camera | None = None
    frames: Frames
    if options.input is not None:
        source = open_file(options.input)
        # the output keeps the file's frame times, not its audio (frames are dropped when behind)
        out_source = dataclasses.replace(source, kind="stream", time_base=Fraction(1, 90_000))
        frames = functools.partial(paced, source)
    else:
        assert options.camera is not None
        camera = Camera(options.camera, live_settings.camera_width, live_settings.camera_height,
                        live_settings.camera_fps)
        source = out_source = camera.source()
        frames = camera.frames
    sinks: list[Sink] = []
    try:
        conv, plan = live_converter(project, settings, project_settings, model_dir=options.model_dir,
                                    reference=options.reference, source=Path(str(source.path)))
        log.info("live: model %s (%s, %d px, step %d), %dx%d at %.2f frames/s", plan.model_dir, plan.preset,
                 plan.resolution, plan.step, source.width, source.height, float(source.fps))
        if options.virtual_camera:
            sinks.append(VirtualCameraSink(source.width, source.height, float(source.fps), backend=camera_backend))
        if options.output is not None:
            sinks.append(FileSink(conv.writer_factory, options.output, out_source))
    except BaseException:
        for sink in sinks:
            sink.abort()
        if camera is not None:
            camera.close()
        raise
    # as in convert, the stages' threads are the parallelism: one thread each for PyTorch's and OpenCV's kernels
    with torch_threads(1 if plan.device.type == "cpu" else None), opencv_threads(1):
        try:
            warm_up(conv, source)
        except BaseException:  # Ctrl+C before the first frame: nothing to keep
            for sink in sinks:
                sink.abort()
            raise
        log.info("live: running (Ctrl+C to stop)")
        report = run_live(conv, frames, source, sinks, stop=stop)
    report.output = next((str(s.path) for s in sinks if isinstance(s, FileSink)), None)
    return report


__all__ = ["LiveOptions", "live", "live_converter"]
