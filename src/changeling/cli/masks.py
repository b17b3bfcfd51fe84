"""``changeling masks train|import|export|info``: the occlusion segmenter and hand-corrected masks."""

from __future__ import annotations

import argparse
from pathlib import Path

from changeling.cli.common import add_common, add_settings_flags, project_and_settings
from changeling.config import MasksSettings
from changeling.vocab import SIDES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("masks", help="occlusion masks: train the segmenter, import or export hand corrections",
                       description=(
                           "The occlusion segmenter finds what covers a face (a hand, a microphone, glasses) so "
                           "convert keeps it in front (--mask occlusion, or combined) and training ignores it. It "
                           "learns from this project's faces with random occluders pasted on them; masks you "
                           "correct by hand (export, paint, import) fine-tune it."))
    msub = p.add_subparsers(dest="masks_command", metavar="ACTION", required=True)
    t = msub.add_parser("train", help="train the occlusion segmenter (again: fine-tune it on the corrections)",
                        description="Train the project's occlusion segmenter on its faces of both sides. Resumes an "
                        "interrupted run; on a finished segmenter, fine-tunes it (--finetune-steps), using the "
                        "hand-corrected masks. Saved to PROJECT/occlusion/segmenter.safetensors.")
    t.add_argument("--fresh", action="store_true", help="start a new segmenter instead of continuing this one")
    add_common(t)
    add_settings_flags(t, MasksSettings)
    t.set_defaults(func=train)
    i = msub.add_parser("import", help="store mask PNGs as hand corrections of the faces of the same name",
                        description="Each PNG (or each PNG in a folder) is the corrected mask of the face file of "
                        "the same name in PROJECT/faces/SIDE: white where the face is visible, black where "
                        "something covers it. Stored in PROJECT/faces/SIDE/masks/ by the face's identity, so they "
                        "survive `faces sort`, `faces cluster` and `faces clean`.")
    i.add_argument("masks", type=Path, nargs="+", help="mask PNGs or folders of them")
    i.add_argument("--side", required=True, choices=SIDES, help="whose faces they correct")
    add_common(i)
    i.set_defaults(func=import_)
    e = msub.add_parser("export", help="write every face's current occlusion mask as a PNG to correct by hand",
                        description="Write one grey PNG per face, named like the face file: its hand correction, "
                        "else the segmenter's mask, else the face outline. Paint them and `masks import` them.")
    e.add_argument("--side", required=True, choices=SIDES, help="which faces")
    e.add_argument("-o", "--output", type=Path, default=None,
                   help="folder to write (default: PROJECT/masks_export/SIDE)")
    add_common(e)
    e.set_defaults(func=export)
    n = msub.add_parser("info", help="what the project's segmenter and corrections are")
    add_common(n)
    n.set_defaults(func=info)


def train(args: argparse.Namespace) -> int:
    from changeling.occlusion.trainer import train_segmenter

    project, settings = project_and_settings(args, "masks")
    report = train_segmenter(project, settings, fresh=args.fresh, progress=not args.quiet)
    how = {"done": "done", "time": "stopped at --max-time (run again to go on)"}.get(report.stopped, report.stopped)
    print(f"{report.path}: step {report.step} ({report.steps_run} this run, {report.seconds:.0f} s), "
          f"{report.faces} faces, {report.corrections} hand-corrected, loss {report.loss:.3f}; {how}")
    return 0


def import_(args: argparse.Namespace) -> int:
    from changeling.occlusion.corrections import corrections_dir, import_masks, mask_files

    project, _ = project_and_settings(args, "masks")
    faces_dir = project.faces_dir(args.side)
    done = import_masks(faces_dir, mask_files(args.masks))
    print(f"masks import: {len(done)} corrected masks stored in {corrections_dir(faces_dir)}; "
          "`changeling masks train` fine-tunes the segmenter on them")
    return 0


def export(args: argparse.Namespace) -> int:
    from changeling.occlusion.project import export_masks, load_project_segmenter

    project, _ = project_and_settings(args, "masks")
    out = args.output or project.root / "masks_export" / args.side
    segmenter = load_project_segmenter(project.root)
    counts = export_masks(project, args.side, out, segmenter, progress=not args.quiet)
    print(f"masks export: {sum(counts.values())} masks in {out} ("
          + ", ".join(f"{v} from the {k}" for k, v in counts.items() if v) + ")")
    return 0


def info(args: argparse.Namespace) -> int:
    from changeling.occlusion.corrections import count_corrections
    from changeling.occlusion.store import read_segmenter, segmenter_path

    project, _ = project_and_settings(args, "masks")
    path = segmenter_path(project.root)
    if path.exists():
        s = read_segmenter(path).info
        print(f"segmenter: {path}: {s.config.resolution} px, width {s.config.width}, step {s.step} of "
              f"{s.target_step}, {s.seconds:.0f} s trained, on '{s.face_type}' faces at {s.face_size} px, "
              f"{s.corrections} hand-corrected")
    else:
        print(f"segmenter: none (train one with `changeling masks train --project {project.root}`)")
    for side in ("A", "B"):
        print(f"corrections of {side}: {count_corrections(project.faces_dir(side))}")
    return 0
