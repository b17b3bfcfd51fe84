"""``changeling faces clean|sort|cluster``: tend the faces folders."""

from __future__ import annotations

import argparse

from changeling.cli.common import add_common, project_and_settings
from changeling.vocab import SIDES, SORT_KEYS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faces", help="clean, sort or cluster a faces folder")
    fsub = p.add_subparsers(dest="faces_command", metavar="ACTION", required=True)
    for name, text in (("clean", "drop alignment entries of faces deleted from the folder"),
                       ("sort", "order faces for pruning by renaming with a prefix"),
                       ("cluster", "group faces by identity into subfolders")):
        q = fsub.add_parser(name, help=text, description=text)
        q.add_argument("--side", required=True, choices=SIDES, help="which faces folder")
        if name == "sort":
            q.add_argument("--by", choices=SORT_KEYS, default="blur", help="sort key")
            q.add_argument("--undo", action="store_true", help="remove the sort prefixes again")
        if name == "cluster":
            q.add_argument("--gather", action="store_true",
                           help="move the faces of every cluster_NN subfolder back into the faces folder")
        add_common(q)
        q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.faces_command == "clean":
        return clean(args)
    if args.faces_command == "sort":
        return sort(args)
    return cluster(args)


def sort(args: argparse.Namespace) -> int:
    """Rename faces with an order prefix (blur, yaw, size need no extra; identity needs [identity])."""
    from changeling.identity import sort_faces, unsort_faces

    project, _ = project_and_settings(args, "extract")
    faces_dir = project.faces_dir(args.side)
    if args.undo:
        restored = unsort_faces(faces_dir)
        print(f"faces sort: {len(restored)} faces renamed back in {faces_dir}")
        return 0
    order = sort_faces(faces_dir, args.by, progress=not args.quiet)
    print(f"faces sort: {len(order)} faces in {faces_dir} ordered by {args.by} (prefix 0001_ is first); "
          "delete the ones you do not want, then `changeling faces sort --undo` if you like")
    return 0


def cluster(args: argparse.Namespace) -> int:
    """Group faces by identity into cluster_NN subfolders (needs the [identity] extra)."""
    from changeling.identity import gather_clusters, move_into_clusters

    project, _ = project_and_settings(args, "extract")
    faces_dir = project.faces_dir(args.side)
    if args.gather:
        moved = gather_clusters(faces_dir)
        print(f"faces cluster: {len(moved)} faces moved back into {faces_dir}")
        return 0
    from changeling.faces import list_faces

    clusters = move_into_clusters(faces_dir, progress=not args.quiet)
    for folder in clusters:
        print(f"  {folder.name}: {len(list_faces(folder))} faces")
    print(f"faces cluster: {len(clusters)} clusters in {faces_dir}; keep the right person's faces in {faces_dir} "
          "(move them back with --gather, delete the other folders)")
    return 0


def clean(args: argparse.Namespace) -> int:
    """Remove from every alignments file of this side the entries whose face files were deleted."""
    from changeling.faces.store import AlignmentStore

    project, _ = project_and_settings(args, "extract")
    faces_dir = project.faces_dir(args.side)
    total = 0
    stores = sorted(project.alignments_dir.glob(f"*.{args.side}.sqlite")) if project.alignments_dir.is_dir() else []
    for path in stores:
        with AlignmentStore.open_existing(path, writable=True) as store:
            if store.side != args.side:
                continue
            removed = store.clean(faces_dir)
        if removed:
            print(f"{path.name}: removed {removed} entries of deleted faces")
        total += removed
    print(f"faces clean: {total} entries removed ({len(stores)} alignments files of side {args.side} checked)")
    return 0
