"""``changeling faces clean|sort|cluster``: tend the faces folders."""

from __future__ import annotations

import argparse

from changeling.cli.common import add_common, not_built, project_and_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faces", help="clean, sort or cluster a faces folder")
    fsub = p.add_subparsers(dest="faces_command", metavar="ACTION", required=True)
    for name, text in (("clean", "drop alignment entries of faces deleted from the folder"),
                       ("sort", "order faces for pruning by renaming with a prefix"),
                       ("cluster", "group faces by identity into subfolders")):
        q = fsub.add_parser(name, help=text, description=text)
        q.add_argument("--side", required=True, choices=["A", "B"], help="which faces folder")
        if name == "sort":
            q.add_argument("--by", choices=["identity", "blur", "yaw", "size"], default="blur", help="sort key")
        add_common(q)
        q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.faces_command == "clean":
        return clean(args)
    return not_built(f"faces {args.faces_command}")


def clean(args: argparse.Namespace) -> int:
    """Remove from every alignments file of this side the entries whose face files were deleted."""
    from changeling.faces.store import AlignmentStore

    project, _ = project_and_settings(args, "extract")
    faces_dir = project.faces_dir(args.side)
    total = 0
    stores = sorted(project.alignments_dir.glob(f"*.{args.side}.sqlite")) if project.alignments_dir.is_dir() else []
    for path in stores:
        with AlignmentStore.open_existing(path) as store:
            if store.side != args.side:
                continue
            removed = store.clean(faces_dir)
        if removed:
            print(f"{path.name}: removed {removed} entries of deleted faces")
        total += removed
    print(f"faces clean: {total} entries removed ({len(stores)} alignments files of side {args.side} checked)")
    return 0
