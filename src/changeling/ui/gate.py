"""The UI server's front door: an ASGI wrapper every request passes before Gradio sees it.

Three checks, in order, each answered at once with a short plain-text refusal:

1. **Host.** The ``Host`` header must name this server as it was started: ``127.0.0.1``, ``localhost`` or
   ``[::1]`` with the port for a loopback bind; the ``--host`` value otherwise (for a wildcard bind such as
   ``0.0.0.0``, also any IP address and the machine's own names). A page whose name was rebound to 127.0.0.1
   (DNS rebinding) sends its own name and gets 421.
2. **Same origin.** A request that a browser marks as coming from another site (``Origin`` other than this
   server, ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``) gets 403: no cross-site uploads, job
   starts or reads, whatever the method.
3. **The launch token.** Every launch draws a random token; the address the CLI prints carries it
   (``/?token=...``). A request with the right token is redirected to the same address without it and gets
   a session cookie (HttpOnly, SameSite=Strict) holding a second random value; every other request must
   carry that cookie, else 401 (one exception: the route Gradio's launch calls on its own server). No other
   page can guess either value, and a strict cookie is never sent with a request started by another site.

Responses lose every ``Access-Control-*`` header on the way out (Gradio echoes request origins), so no other
origin may read them. Gradio's own ``--auth`` login works behind all this unchanged.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

TOKEN_PARAM = "token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "[::]", "")
_LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1", "[::1]")
ASGIApp = Any  # an ASGI callable: (scope, receive, send) -> awaitable
# Gradio's launch() calls this route of its own server (without the cookie) and fails unless it answers; it
# only runs the startup events once, and says whether it did
STARTUP_ROUTE = "/gradio_api/startup-events"


def _bracket(name: str) -> str:
    """An address as it appears in a ``Host`` header: IPv6 in brackets, names lower case."""
    name = name.strip().lower()
    try:
        if ipaddress.ip_address(name.strip("[]")).version == 6:
            return f"[{name.strip('[]')}]"
    except ValueError:
        pass
    return name


def host_names(bind: str) -> tuple[frozenset[str], bool]:
    """The names a browser may use for a server bound to ``bind`` (as in ``Host``, without the port), and
    whether any IP address counts too (a wildcard bind, reachable at every address of the machine).

    An IP address cannot be rebound, so accepting any for a wildcard bind lets no foreign page in; a name can,
    so only this machine's own names are added."""
    bind = bind.strip().lower()
    if bind in _LOOPBACK_BINDS:
        return frozenset(LOOPBACK_NAMES), False
    if bind in WILDCARD_BINDS:
        own = {socket.gethostname(), socket.getfqdn()}
        return frozenset({*LOOPBACK_NAMES, *(n.lower() for n in own if n)}), True
    return frozenset({_bracket(bind)}), False


def split_host(header: str) -> tuple[str, int] | None:
    """``Host`` header -> (name, port); the port defaults to 80. ``None`` when it cannot be parsed."""
    header = header.strip().lower()
    if header.startswith("["):
        name, sep, rest = header.partition("]")
        name, port_text = name + "]", rest[1:] if rest.startswith(":") else rest
        if not sep or (rest and not rest.startswith(":")):
            return None
    else:
        name, _, port_text = header.partition(":")
    if not name or name == "[]":
        return None
    if not port_text:
        return name, 80
    if not port_text.isdigit() or len(port_text) > 5:
        return None
    return name, int(port_text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
    except ValueError:
        return False
    return ":" not in name or name.startswith("[")  # IPv6 only in brackets, as browsers send it


@dataclass(frozen=True)
class Site:
    """What the gate lets in: the server's names and port, and this launch's secrets."""

    names: frozenset[str]
    port: int
    any_ip: bool = False
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    session: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    @classmethod
    def for_bind(cls, bind: str, port: int) -> Site:
        names, any_ip = host_names(bind)
        return cls(names=names, port=port, any_ip=any_ip)

    @property
    def cookie(self) -> str:
        # one cookie per port: two servers on one machine (cookies ignore ports) keep their sessions apart
        return f"changeling-ui-{self.port}"

    def host_ok(self, header: str) -> bool:
        parsed = split_host(header)
        if parsed is None or parsed[1] != self.port:
            return False
        return parsed[0] in self.names or (self.any_ip and _is_ip(parsed[0]))

    def url(self, base: str) -> str:
        """``base`` (the server's address) with this launch's token: the address the CLI prints."""
        return f"{base.rstrip('/')}/?{urlencode({TOKEN_PARAM: self.token})}"

    def set_cookie(self) -> str:
        return f"{self.cookie}={self.session}; Path=/; HttpOnly; SameSite=Strict"


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    """Request headers, names lower case; a repeated header keeps its first value (as a browser sends one)."""
    out: dict[str, str] = {}
    for k, v in scope.get("headers") or []:
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name.strip(), value.strip())
    return out


def _same_path(scope: dict[str, Any]) -> str:
    """The request's path, still percent-encoded, as a path on this server (never ``//host``)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(str(scope.get("root_path", "")) +
                                                                       str(scope.get("path", "/")))
    return "/" + path.split("?", 1)[0].lstrip("/")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Verdict:
    """What the gate does with a request: pass it on (``status`` 0), redirect it, or refuse it."""

    status: int = 0
    reason: str = ""
    location: str = ""
    set_cookie: str = ""


def judge(site: Site, scope: dict[str, Any]) -> Verdict:
    """The gate's decision for one HTTP or WebSocket request (a pure function of the request)."""
    h = _headers(scope)
    host = h.get("host", "")
    if not site.host_ok(host):
        names = ", ".join(sorted(f"{n}:{site.port}" for n in site.names))
        return Verdict(421, f"this server answers only to {names}, not to {host or 'a request without Host'} "
                            "(a guard against DNS rebinding)")
    origin = h.get("origin")
    if origin is not None and origin.lower() not in (f"http://{host.lower()}", f"https://{host.lower()}"):
        return Verdict(403, f"requests from another site ({origin}) are not accepted")
    fetch_site = h.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return Verdict(403, f"requests started by another site ({fetch_site}) are not accepted; open the address "
                            "that changeling ui printed")
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    given = [v for k, v in query if k == TOKEN_PARAM]
    if given and scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD"):
        if not _same(given[0], site.token):
            return Verdict(403, "wrong launch token; open the address that changeling ui printed")
        rest = urlencode([(k, v) for k, v in query if k != TOKEN_PARAM])
        return Verdict(303, "", location=_same_path(scope) + (f"?{rest}" if rest else ""),
                       set_cookie=site.set_cookie())
    if scope.get("method") == "GET" and scope.get("path") == STARTUP_ROUTE and not query:
        return Verdict()
    cookie = _cookies(h.get("cookie", "")).get(site.cookie)
    if cookie is None or not _same(cookie, site.session):
        return Verdict(401, "open the address that changeling ui printed: it carries this launch's token")
    return Verdict()


class Gate:
    """ASGI wrapper applying :func:`judge` to every HTTP and WebSocket request, and removing the
    ``Access-Control-*`` headers of every response."""

    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app = app
        self.site = site

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        verdict = judge(self.site, scope)
        if verdict.status and kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the handshake gets 403
            return
        if verdict.status:
            await _answer(send, verdict)
            return

        async def send_without_cors(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": list(_strip_cors(message.get("headers") or []))}
            await send(message)

        await self.app(scope, receive, send_without_cors if kind == "http" else send)


def _strip_cors(headers: Iterable[tuple[bytes, bytes]]) -> Iterable[tuple[bytes, bytes]]:
    return ((k, v) for k, v in headers if not k.lower().startswith(b"access-control-"))


async def _answer(send: Any, verdict: Verdict) -> None:
    body = f"changeling: refused: {verdict.reason}\n".encode() if verdict.reason else b""
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    if verdict.location:
        headers.append((b"location", verdict.location.encode("latin-1", "replace")))
    if verdict.set_cookie:
        headers.append((b"set-cookie", verdict.set_cookie.encode()))
    await send({"type": "http.response.start", "status": verdict.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
