"""``changeling live``: swap a camera (or a video file played in real time) as it comes."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from changeling.cli.common import add_common, add_settings_flags, flags_of, project_and_settings
from changeling.config import ConvertSettings, LiveSettings, with_flags

# the convert settings that shape a live swap (batching, workers and image output do not apply)
SWAP_FIELDS = ("color", "mask", "erode", "blur", "smooth", "face_smooth", "sharpen", "face_scale", "which", "direction",
               "crf", "device")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help="swap a camera in real time (to a virtual camera or a file)", description=(
        "Swap the faces of a camera, or of a video file played in real time, frame by frame as they come, with "
        "the project's model and convert's settings. Frames the pipeline cannot keep up with are dropped, never "
        "queued. Every frame is watermarked as synthetic. Ctrl+C stops and finishes the output file."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", metavar="N", default=None,
                     help="camera index (Linux: /dev/videoN, or a device path; Windows: the camera's name)")
    src.add_argument("--input", type=Path, default=None, metavar="FILE",
                     help="a video file played in real time, paced at its frame rate (tests, demos)")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the swapped frames to this video "
                   "(.mp4, .mkv, .mov), marked as convert marks its outputs")
    p.add_argument("--virtual-camera", action="store_true",
                   help="send the swapped frames to a virtual camera (Zoom, OBS): needs pip install "
                        "'changeling[live]' and v4l2loopback (Linux) or OBS's virtual camera (Windows, macOS)")
    p.add_argument("--stats", action="store_true",
                   help="print latency (p50, p95), output frames/s, drop rate and time per stage at the end")
    p.add_argument("--json", action="store_true", help="with --stats, print them as JSON")
    p.add_argument("--swap-direction", action="store_true", help="swap B's faces to A instead")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: PROJECT/model)")
    p.add_argument("--reference", type=Path, action="append", default=None, metavar="IMAGE",
                   help="an image of the person to replace (with --which reference)")
    add_common(p)
    add_settings_flags(p, ConvertSettings, only=SWAP_FIELDS, title="swap settings (override [convert])")
    add_settings_flags(p, LiveSettings, title="camera settings (override [live])")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changeling.errors import UserError
    from changeling.live import LiveOptions, live

    if not (args.output or args.virtual_camera or args.stats):
        raise UserError("nowhere to send the frames: give -o FILE, --virtual-camera or --stats")
    project, settings = project_and_settings(args, "convert")
    live_settings = with_flags(project.settings().live, flags_of(args, LiveSettings))
    if args.swap_direction:
        settings = dataclasses.replace(settings, direction="b2a")
    options = LiveOptions(input=args.input, camera=args.camera, output=args.output,
                          virtual_camera=args.virtual_camera, model_dir=args.model, reference=args.reference or ())
    report = live(project, settings, live_settings, options)
    if report.output:
        print(f"{report.output}: {report.frames} frames")
    if args.stats:
        if args.json:
            print(json.dumps({**report.to_dict(), "stages_ms": report.stage_ms()}))
        else:
            print(report.summary())
            print("per frame (ms): " + ", ".join(f"{k} {v}" for k, v in report.stage_ms().items()))
    return 0
