"""``changeling convert``: render the swap into a video."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from changeling.cli.common import add_common, add_settings_flags, project_and_settings
from changeling.config import ConvertSettings
from changeling.vocab import WRITER_KINDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="render the swap into a video or images", description=(
        "Swap the faces in a video of A with B's (or the reverse), keep A's audio, and mark the output as "
        "synthetic (watermark and metadata). Written under a temporary name until complete."))
    p.add_argument("input", type=Path, help="the video (or images) to convert")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output file (.mp4, .mkv) or folder for images (default: PROJECT/output/NAME_swap.mp4)")
    p.add_argument("--preview", type=int, default=None, metavar="FRAME",
                   help="write a side-by-side PNG (original | swapped | mask) of this frame for each colour mode "
                        "into PROJECT/previews (or the -o folder) instead of converting")
    p.add_argument("--writer", choices=WRITER_KINDS, default=None,
                   help="what to write: a video, an image sequence, or swapped patches with their transforms "
                        "(default: images for image inputs, else video)")
    p.add_argument("--reference", type=Path, action="append", default=None, metavar="IMAGE",
                   help="an image of the person to replace (with --which reference); repeat it for more images")
    p.add_argument("--swap-direction", action="store_true", help="swap B's faces to A instead (same as "
                   "--direction b2a)")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: PROJECT/model)")
    p.add_argument("--alignments", type=Path, default=None,
                   help="alignments file of this video (default: the project's, when extract made one for it)")
    p.add_argument("--track", action="store_true",
                   help="find faces on the fly even when the project has alignments for this video")
    add_common(p)
    add_settings_flags(p, ConvertSettings)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changeling.convert import convert, preview

    project, settings = project_and_settings(args, "convert")
    if args.swap_direction:
        settings = dataclasses.replace(settings, direction="b2a")
    common = {"model_dir": args.model, "alignments": args.alignments, "track": args.track,
              "reference": args.reference or ()}
    if args.preview is not None:
        paths = preview(project, args.input, args.preview, settings, out_dir=args.output, **common)
        for path in paths:
            print(path)
        return 0
    report = convert(project, args.input, args.output, settings, writer=args.writer,
                     progress=not args.quiet, **common)
    print(f"{report.output}: {report.frames} frames, {report.frames_swapped} with a swapped face "
          f"({report.faces_swapped} faces), {report.fps:.1f} frames/s")
    if report.faces_found == 0:
        print("note: no face was found in any frame, so nothing was swapped")
    elif report.faces_swapped == 0:
        print(f"note: {report.faces_found} faces were found but none was chosen to swap (check --which and "
              "--reference)")
    return 0
