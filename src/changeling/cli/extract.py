"""``changeling extract``: faces of one person from videos, images or folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common, add_settings_flags, project_and_settings
from changeling.config import ExtractSettings
from changeling.vocab import SIDES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="detect, align and save the faces of one person", description=(
        "Find the faces in videos, images or image folders of one person, align them and save them to the "
        "project's faces/SIDE folder, with a per-video alignments file that makes the run resumable."))
    p.add_argument("inputs", nargs="+", type=Path, help="videos, images, folders of images or patterns")
    p.add_argument("--side", required=True, choices=SIDES, help="which person these inputs show")
    p.add_argument("--preview", type=Path, default=None,
                   help="also write a PNG with boxes and landmarks drawn on sample frames")
    p.add_argument("--reference", type=Path, action="append", default=None, metavar="IMAGE",
                   help="keep only faces of the person in this image; repeat it for more images of them (needs "
                        "the [identity] extra)")
    p.add_argument("--exclude", type=Path, action="append", default=None, metavar="IMAGE",
                   help="drop faces of the person in this image; repeat it for more people or images (needs the "
                        "[identity] extra)")
    add_common(p)
    add_settings_flags(p, ExtractSettings)
    p.set_defaults(func=run)


# the counts of a source's report worth a mention when not zero, and how to say them
_COUNTS = (("frames_without_face", "without a face"), ("corrupt_frames", "corrupt frames skipped"),
           ("resumed_frames", "done before (resumed)"), ("skipped_frames", "skipped (every Nth)"),
           ("blurry_faces", "too blurry"), ("small_faces", "too small"),
           ("other_people", "faces of other people dropped"))


def run(args: argparse.Namespace) -> int:
    from changeling.extract import extract

    project, settings = project_and_settings(args, "extract")
    face_filter = None
    if args.reference or args.exclude:
        from changeling.identity import IdentityFilter

        face_filter = IdentityFilter(args.reference or [], settings.identity_threshold, args.exclude or [])
    report = extract(project, args.side, args.inputs, settings, progress=not args.quiet, preview=args.preview,
                     face_filter=face_filter)
    for s in report.sources:
        if s.already_complete:
            print(f"{s.source}: already extracted ({s.resumed_frames} frames); delete {s.alignments} to redo")
            continue
        parts = [f"{s.frames_read} frames read", f"{s.faces_written} faces written"]
        parts += [f"{getattr(s, name)} {label}" for name, label in _COUNTS if getattr(s, name)]
        print(f"{s.source}: " + ", ".join(parts))
    faces_dir = project.faces_dir(args.side)
    if report.faces_written == 0 and not any(s.already_complete or s.resumed_frames for s in report.sources):
        print(f"no faces found in {report.frames_read} frames; nothing was written to {faces_dir}")
    else:
        print(f"{report.faces_written} faces written to {faces_dir} in {report.seconds:.1f} s "
              f"({report.frames_per_second:.1f} frames/s)")
    if report.preview:
        print(f"preview: {report.preview}")
    return 0
