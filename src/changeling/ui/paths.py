"""File access of the web UI, confined: every path a page names or a handler returns is resolved (symlinks
followed) and refused unless it lies inside the folder it belongs to. :class:`FileGuard` applies the same rule
to Gradio's file routes, so a request such as ``/gradio_api/file=../../etc/passwd`` is answered 403 before
Gradio sees it, and makes every file it lets through that is not an image or a video a download, so a
project's ``.html`` or ``.svg`` never runs in the UI's origin."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from changeling.errors import UserError

# Gradio routes that read a file or a URL named in the request path (with and without the API prefix)
_FILE_ROUTE = re.compile(r"^(?:/gradio_api)?/(file=|file/|proxy=)(.*)$", re.S)
_URL_LIKE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
REFUSED = b"changeling: refused: only files inside the open project are served"
# what the file routes may serve for the browser to show: the images and videos the UI displays. Everything
# else (HTML, SVG, text, ...) is sent as a download.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/bmp", "image/webp", "image/gif", "image/tiff",
                          "video/mp4", "video/webm", "video/quicktime", "video/x-matroska", "video/x-msvideo",
                          "video/ogg"})


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or below it, both resolved (symlinks followed)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def confine(root: Path, candidate: str | os.PathLike[str], what: str = "file") -> Path:
    """``candidate`` (relative to ``root`` unless absolute) resolved, if it lies inside ``root``; else
    :class:`UserError`. Symlinks that lead out of ``root`` are refused too."""
    text = os.fspath(candidate)
    if not text or "\0" in text:
        raise UserError(f"no {what} given" if not text else f"bad {what} name")
    path = Path(text)
    full = (path if path.is_absolute() else Path(root) / path).resolve()
    if not is_within(full, root):
        raise UserError(f"{what} is outside the project folder {root}", path)
    return full


def servable(root: Path, candidate: str | os.PathLike[str]) -> Path | None:
    """What a handler may hand to the page: ``candidate`` resolved (symlinks followed), if it is a regular file
    inside ``root``; else ``None``. The page gets the resolved path, so a link swapped in later changes
    nothing."""
    try:
        full = confine(root, candidate)
    except UserError:
        return None
    return full if full.is_file() else None


def project_folder(home: Path, name: str) -> Path:
    """The project folder the UI may create or open for ``name`` typed by a user: inside ``home``."""
    name = name.strip()
    if not name:
        raise UserError("type a project folder name first")
    return confine(home, name, "project folder")


def safe_filename(name: str) -> str:
    """A file name for an upload: the last path part with anything unusual replaced; never empty or hidden."""
    base = Path(name.replace("\\", "/")).name
    clean = _SAFE_NAME.sub("_", base).strip(" .")
    return clean or "upload"


class FileGuard:
    """ASGI middleware: Gradio's file and proxy routes may serve only files inside ``roots()`` (the open
    project and Gradio's own upload folder). URLs (which Gradio would fetch from the internet) and anything
    else get 403."""

    def __init__(self, app: Any, roots: Callable[[], Sequence[Path]]) -> None:
        self.app = app
        self.roots = roots

    def allowed(self, route: str, target: str) -> bool:
        if route == "proxy=" or _URL_LIKE.match(target) or not target or "\0" in target:
            return False
        path = Path(os.path.abspath(target))  # as Gradio reads it: relative to the working folder
        return any(is_within(path, root) for root in self.roots())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        paths = _request_paths(scope)
        if not all(self._path_ok(p) for p in paths):
            await _forbidden(send)
            return
        if not any(_FILE_ROUTE.match(p) for p in paths):
            await self.app(scope, receive, send)
            return

        async def send_media_only(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": media_only(message.get("headers") or [])}
            await send(message)

        await self.app(scope, receive, send_media_only)

    def _path_ok(self, path: str) -> bool:
        m = _FILE_ROUTE.match(path)
        return m is None or self.allowed(m.group(1), m.group(2))


def media_only(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Response headers of a served file: kept for a type in :data:`INLINE_TYPES`; anything else becomes an
    ``application/octet-stream`` attachment. Always ``nosniff`` (the browser keeps to the type sent) and a
    sandbox policy (a file opened on its own runs no script in the UI's origin)."""

    def first(name: bytes) -> bytes:
        return next((v for k, v in headers if k.lower() == name), b"")

    inline = first(b"content-type").split(b";", 1)[0].strip().lower().decode("latin-1") in INLINE_TYPES
    drop = {b"x-content-type-options", b"content-security-policy"}
    if not inline:
        drop |= {b"content-type", b"content-disposition"}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out += [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", b"sandbox")]
    if not inline:
        _, sep, params = first(b"content-disposition").partition(b";")  # keep the file name Gradio gave
        out += [(b"content-type", b"application/octet-stream"),
                (b"content-disposition", b"attachment" + sep + params)]
    return out


def _request_paths(scope: dict[str, Any]) -> list[str]:
    """The request path as Starlette routes it and as the raw bytes decode, without any mount prefix."""
    paths = [str(scope.get("path", ""))]
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        paths.append(unquote(raw.decode("latin-1")).split("?", 1)[0])
    root_path = str(scope.get("root_path", ""))
    return [p[len(root_path):] if root_path and p.startswith(root_path) else p for p in paths]


async def _forbidden(send: Any) -> None:
    body = REFUSED
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
