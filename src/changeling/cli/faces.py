"""``changeling faces clean|sort|cluster``: tend the faces folders."""

from __future__ import annotations

import argparse

from changeling.cli.common import add_common, not_built


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
    return not_built(f"faces {args.faces_command}")
