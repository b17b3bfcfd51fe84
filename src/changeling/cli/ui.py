"""``changeling ui``: the web UI (needs the ``[ui]`` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from changeling.cli.common import add_common
from changeling.errors import UserError

log = logging.getLogger(__name__)

AUTH_ENV = "CHANGELING_UI_AUTH"
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb|tb)\s*$", re.I)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="open the web UI (pip install 'changeling[ui]')", description=(
        "Serve the web UI: projects, extract, train with a live preview, convert and verify in a browser. It "
        "binds to 127.0.0.1 (this machine only) unless --host says otherwise. The address it prints carries a "
        "random token drawn at each start: open that address (the browser then keeps a session cookie); "
        "without it the server answers nothing. Jobs started from the page are child processes that keep "
        "running when the page or the server closes; reopening shows them again."))
    p.add_argument("--project", "-p", type=Path, default=None,
                   help="project folder to open (created if missing); new projects are made next to it. Default: "
                        "projects live in the current folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind, and the name the browser must use (default: 127.0.0.1, this machine "
                        "only, reached as 127.0.0.1, localhost or [::1]; 0.0.0.0 exposes it to the network, "
                        "reached by any of this machine's addresses or its host name)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                   help=f"require this login (other users of this machine can read command lines; {AUTH_ENV} in "
                        "the environment keeps the password out of them)")
    p.add_argument("--max-upload", default="2gb", metavar="SIZE",
                   help="largest file the page accepts, e.g. 500mb or 2gb (default: 2gb)")
    add_common(p, project=False)
    p.set_defaults(func=run)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``USER:PASSWORD`` -> (user, password); the password may contain ':'. Both must be non-empty."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise UserError("--auth takes USER:PASSWORD with both parts non-empty")
    return user.strip(), password


def auth_from(arg: str | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The login from ``--auth``, else from the ``CHANGELING_UI_AUTH`` environment variable, else none."""
    return parse_auth(arg if arg is not None else environ.get(AUTH_ENV) or None)


def parse_size(text: str) -> str:
    """Check an upload limit such as ``500mb`` (Gradio's syntax); returned normalised."""
    m = _SIZE.match(text)
    if not m or int(m.group(1)) <= 0:
        raise UserError(f"--max-upload takes a size such as 500mb or 2gb, got {text!r}")
    return f"{int(m.group(1))}{m.group(2).lower()}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str, auth: tuple[str, str] | None) -> str | None:
    """The warning printed when the server would be reachable from other machines; ``None`` for loopback."""
    if is_loopback(host):
        return None
    msg = (f"warning: serving on {host}: other machines that can reach this one can open the UI, start jobs and "
           f"see the project's files")
    if auth is None:
        msg += "; there is no login (add --auth USER:PASSWORD)"
    return msg + "; the connection is not encrypted (plain HTTP)"


def run(args: argparse.Namespace) -> int:
    auth = auth_from(args.auth, os.environ)
    max_upload = parse_size(args.max_upload)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the web UI needs Gradio: pip install 'changeling[ui]'") from None
    from changeling.ui.app import ServeOptions, serve
    from changeling.ui.workspace import Workspace

    if args.project is not None:
        project = Path(args.project).resolve()
        ws = Workspace(project.parent, project.name)
    else:
        home = Path.cwd()
        ws = Workspace(home, "." if (home / "changeling.toml").is_file() else None)
    warning = host_warning(args.host, auth)
    if warning:
        print(f"changeling ui: {warning}")
    blocks = None
    try:  # Ctrl+C is the normal way to stop the server, whenever it comes
        try:
            blocks, url = serve(ws, ServeOptions(host=args.host, port=args.port, auth=auth, max_upload=max_upload))
        except OSError as exc:
            raise UserError(f"cannot serve on {args.host}:{args.port} ({exc})") from None
        print(f"changeling ui: open {url} in a browser (projects in {ws.home}; the token in the address is "
              "this run's key to the page); Ctrl+C stops the server")
        blocks.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        if blocks is not None:
            try:
                blocks.close()
            except KeyboardInterrupt:
                pass
    for root, kind in ws.running_jobs():
        print(f"changeling ui: the {kind} job of {root} keeps running; reopen the UI to follow or stop it")
    return 0
