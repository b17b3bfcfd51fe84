"""``changeling ui``: the web UI (needs the ``[ui]`` extra)."""

from __future__ import annotations

import argparse

from changeling.cli.common import add_common, not_built


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="open the web UI (pip install 'changeling[ui]')", description=(
        "Serve the web UI. It binds to 127.0.0.1 unless --host says otherwise."))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="require this login")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return not_built("ui")
