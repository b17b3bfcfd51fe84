"""Converting in a project: :func:`build_converter` assembles a :class:`~changeling.convert.pipeline.Converter`
from the project's model and faces and from settings taken once (:func:`resolve_settings`); :func:`convert` runs
it over a video and :func:`preview` renders one frame in every colour mode."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from changeling.config import ConvertSettings, ExtractSettings, Settings
from changeling.convert.color import color_matcher
from changeling.convert.maskops import MaskBuilder
from changeling.convert.pipeline import (
    Converter,
    ConvertReport,
    DetectedFace,
    FaceFilter,
    FaceSource,
    all_faces,
    check_model,
    largest_face,
)
from changeling.convert.writers import WriterKind, check_not_input, provenance_writer_factory
from changeling.errors import UserError
from changeling.models.detail import output_resolution
from changeling.occlusion.predict import Segmenter
from changeling.project import Project
from changeling.types import Frame
from changeling.video.images import is_image_path

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ConvertPlan:
    """What :func:`build_converter` decided, for messages: where the faces and the model came from."""

    faces_from: str  # "alignments FILE" or "tracking"
    model_dir: Path
    preset: str
    resolution: int
    step: int
    device: torch.device


def default_output(project: Project, source: Path, writer: WriterKind) -> Path:
    """``PROJECT/output/NAME_swap.mp4`` (``.mkv``/``.mov`` kept), ``NAME_swap/`` for images, ``NAME_patches/``."""
    stem = Path(source).stem or "input"
    if writer == "images":
        return project.output_dir / f"{stem}_swap"
    if writer == "patches":
        return project.output_dir / f"{stem}_patches"
    suffix = Path(source).suffix.lower() if Path(source).suffix.lower() in (".mkv", ".mov") else ".mp4"
    return project.output_dir / f"{stem}_swap{suffix}"


def default_writer(source: Path) -> WriterKind:
    """Images in, images out; anything else becomes a video."""
    p = Path(source)
    return "images" if p.is_dir() or is_image_path(p) or "*" in str(p) or "%" in p.name else "video"


def _faces_type(project: Project) -> tuple[str | None, int | None]:
    from changeling.faces.facefile import FaceFileError, list_faces, read_meta

    for side in ("A", "B"):
        for path in list_faces(project.faces_dir(side))[:1]:
            try:
                meta = read_meta(path)
            except FaceFileError:
                continue
            return meta.face_type, meta.size
    return None, None


def _face_source(project: Project, source: Path, side: str, alignments: Path | None, track: bool,
                 tracking: ExtractSettings) -> tuple[FaceSource, str]:
    from changeling.convert.sources import StoreFaceSource, TrackerFaceSource, find_alignments
    from changeling.faces.store import alignments_path

    if alignments is not None and track:
        raise UserError("--alignments and --track exclude each other")
    if alignments is not None:
        return StoreFaceSource(alignments), f"alignments {alignments}"
    if not track:
        named = alignments_path(project.alignments_dir, source, side)
        if named.is_file():
            return StoreFaceSource(named), f"alignments {named}"
        found = find_alignments(project.alignments_dir, source)
        if found is not None:
            return StoreFaceSource(found), f"alignments {found}"
    from changeling.extract.tracking import default_tracker_factory

    return TrackerFaceSource(default_tracker_factory(tracking)), "tracking"


def _select(which: str, reference: Sequence[Path]) -> FaceFilter:
    if which == "all":
        return all_faces
    if which == "largest":
        if reference:
            log.warning("--reference is used only with --which reference; swapping the largest face")
        return largest_face
    if not reference:
        raise UserError("--which reference needs --reference IMAGE (a photo of the person to replace)")
    from changeling.identity.match import IdentityFilter

    flt = IdentityFilter(list(reference))

    def matching(frame: Frame, faces: list[DetectedFace]) -> list[DetectedFace]:
        keep = flt.matches_all(frame, [f.box for f in faces])
        return [f for f, k in zip(faces, keep, strict=True) if k]

    return matching


NO_SEGMENTER_NOTE = (" (no occlusion segmenter in this project, so nothing in front of the face is kept; "
                     "`changeling masks train` makes one)")


def _occlusion(project: Project, settings: ConvertSettings, device: torch.device) -> Segmenter | None:
    """The project's occlusion segmenter when the mask uses it: required by ``occlusion``, used by ``combined``
    when there is one. One that belongs to another project is refused either way."""
    from changeling.convert.maskops import OCCLUSION_KINDS
    from changeling.occlusion.project import load_project_segmenter

    if settings.mask not in OCCLUSION_KINDS:
        return None
    segmenter = load_project_segmenter(project.root, str(device), required=settings.mask == "occlusion")
    return segmenter


def resolve_settings(project: Project, settings: ConvertSettings, project_settings: Settings | None) -> Settings:
    """Every setting one convert uses, taken once: ``settings`` as the convert section, the other sections from
    ``project_settings`` (flags applied by the caller) or, when not given, from the project's ``changeling.toml``
    read here. Tracking on the fly uses the extract section with the convert section's device."""
    base = project_settings if project_settings is not None else project.settings()
    return replace(base, convert=settings, extract=replace(base.extract, device=settings.device))


def build_converter(project: Project, source: Path, all_settings: Settings, *, writer: WriterKind = "video",
                    model_dir: Path | None = None, alignments: Path | None = None, track: bool = False,
                    reference: Sequence[Path] = (), progress: bool = True) -> tuple[Converter, ConvertPlan]:
    """Assemble the converter for ``source`` from ``all_settings`` (:func:`resolve_settings`; nothing is read
    from ``changeling.toml`` here): load the model (refusing one of another preset than the settings' or another
    face type than the project's faces), pick the face source (the video's alignments when they exist, else
    tracking on the fly), and the colour matcher, masks, writer with provenance, and watermark."""
    from changeling.convert.sources import ModelSwapper, load_model
    from changeling.device import resolve_device
    from changeling.provenance.batch_marker import watermark_marker

    settings = all_settings.convert
    device = resolve_device(settings.device)
    mdir = Path(model_dir) if model_dir is not None else project.model_dir
    model, info = load_model(mdir, device)
    faces_type, faces_size = _faces_type(project)
    check_model(preset=info.preset, resolution=info.resolution, face_type=info.face_type, model_dir=mdir,
                expected_preset=all_settings.train.preset, faces_face_type=faces_type, faces_size=faces_size)
    occlusion = _occlusion(project, settings, device)
    own_side, to = ("A", "B") if settings.direction == "a2b" else ("B", "A")
    faces, faces_from = _face_source(project, source, own_side, alignments, track, all_settings.extract)
    swapper = ModelSwapper(model, resolution=info.resolution, face_type=info.face_type, to=to,  # type: ignore[arg-type]
                           device=device, output_resolution=output_resolution(model))
    workers = settings.workers or min(8, os.cpu_count() or 1)
    conv = Converter(faces=faces, swapper=swapper, color=color_matcher(settings.color),
                     masks=MaskBuilder(settings.mask, settings.erode, settings.blur),
                     writer_factory=provenance_writer_factory(writer, crf=settings.crf,
                                                              image_format=settings.image_format),
                     marker=watermark_marker(device), select=_select(settings.which, reference),
                     smooth=settings.smooth, face_smooth=settings.face_smooth, sharpen=settings.sharpen,
                     face_scale=settings.face_scale, batch_size=settings.batch_size,
                     workers=workers, progress=progress, occlusion=occlusion)
    return conv, ConvertPlan(faces_from, mdir, info.preset, info.resolution, int(info.step), device)


def convert(project: Project, source: Path, output: Path | None, settings: ConvertSettings, *,
            writer: WriterKind | None = None, model_dir: Path | None = None, alignments: Path | None = None,
            track: bool = False, reference: Sequence[Path] = (), progress: bool = True,
            project_settings: Settings | None = None) -> ConvertReport:
    """Render the swap of ``source`` into ``output`` (default: the project's output folder). ``settings`` and
    ``project_settings`` are taken once (:func:`resolve_settings`)."""
    everything = resolve_settings(project, settings, project_settings)
    source = Path(source)
    kind: WriterKind = writer or default_writer(source)
    out = Path(output) if output is not None else default_output(project, source, kind)
    check_not_input(out, source)  # before the model loads: the cheapest refusal first
    if output is None:
        out.parent.mkdir(parents=True, exist_ok=True)
    conv, plan = build_converter(project, source, everything, writer=kind, model_dir=model_dir,
                                 alignments=alignments, track=track, reference=reference, progress=progress)
    conv.label = (f"model {plan.model_dir} ({plan.preset}, {plan.resolution} px, step {plan.step}), faces from "
                  f"{plan.faces_from}, colour {settings.color}, mask {settings.mask}"
                  + (f" (occlusion segmenter {conv.occlusion.path})" if isinstance(conv.occlusion, Segmenter)
                     else NO_SEGMENTER_NOTE if settings.mask == "combined" else ""))
    from changeling.threads import torch_threads

    with torch_threads(1 if plan.device.type == "cpu" else None):
        return conv.run(source, out)


def preview(project: Project, source: Path, frame: int, settings: ConvertSettings, *, out_dir: Path | None = None,
            model_dir: Path | None = None, alignments: Path | None = None, track: bool = False,
            reference: Sequence[Path] = (), project_settings: Settings | None = None) -> list[Path]:
    """Write ``original | swapped | mask`` PNGs of frame ``frame`` for every colour mode (default folder: the
    project's ``previews/``). Settings are taken as :func:`convert` takes them."""
    from changeling.convert.previews import write_previews
    from changeling.provenance import synthetic_metadata

    conv, _ = build_converter(project, Path(source), resolve_settings(project, settings, project_settings),
                              model_dir=model_dir, alignments=alignments,
                              track=track, reference=reference, progress=False)
    target = Path(out_dir) if out_dir is not None else project.previews_dir
    return write_previews(conv, Path(source), frame, target, metadata=synthetic_metadata())
