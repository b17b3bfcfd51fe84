"""The web UI's parts without a browser: path confinement (and the file-route guard), the job runner (start,
refuse a second job, stop as Ctrl+C, state that survives a reload or a server restart, a planted job file),
the UI's commands checked against the real CLI parser, state read from a project, auth and host options, the
gate (host names, launch token, same origin), and the server itself: what it refuses, what it serves inline,
what its handlers hand out through links, and the ``ui`` command serving on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from changeling.cli import build_parser
from changeling.config import ConvertSettings, TrainSettings
from changeling.config.core import parse_duration
from changeling.errors import UserError
from changeling.project import init_project
from changeling.ui.jobs import UNKNOWN_EXIT, JobRunner, JobState
from changeling.ui.paths import FileGuard, confine, is_within, project_folder, safe_filename

# ---- path confinement ----------------------------------------------------------------------------------------


def test_confine_accepts_paths_inside_and_refuses_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "faces" / "A").mkdir(parents=True)
    (root / "faces" / "A" / "f.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("s")
    assert confine(root, "faces/A/f.png") == (root / "faces" / "A" / "f.png").resolve()
    assert confine(root, str(root / "faces" / "A" / "f.png")) == (root / "faces/A/f.png").resolve()
    assert confine(root, "faces/A/../A/f.png") == (root / "faces/A/f.png").resolve()
    assert confine(root, ".") == root.resolve()
    for bad in ["../secret.txt", "faces/../../secret.txt", str(tmp_path / "secret.txt"), "/etc/passwd",
                str(root) + "/../secret.txt", "", "a\0b"]:
        with pytest.raises(UserError):
            confine(root, bad)
    # a sibling folder whose name starts like the root is outside too
    (tmp_path / "proj2").mkdir()
    with pytest.raises(UserError, match="outside"):
        confine(root, str(tmp_path / "proj2"))


def test_confine_refuses_symlinks_that_lead_out(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("s")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "dirlink").symlink_to(tmp_path)
    (root / "inner.txt").write_text("i")
    (root / "ok-link").symlink_to(root / "inner.txt")
    for bad in ["link.txt", "dirlink/secret.txt"]:
        with pytest.raises(UserError):
            confine(root, bad)
    assert confine(root, "ok-link") == (root / "inner.txt").resolve()
    assert not is_within(root / "link.txt", root)


def test_project_folders_stay_inside_home(tmp_path: Path) -> None:
    assert project_folder(tmp_path, " swap ") == (tmp_path / "swap").resolve()
    assert project_folder(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    assert project_folder(tmp_path, ".") == tmp_path.resolve()
    for bad in ["", "  ", "..", "../x", "/etc", "a/../../x"]:
        with pytest.raises(UserError):
            project_folder(tmp_path, bad)


def test_safe_filename() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\me\\clip.mp4") == "clip.mp4"
    assert safe_filename("my clip (1).mp4") == "my clip _1_.mp4"
    assert safe_filename("...") == "upload"
    assert safe_filename(".hidden") == "hidden"


def _asgi_status(guard: FileGuard, path: str, raw: bytes | None = None) -> int:
    """Status of a GET through the guard; the app behind it answers 200."""
    sent: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    guard.app = app
    scope = {"type": "http", "path": path, "raw_path": raw if raw is not None else path.encode(), "root_path": ""}
    asyncio.run(guard(scope, receive, send))
    return int(sent[0]["status"])


def test_file_guard(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "a.png").write_bytes(b"x")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    guard = FileGuard(None, roots=lambda: [root, uploads])
    assert _asgi_status(guard, f"/gradio_api/file={root}/a.png") == 200
    assert _asgi_status(guard, f"/gradio_api/file={uploads}/x/b.mp4") == 200
    assert _asgi_status(guard, "/gradio_api/queue/join") == 200  # other routes pass through
    assert _asgi_status(guard, "/") == 200
    for bad in ["/gradio_api/file=/etc/passwd", f"/gradio_api/file={root}/../secret",
                "/gradio_api/file=../../../../etc/passwd", "/gradio_api/file/etc/passwd",
                "/file=/etc/passwd", "/gradio_api/file=http://example.com/a.png",
                "/gradio_api/file=https://example.com/a.png", "/gradio_api/proxy=https://example.com/a",
                f"/gradio_api/proxy={root}/a.png"]:
        assert _asgi_status(guard, bad) == 403, bad
    # percent-encoded dots in the raw path are decoded before the check
    assert _asgi_status(guard, f"/gradio_api/file={root}/a.png",
                        raw=f"/gradio_api/file={root}/%2e%2e/%2e%2e/etc/passwd".encode()) == 403
    # with no project open, only uploads are served
    guard_none = FileGuard(None, roots=lambda: [uploads])
    assert _asgi_status(guard_none, f"/gradio_api/file={root}/a.png") == 403


def test_file_routes_serve_only_images_and_videos_inline(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()

    def serving(ctype: str, disposition: str) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", ctype.encode()),
                                    (b"content-disposition", disposition.encode())]})
            await send({"type": "http.response.body", "body": b"<svg onload=alert(1)>"})
        return FileGuard(app, roots=lambda: [root])

    for ctype, name in [("text/html; charset=utf-8", "a.html"), ("image/svg+xml", "a.svg"),
                        ("application/xhtml+xml", "a.xhtml"), ("text/xml", "a.xml"), ("text/plain", "a.txt"),
                        ("application/pdf", "a.pdf"), ("", "a")]:
        code, headers, _ = _asgi(serving(ctype, f'inline; filename="{name}"'), "GET",
                                 f"/gradio_api/file={root}/{name}", {})
        assert code == 200 and headers["content-type"] == "application/octet-stream", (ctype, headers)
        assert headers["content-disposition"] == f'attachment; filename="{name}"'
        assert headers["x-content-type-options"] == "nosniff"
    for ctype, name in [("image/png", "a.png"), ("image/jpeg", "a.jpg"), ("video/mp4", "a.mp4"),
                        ("video/webm", "a.webm")]:
        _, headers, _ = _asgi(serving(ctype, f'inline; filename="{name}"'), "GET",
                              f"/gradio_api/file={root}/{name}", {})
        assert headers["content-type"] == ctype and headers["content-disposition"].startswith("inline")
        assert headers["x-content-type-options"] == "nosniff" and headers["content-security-policy"] == "sandbox"
    # other routes keep their types (the page itself is HTML)
    _, headers, _ = _asgi(serving("text/html", "inline"), "GET", "/", {})
    assert headers["content-type"] == "text/html"


def test_servable_resolves_links_and_keeps_to_the_project(tmp_path: Path) -> None:
    from changeling.ui.paths import servable

    root = tmp_path / "proj"
    (root / "faces" / "A").mkdir(parents=True)
    face = root / "faces" / "A" / "f.png"
    face.write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"s")
    (root / "faces" / "A" / "out.png").symlink_to(tmp_path / "secret.png")
    (root / "faces" / "A" / "in.png").symlink_to(face)
    (root / "faces" / "A" / "dir.png").mkdir()
    assert servable(root, face) == face.resolve()
    assert servable(root, root / "faces" / "A" / "in.png") == face.resolve()  # the page gets the real file
    for bad in [root / "faces" / "A" / "out.png", tmp_path / "secret.png", root / "faces" / "A" / "dir.png",
                root / "faces" / "A" / "missing.png", "faces/../../secret.png", ""]:
        assert servable(root, bad) is None, bad


# ---- the gate: host names, launch token, same origin -----------------------------------------------------------


def test_gate_answers_only_to_the_names_the_server_was_started_for() -> None:
    from changeling.ui.gate import Site

    site = Site.for_bind("127.0.0.1", 7860)
    for ok in ["127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST:7860"]:
        assert site.host_ok(ok), ok
    for bad in ["evil.example:7860", "127.0.0.1:7861", "127.0.0.1", "localhost.:7860", "", "127.0.0.1:7860:1",
                "[::1", "[::1]x:7860", "evil.example", "192.168.1.5:7860", "127.0.0.2:7860", ":7860",
                "localhost:+7860", "localhost:07860x"]:
        assert not site.host_ok(bad), bad
    assert Site.for_bind("localhost", 80).host_ok("localhost")  # a browser leaves out port 80
    # another address: that name only
    lan = Site.for_bind("192.168.1.5", 7860)
    assert lan.host_ok("192.168.1.5:7860")
    assert not lan.host_ok("localhost:7860") and not lan.host_ok("evil.example:7860")
    assert Site.for_bind("::1", 7860).host_ok("[::1]:7860")
    # a wildcard bind: any address (an address cannot be rebound) and this machine's names, no other name
    anywhere = Site.for_bind("0.0.0.0", 7860)
    for ok in ["192.168.1.5:7860", "10.0.0.2:7860", "[fe80::1]:7860", "localhost:7860",
               f"{socket.gethostname()}:7860"]:
        assert anywhere.host_ok(ok), ok
    for bad in ["evil.example:7860", "192.168.1.5:80", "fe80::1:7860"]:
        assert not anywhere.host_ok(bad), bad


def _asgi(app: Any, method: str, path: str, headers: dict[str, str], kind: str = "http",
          query: str = "") -> tuple[int, dict[str, str], bytes]:
    """One request through an ASGI app: (status, response headers, body); a WebSocket refused before its
    handshake reads as 403."""
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": kind, "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": query.encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    if sent[0]["type"] == "websocket.close":
        return 403, {}, b""
    if sent[0]["type"] == "websocket.accept":
        return 101, {}, b""
    out = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return int(sent[0]["status"]), out, b"".join(m.get("body", b"") for m in sent[1:])


async def _echoing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands for Gradio: accepts WebSockets, answers HTTP with 200 and the CORS headers Gradio would add."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    origin = dict(scope["headers"]).get(b"origin", b"*")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"access-control-allow-origin", origin),
                            (b"access-control-allow-credentials", b"true"), (b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_gate_trades_the_launch_token_for_a_strict_cookie_and_requires_it() -> None:
    from changeling.ui.gate import Gate, Site

    site = Site.for_bind("127.0.0.1", 7860)
    gate = Gate(_echoing_app, site)
    host = {"Host": "127.0.0.1:7860"}
    url = site.url("http://127.0.0.1:7860/")
    assert url.startswith("http://127.0.0.1:7860/?token=") and site.token in url
    assert Site.for_bind("127.0.0.1", 7860).token != site.token  # every launch draws its own
    # the printed address: a redirect to the same page without the token, with the session cookie
    code, headers, _ = _asgi(gate, "GET", "/", host, query=f"__theme=dark&token={site.token}")
    assert code == 303 and headers["location"] == "/?__theme=dark"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{site.cookie}={site.session};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and site.token not in cookie
    jar = {**host, "Cookie": f"other=1; {site.cookie}={site.session}"}
    assert _asgi(gate, "GET", "/config", jar)[0] == 200
    assert _asgi(gate, "POST", "/gradio_api/queue/join", jar)[0] == 200
    # without it, or with a wrong one, nothing passes: pages, files, uploads, WebSockets
    for headers in [host, {**host, "Cookie": f"{site.cookie}=guess"}, {**host, "Cookie": f"{site.cookie}="}]:
        for method, path in [("GET", "/"), ("GET", "/config"), ("POST", "/gradio_api/upload"),
                             ("GET", "/gradio_api/file=/tmp/x.png"), ("POST", "/gradio_api/queue/join")]:
            assert _asgi(gate, method, path, headers)[0] == 401, (method, path, headers)
        assert _asgi(gate, "GET", "/ws", headers, kind="websocket")[0] == 403
    assert _asgi(gate, "GET", "/", host, query="token=guess")[0] == 403
    assert _asgi(gate, "GET", "/ws", jar, kind="websocket")[0] == 101
    # a token in a POST is not traded (only the address a user opens carries it)
    assert _asgi(gate, "POST", "/gradio_api/upload", host, query=f"token={site.token}")[0] == 401
    # the one route Gradio's launch() calls on its own server
    assert _asgi(gate, "GET", "/gradio_api/startup-events", host)[0] == 200
    # a redirect never leaves the server, whatever the path looks like
    code, headers, _ = _asgi(gate, "GET", "//evil.example/x", host, query=f"token={site.token}")
    assert code == 303 and headers["location"] == "/evil.example/x"


def test_gate_refuses_other_sites_and_sends_no_cors_headers() -> None:
    from changeling.ui.gate import Gate, Site

    site = Site.for_bind("127.0.0.1", 7860)
    gate = Gate(_echoing_app, site)
    jar = {"Host": "127.0.0.1:7860", "Cookie": f"{site.cookie}={site.session}"}
    # DNS rebinding: the right cookie cannot come with another name, but the name alone is refused
    code, _, body = _asgi(gate, "GET", "/config", {**jar, "Host": "evil.example:7860"})
    assert code == 421 and b"DNS rebinding" in body
    assert _asgi(gate, "GET", "/ws", {**jar, "Host": "evil.example:7860"}, kind="websocket")[0] == 403
    # another site's page (another port of this machine included), whatever it asks
    for origin in ["http://evil.example", "http://localhost:3000", "http://127.0.0.1:7861", "null",
                   "https://127.0.0.1:7860.evil.example"]:
        for method, path in [("POST", "/gradio_api/upload"), ("GET", "/config"), ("OPTIONS", "/config")]:
            code, headers, _ = _asgi(gate, method, path, {**jar, "Origin": origin})
            assert code == 403 and not any(k.startswith("access-control") for k in headers), (origin, method)
        assert _asgi(gate, "GET", "/ws", {**jar, "Origin": origin}, kind="websocket")[0] == 403
    for fetch_site in ["cross-site", "same-site"]:
        assert _asgi(gate, "POST", "/gradio_api/upload", {**jar, "Sec-Fetch-Site": fetch_site})[0] == 403
    # this server's own page: passes, and Gradio's CORS headers are removed on the way out
    for extra in [{"Origin": "http://127.0.0.1:7860"}, {"Sec-Fetch-Site": "same-origin"},
                  {"Sec-Fetch-Site": "none"}, {}]:
        code, headers, body = _asgi(gate, "POST", "/gradio_api/upload", {**jar, **extra})
        assert code == 200 and body == b"ok", extra
        assert not any(k.startswith("access-control") for k in headers), headers


# ---- the job runner ------------------------------------------------------------------------------------------
# A stand-in for a long ``changeling train``: progress with carriage returns; on Ctrl+C it "saves" and exits 130.
FAKE_JOB = r"""
import signal, sys, time
def stop(*_):
    print("saved at step", n, flush=True)
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
n = 0
mode = sys.argv[1] if len(sys.argv) > 1 else "loop"
if mode == "fail":
    print("bad input", flush=True)
    sys.exit(2)
if mode == "quick":
    print("done", flush=True)
    sys.exit(0)
while True:
    n += 1
    sys.stdout.write(f"\rstep {n}")
    sys.stdout.flush()
    time.sleep(0.02)
"""


def fake_command() -> list[str]:
    return [sys.executable, "-c", FAKE_JOB]


def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_job_runs_is_alone_and_stops_like_ctrl_c(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path, fake_command())
    assert runner.state.status_line() == "no job has run yet"
    job = runner.start("train", ["loop"])
    assert job.running and job.pid > 0
    with pytest.raises(UserError, match="already running"):
        runner.start("extract A", ["quick"])
    wait_for(lambda: "step 3" in runner.tail() or "step 4" in runner.tail())
    assert runner.tail().count("\n") == 0  # carriage-return progress collapses to one line
    on_disk = json.loads(runner.state_path.read_text())
    assert on_disk["pid"] == job.pid and on_disk["returncode"] is None and on_disk["kind"] == "train"
    state = runner.stop(timeout=10)
    assert state.returncode == 130 and not state.running
    assert "saved at step" in runner.tail()
    assert "stopped" in state.status_line()
    assert json.loads(runner.state_path.read_text())["returncode"] == 130
    # the next job may start now; its outcome is recorded
    runner.start("extract A", ["fail"])
    assert runner.wait(20).returncode == 2
    assert "failed (exit 2)" in runner.state.status_line()
    assert runner.tail() == "bad input"


def test_job_state_survives_a_page_reload_and_a_new_runner(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path, fake_command())
    job = runner.start("train", ["loop"])
    # a second runner on the same folder (a reloaded page of a restarted server) sees the running job ...
    again = JobRunner(tmp_path, fake_command())
    assert again.state.running and again.state.pid == job.pid and again.state.kind == "train"
    with pytest.raises(UserError, match="already running"):
        again.start("convert", ["quick"])
    runner.stop(timeout=10)
    # ... and, once it ended, its outcome (here read back from the state file written by the first runner)
    third = JobRunner(tmp_path, fake_command())
    assert third.state.returncode == 130 and not third.state.running


def test_a_job_outlives_its_server_and_can_still_be_stopped(tmp_path: Path) -> None:
    # a separate process plays the server: it starts the job and exits at once (the job is in its own session)
    starter = ("import sys; from pathlib import Path; from changeling.ui.jobs import JobRunner; "
               f"r = JobRunner(Path({str(tmp_path)!r}), [sys.executable, '-c', {FAKE_JOB!r}]); "
               "print(r.start('train', ['loop']).pid)")
    out = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=60, check=True)
    pid = int(out.stdout.strip())
    try:
        runner = JobRunner(tmp_path, fake_command())
        assert runner.state.running and runner.state.pid == pid
        wait_for(lambda: "step" in runner.tail())
        state = runner.stop(timeout=10)
        assert state.returncode == 130 and "stopped" in state.status_line()
        wait_for(lambda: not _runs(pid))
    finally:
        if _runs(pid):
            os.kill(pid, signal.SIGKILL)


def _runs(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_job_that_ended_unseen_is_reported_as_such(tmp_path: Path) -> None:
    state = JobState(kind="train", argv=["python", "-m", "changeling", "train"], pid=_dead_pid(), started=1.0)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "ui_job.json").write_text(json.dumps(state.__dict__))
    runner = JobRunner(tmp_path, fake_command())
    assert runner.state.returncode == UNKNOWN_EXIT and not runner.state.running
    assert "outcome unknown" in runner.state.status_line()
    # a live pid that runs another program is not taken for the job either
    other = JobState(kind="train", argv=["not", "this"], pid=os.getpid(), started=1.0)
    (tmp_path / "logs" / "ui_job.json").write_text(json.dumps(other.__dict__))
    assert JobRunner(tmp_path, fake_command()).state.returncode == UNKNOWN_EXIT


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_job_records_what_identifies_its_process(tmp_path: Path) -> None:
    from changeling.ui.jobs import is_job, parse_state

    runner = JobRunner(tmp_path, fake_command())
    job = runner.start("train", ["loop"])
    try:
        stat = Path(f"/proc/{job.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert job.ticks == int(stat[19]) > 0 and int(stat[2]) == job.pid  # field 22: start time; 5: group
        assert job.boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip() and len(job.nonce) == 32
        on_disk = parse_state(json.loads(runner.state_path.read_text()))
        assert on_disk == job and is_job(on_disk)
        for change in [{"ticks": job.ticks + 1}, {"nonce": "0" * 32}, {"boot": "another boot"},
                       {"argv": [*job.argv, "x"]}, {"nonce": ""}, {"pid": job.pid + 100000}]:
            assert not is_job(JobState(**{**job.__dict__, **change})), change
    finally:
        runner.stop(timeout=10)
    assert not is_job(job)  # ended


VICTIM = "import time\nwhile True:\n    time.sleep(0.05)\n"


def _victim(*, leader: bool) -> subprocess.Popen[bytes]:
    """An unrelated process of this user that a planted job file names; ``leader``: in its own group."""
    return subprocess.Popen([sys.executable, "-c", VICTIM], start_new_session=leader)


def _plant(project: Path, state: dict[str, Any] | list[Any] | str) -> None:
    (project / "logs").mkdir(exist_ok=True)
    (project / "logs" / "ui_job.json").write_text(json.dumps(state))


def _stop_returns(runner: JobRunner) -> JobState:
    """``runner.stop()`` in a thread; fails if it has not returned after 60 s (it used to wait forever)."""
    result: list[JobState] = []
    t = threading.Thread(target=lambda: result.append(runner.stop(timeout=2)), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive() and result, "stop() did not return"
    return result[0]


@pytest.mark.parametrize("leader", [True, False])
def test_a_planted_job_file_makes_stop_signal_nothing(tmp_path: Path, leader: bool) -> None:
    victim = _victim(leader=leader)
    try:
        argv = [sys.executable, "-c", VICTIM]
        ticks = int(Path(f"/proc/{victim.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        # what a planted file may know: the pid and command line, even (another user) the start time and boot
        for planted in [{"kind": "train", "argv": argv, "pid": victim.pid, "started": 1.0},
                        {"kind": "train", "argv": argv, "pid": victim.pid, "started": 1.0, "ticks": ticks,
                         "boot": boot, "nonce": "guessed"}]:
            _plant(tmp_path, planted)
            runner = JobRunner(tmp_path, fake_command())
            state = _stop_returns(runner)
            assert not state.running and state.returncode == UNKNOWN_EXIT
            assert victim.poll() is None, "the planted file's process was signalled"
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("planted", [
    {"kind": "train", "pid": "4242"}, {"kind": "train", "pid": True}, {"kind": "train", "pid": 1 << 80},
    {"kind": "train", "pid": -1}, {"kind": "train", "argv": 5, "pid": 4242},
    {"kind": ["train"], "pid": 4242}, {"kind": "train", "pid": 4242, "started": "yesterday"},
    {"kind": "train", "pid": 4242, "returncode": "none"}, {"kind": "train", "pid": 4242, "ticks": "x"},
    {"kind": "train", "pid": 4242, "started": float("inf")}, {"kind": "train", "pid": 4242, "argv": ["a\u0000b"]},
    [1, 2], "text", 7, None])
def test_a_garbage_job_file_is_ignored(tmp_path: Path, planted: Any) -> None:
    _plant(tmp_path, planted)
    runner = JobRunner(tmp_path, fake_command())
    assert not runner.state.running and runner.state.status_line() == "no job has run yet"
    assert not _stop_returns(runner).running
    assert runner.start("convert", ["quick"]).running  # and a job can start over it
    assert runner.wait(20).returncode == 0


def test_a_planted_dead_or_reused_pid_is_not_the_job(tmp_path: Path) -> None:
    # a pid whose process ended, and one that a process started later took over (same command line)
    runner = JobRunner(tmp_path, fake_command())
    job = runner.start("train", ["loop"])
    runner.stop(timeout=10)
    for pid in [_dead_pid(), job.pid]:
        _plant(tmp_path, {**job.__dict__, "pid": pid, "returncode": None})
        assert _stop_returns(JobRunner(tmp_path, fake_command())).returncode == UNKNOWN_EXIT
    other = subprocess.Popen(job.argv, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        _plant(tmp_path, {**job.__dict__, "pid": other.pid, "returncode": None})
        assert _stop_returns(JobRunner(tmp_path, fake_command())).returncode == UNKNOWN_EXIT
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# ---- the commands the UI runs are valid CLI commands -----------------------------------------------------------


def test_train_args_parse_with_the_cli(tmp_path: Path) -> None:
    from changeling.ui.commands import train_args
    from changeling.ui.tab_train import FIELDS

    project = init_project(tmp_path / "p")
    settings = TrainSettings(preset="df", batch_size=4, lr=3e-4, preview_every=5, save_every=50, device="cpu",
                             flip=False)
    ns = build_parser().parse_args(train_args(project, settings, FIELDS, current_step=120, steps=30, minutes=1.5))
    assert ns.command == "train" and ns.project == project.root
    assert (ns.preset, ns.batch_size, ns.lr, ns.preview_every, ns.save_every, ns.device) == \
        ("df", 4, 3e-4, 5, 50, "cpu")
    assert ns.flip is None  # not on the tab: the project's changeling.toml decides
    assert int(ns.max_steps) == 150  # 30 more steps after the model's 120
    assert parse_duration(ns.max_time) == 90.0
    ns = build_parser().parse_args(train_args(project, settings, FIELDS, current_step=120, steps=0, minutes=0))
    assert int(ns.max_steps) == 0 and parse_duration(ns.max_time) == 0.0  # no limits: until stopped
    with pytest.raises(UserError):
        train_args(project, settings, FIELDS, 0, -1, 0)


def test_extract_and_convert_args_parse_with_the_cli(tmp_path: Path) -> None:
    from changeling.config import ExtractSettings
    from changeling.ui import tab_convert, tab_extract
    from changeling.ui.commands import convert_args, extract_args

    project = init_project(tmp_path / "p")
    clip = project.root / "inputs" / "a.mp4"
    es = ExtractSettings(size=64, face_type="full", detector="short", every_nth=2, max_faces=3)
    ns = build_parser().parse_args(extract_args(project, "B", [clip], es, tab_extract.FIELDS))
    assert (ns.command, ns.side, ns.inputs, int(ns.size), ns.face_type, ns.detector, int(ns.every_nth)) == \
        ("extract", "B", [clip], 64, "full", "short", 2)
    assert ns.max_faces is None  # not on the tab
    with pytest.raises(UserError):
        extract_args(project, "C", [clip], es, tab_extract.FIELDS)
    with pytest.raises(UserError):
        extract_args(project, "A", [], es, tab_extract.FIELDS)
    cs = ConvertSettings(color="hist", mask="hull", erode=-3, blur=5, smooth=0.25, direction="b2a")
    out = project.output_dir / "a_swap.mp4"
    ns = build_parser().parse_args(convert_args(project, clip, out, cs, tab_convert.FIELDS))
    assert (ns.input, ns.output, ns.color, ns.mask, int(ns.erode), int(ns.blur), float(ns.smooth), ns.direction) \
        == (clip, out, "hist", "hull", -3, 5, 0.25, "b2a")


# ---- state read from a project -------------------------------------------------------------------------------


def test_metrics_tail_reads_only_whole_new_lines(tmp_path: Path) -> None:
    from changeling.ui.state import MetricsTail

    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []
    path.write_text('{"step": 10, "loss_a": 0.5, "loss_b": 0.6}\n{"step": 20, "loss_a": 0.4')
    assert [r["step"] for r in tail.read()] == [10]  # the torn line waits
    with open(path, "a") as fh:
        fh.write(', "loss_b": 0.5}\nnot json\n{"step": 30, "loss_a": 0.3, "loss_b": 0.4}\n')
    assert [r["step"] for r in tail.read()] == [10, 20, 30]
    path.write_text('{"step": 1, "loss_a": 1.0, "loss_b": 1.0}\n')  # replaced (shorter): read again
    assert [r["step"] for r in tail.read()] == [1]


def test_loss_curve_and_train_stats(tmp_path: Path) -> None:
    from changeling.ui.state import ModelState, loss_curve, train_stats

    assert loss_curve([{"step": 1, "loss_a": 1.0, "loss_b": 1.0}]) is None
    recs = [{"step": s, "loss_a": 1.0 / s, "loss_b": 2.0 / s, "examples_per_s": 40.0, "lr": 5e-4, "batch_size": 4}
            for s in (10, 20, 30)]
    img = loss_curve(recs, width=320, height=200)
    assert img is not None and img.shape == (200, 320, 3) and img.dtype == np.uint8
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # something is drawn
    ckpt = tmp_path / "step-00000030"
    ckpt.mkdir()
    os.utime(ckpt, (1000.0, 1000.0))
    model = ModelState(step=30, preset="tiny", resolution=64, elapsed=50.0, path=ckpt)
    st = train_stats(recs, model, running_since=990.0, now=1012.0)
    assert (st.step, st.loss_a, st.examples_per_s, st.batch_size) == (30, 1.0 / 30, 40.0, 4)
    assert st.elapsed == pytest.approx(62.0)  # 50 s saved + 12 s since the checkpoint was written
    assert train_stats(recs, model, None, 1012.0).elapsed == 50.0
    assert "examples/s" in st.markdown() and "0:01:02" in st.markdown()


def test_summary_of_a_project(tmp_path: Path) -> None:
    from changeling.train.testfaces import make_faces
    from changeling.ui.state import find_projects, summarize

    project = init_project(tmp_path / "p")
    make_faces(project.faces_dir("A"), "A", 3, size=32)
    make_faces(project.faces_dir("B"), "B", 2, size=32)
    (project.root / "inputs").mkdir()
    (project.root / "inputs" / "a.mp4").write_bytes(b"x")
    (project.root / "inputs" / "notes.txt").write_text("n")
    (project.output_dir / "a_swap.mp4").write_bytes(b"x")
    s = summarize(project)
    assert s.faces == {"A": 3, "B": 2} and s.model is None
    assert [p.name for p in s.inputs] == ["a.mp4"] and [p.name for p in s.outputs] == ["a_swap.mp4"]
    md = s.markdown()
    assert "**3** of A" in md and "**2** of B" in md and "none yet" in md
    init_project(tmp_path / "q")
    (tmp_path / "not-a-project").mkdir()
    assert find_projects(tmp_path) == ["p", "q"]


def test_workspace_confines_what_a_page_may_touch(tmp_path: Path) -> None:
    from changeling.train.testfaces import make_faces
    from changeling.ui.workspace import Workspace

    ws = Workspace(tmp_path, job_command=fake_command())
    with pytest.raises(UserError, match="no project is open"):
        ws.project()
    with pytest.raises(UserError):
        ws.open("../outside", create=True)
    assert not (tmp_path.parent / "outside").exists()
    with pytest.raises(UserError, match="not a changeling project"):
        ws.open("missing", create=False)
    project = ws.open("swap", create=True)
    assert ws.roots() == [project.root] and ws.name_of(project) == "swap"
    make_faces(project.faces_dir("A"), "A", 2, size=32)
    face = sorted(project.faces_dir("A").glob("*.png"))[0]
    with pytest.raises(UserError):
        ws.delete_face("A", str(project.faces_dir("A") / ".." / ".." / "changeling.toml"))
    with pytest.raises(UserError):
        ws.delete_face("B", str(face))  # a face of A is not in B's folder
    assert (project.root / "changeling.toml").exists() and face.exists()
    ws.delete_face("A", str(face))
    assert not face.exists()
    # uploads are copied into inputs/ only from the upload folder
    uploads = tmp_path / "uploads"
    (uploads / "h").mkdir(parents=True)
    (uploads / "h" / "clip one.mp4").write_bytes(b"data")
    ws.upload_roots = [uploads]
    added = ws.add_inputs([uploads / "h" / "clip one.mp4"])
    assert added == [project.root / "inputs" / "clip one.mp4"] and added[0].read_bytes() == b"data"
    with pytest.raises(UserError, match="not an upload"):
        ws.add_inputs([project.root / "changeling.toml"])
    # the page's form values are remembered per project
    ws.remember(project, **{"train.batch_size": 4})
    ws.remember(project, **{"inputs.A": ["a.mp4"]})
    assert ws.remembered(project) == {"train.batch_size": 4, "inputs.A": ["a.mp4"]}


# ---- the server: what it refuses, serves inline, and hands out -------------------------------------------------


class Served:
    """The UI server of this process on a free port, with the session cookie its printed address gives."""

    def __init__(self, home: Path) -> None:
        from changeling.ui.app import ServeOptions, serve
        from changeling.ui.workspace import Workspace
        from test_ui_browser import free_port, session_cookie

        self.ws = Workspace(home)
        self.port = free_port()
        self.blocks, self.url = serve(self.ws, ServeOptions(port=self.port, max_upload="1mb"))
        self.cookie = session_cookie(self.url)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        from test_ui_browser import http_request

        return http_request(self.port, method, path, {**self.cookie, **(headers or {})}, body)

    def call(self, api_name: str, data: list[Any]) -> Any:
        """Run one of the page's handlers through Gradio's HTTP API, as the page would; its outputs."""
        code, _, body = self.request("POST", f"/gradio_api/call/{api_name}", {"Content-Type": "application/json"},
                                     json.dumps({"data": data}).encode())
        assert code == 200, body
        event = json.loads(body)["event_id"]
        code, _, body = self.request("GET", f"/gradio_api/call/{api_name}/{event}")
        assert code == 200 and body.startswith(b"event: complete"), body
        return json.loads(body.split(b"data:", 1)[1])


def quiet_gradio(test: Any) -> Any:
    """Gradio's queue calls pandas in ways pandas 3 deprecates; not ours to fix."""
    test = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:DeprecationWarning")(test)
    return pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:DeprecationWarning")(test)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    pytest.importorskip("gradio")
    srv = Served(tmp_path_factory.mktemp("served"))
    try:
        yield srv
    finally:
        srv.blocks.close()


@quiet_gradio
def test_server_answers_only_to_its_own_names(served: Served) -> None:
    assert "token=" in served.url and served.cookie  # the printed address carries the launch token
    assert served.request("GET", "/config")[0] == 200
    for host in [f"rebind.example:{served.port}", f"127.0.0.1.nip.example:{served.port}", "localhost"]:
        code, headers, body = served.request("GET", "/config", {"Host": host})
        assert code == 421 and b"DNS rebinding" in body, host
    # Gradio echoes a localhost origin in CORS: nothing of it reaches the browser now
    for origin in ["http://localhost:3000", f"http://rebind.example:{served.port}"]:
        code, headers, _ = served.request("GET", "/config", {"Origin": origin})
        assert code == 403 and not any(k.startswith("access-control") for k in headers), (origin, headers)
        code, headers, _ = served.request("OPTIONS", "/gradio_api/upload", {
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert not any(k.startswith("access-control") for k in headers), (origin, headers)


@quiet_gradio
def test_server_requires_the_launch_token(served: Served) -> None:
    from test_ui_browser import http_request

    project = served.ws.open("tokened", create=True)
    for method, path in [("GET", "/"), ("GET", "/config"), ("GET", f"/gradio_api/file={project.root}/changeling.toml"),
                         ("POST", "/gradio_api/queue/join"), ("POST", "/gradio_api/call/stop_job")]:
        code, _, body = http_request(served.port, method, path)
        assert code == 401 and b"launch" in body, (method, path, code)
    assert http_request(served.port, "GET", "/?token=guess")[0] == 403
    assert http_request(served.port, "GET", "/", {"Cookie": f"changeling-ui-{served.port}=guess"})[0] == 401


@quiet_gradio
def test_cross_site_uploads_are_refused(served: Served) -> None:
    from test_ui_browser import upload

    before = {p for root in served.ws.upload_roots for p in root.rglob("*")}
    for headers in [{**served.cookie, "Origin": "http://evil.example"},
                    {**served.cookie, "Sec-Fetch-Site": "cross-site"},
                    {**served.cookie, "Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},
                    {"Origin": f"http://127.0.0.1:{served.port}"}]:
        code, _ = upload(served.port, "planted.bin", b"x" * 100, headers)
        assert code in (401, 403), (headers, code)
    assert {p for root in served.ws.upload_roots for p in root.rglob("*")} == before
    code, body = upload(served.port, "mine.bin", b"x" * 100, {**served.cookie, "Origin":
                                                                   f"http://127.0.0.1:{served.port}"})
    assert code == 200 and Path(json.loads(body)[0]).read_bytes() == b"x" * 100


@quiet_gradio
def test_project_html_and_svg_are_downloads(served: Served) -> None:
    project = served.ws.open("inline", create=True)
    files = {"page.html": b"<script>alert(1)</script>", "pic.svg": b"<svg onload='alert(1)'/>",
             "page.xhtml": b"<html/>", "notes.txt": b"<script>", "fake.png": b"<html><script>alert(1)</script>"}
    for name, data in files.items():
        (project.root / "inputs" / name).write_bytes(data)
        code, headers, body = served.request("GET", f"/gradio_api/file={project.root}/inputs/{name}")
        assert code == 200 and body == data, (name, code)
        assert headers["x-content-type-options"] == "nosniff", name
        if name != "fake.png":
            assert headers["content-type"] == "application/octet-stream", (name, headers)
            assert headers["content-disposition"].startswith("attachment"), (name, headers)
    # an image is shown as one, and nosniff keeps the browser from taking fake.png for HTML
    _, headers, _ = served.request("GET", f"/gradio_api/file={project.root}/inputs/fake.png")
    assert headers["content-type"] == "image/png" and headers["content-disposition"].startswith("inline")


@quiet_gradio
def test_handlers_hand_out_no_file_outside_the_project(served: Served) -> None:
    from PIL import Image

    from changeling.video.testclip import write_clip

    outside = served.ws.home / "outside"
    outside.mkdir()
    secret_png = outside / "secret.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(secret_png)
    secret_mp4 = write_clip(outside / "secret.mp4", frames=4, width=32, height=32, fps=4)
    project = served.ws.open("linked", create=True)
    faces = project.faces_dir("A")
    faces.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(faces / "clip_000001_0.png")
    (faces / "clip_000002_0.png").symlink_to(secret_png)  # a face-named link out of the project
    (project.root / "previews").mkdir(exist_ok=True)
    (project.root / "previews" / "preview.png").symlink_to(secret_png)
    (project.output_dir / "clip_swap.mp4").symlink_to(secret_mp4)
    _plant(project.root, {"kind": "convert", "argv": ["changeling", "convert", "-o",
                                                      str(project.output_dir / "clip_swap.mp4")],
                          "pid": _dead_pid(), "started": 1.0, "finished": 2.0, "returncode": 0})
    served.ws.runner(project)  # the server reads the planted file as its own job's
    served_bytes = []
    for api_name, data in [("on_load", [1, 1, "A", 1]), ("change_page", [1]), ("masks_page", ["A", 1])]:
        for url in _file_urls(served.call(api_name, data)):
            code, _, body = served.request("GET", url.split(str(served.port), 1)[1])
            assert code == 200, url
            served_bytes.append(body)
    assert (faces / "clip_000001_0.png").read_bytes() in served_bytes  # the real face is shown
    for secret in (secret_png, secret_mp4):
        assert secret.read_bytes() not in served_bytes, secret.name
    # a job file naming an output outside the project is not shown either (and does not break the page)
    other = served.ws.open("linked-2", create=True)
    _plant(other.root, {"kind": "convert", "argv": ["changeling", "convert", "-o", str(secret_mp4)],
                        "pid": _dead_pid(), "started": 1.0, "finished": 2.0, "returncode": 0})
    assert secret_mp4.name not in json.dumps(served.call("on_load", [1, 1, "A", 1]))


@quiet_gradio
def test_a_tab_starts_its_job_with_the_settings_of_its_form(served: Served) -> None:
    from changeling.ui.tab_train import FIELDS

    project = served.ws.open("formed", create=True)
    # the Train tab's handler, as the page calls it: the tab's settings, then the run's steps and minutes
    chosen = {"preset": "df", "batch_size": 4, "lr": 3e-4, "preview_every": 5, "save_every": 50, "device": "cpu"}
    form = [chosen.get(name, getattr(TrainSettings(), name)) for name in FIELDS] + [0, 1.5]
    served.call("start_training", form)
    runner = served.ws.runner(project)
    wait_for(lambda: not runner.poll().running, timeout=120)  # it fails at once: the project has no faces
    argv = runner.poll().argv
    ns = build_parser().parse_args(argv[argv.index("train"):])
    assert ns.project == project.root
    assert {name: getattr(ns, name) for name in chosen} == chosen
    assert (ns.max_steps, parse_duration(ns.max_time)) == (0, 90.0)
    assert argv[-2:] == ["--max-steps=0", "--max-time=90s"]
    saved = served.ws.remembered(project)
    assert (saved["train.preset"], saved["train.batch_size"], saved["train.minutes"]) == ("df", 4, 1.5)
    # a value out of range is refused on the page and starts nothing
    code, _, body = served.request("POST", "/gradio_api/call/start_training", {"Content-Type": "application/json"},
                                   json.dumps({"data": [*form[:-1], -1]}).encode())  # -1 minutes
    event = json.loads(body)["event_id"]
    code, _, body = served.request("GET", f"/gradio_api/call/start_training/{event}")
    assert body.startswith(b"event: error"), body
    assert runner.poll().argv == argv


@quiet_gradio
def test_the_convert_preview_shows_the_occlusion_overlay_convert_wrote(served: Served,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr

    import changeling.convert
    from changeling.ui import state, tab_convert

    project = served.ws.open("occluded", create=True)
    (project.root / "inputs" / "clip.mp4").write_bytes(b"x")
    written: list[str] = []

    def preview(_project: Any, source: Path, frame: int, settings: ConvertSettings, out_dir: Path) -> list[Path]:
        """What convert --preview writes: an image per colour mode, then the overlay when the segmenter ran."""
        from PIL import Image

        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / f"{source.stem}_f{frame:06d}_{name}.png" for name in ("rct", "hist", *written)]
        for i, path in enumerate(paths):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(path)
        return paths

    monkeypatch.setattr(changeling.convert, "preview", preview)
    monkeypatch.setattr(state, "model_state", lambda _project: "a model")
    # the page's handler itself (through HTTP, Gradio would check the video against this session's choices)
    handler = next(f.fn for f in served.blocks.fns.values() if f.api_name == "preview_frame")
    form = [getattr(ConvertSettings(color="hist"), name) for name in tab_convert.FIELDS]
    folder = (project.previews_dir / "convert").resolve()
    shown, overlay = handler("clip.mp4", 0, *form)
    assert shown == str(folder / "clip_f000000_hist.png") and overlay.visible is False and overlay.value is None
    written.append("occlusion")  # the segmenter ran
    shown, overlay = handler("clip.mp4", 0, *form)
    assert shown == str(folder / "clip_f000000_hist.png") and overlay.visible is True
    assert overlay.value["orig_name"] == "clip_f000000_occlusion.png"
    # an overlay that is a link out of the project is not handed to the page
    secret = served.ws.home / "secret-occlusion.png"
    (folder / "clip_f000000_occlusion.png").rename(secret)
    (folder / "clip_f000000_occlusion.png").symlink_to(secret)
    monkeypatch.setattr(changeling.convert, "preview", lambda *a, **k: [folder / "clip_f000000_hist.png",
                                                                       folder / "clip_f000000_occlusion.png"])
    with pytest.raises(gr.Error, match="outside the project"):
        handler("clip.mp4", 0, *form)


def _file_urls(outputs: Any) -> list[str]:
    """The ``url`` of every file in a handler's outputs (Gradio's FileData)."""
    if isinstance(outputs, dict):
        own = [outputs["url"]] if isinstance(outputs.get("url"), str) else []
        return own + [u for v in outputs.values() for u in _file_urls(v)]
    if isinstance(outputs, list):
        return [u for v in outputs for u in _file_urls(v)]
    return []


# ---- the command's options ----------------------------------------------------------------------------------


def test_auth_and_size_parsing() -> None:
    from changeling.cli.ui import AUTH_ENV, auth_from, parse_auth, parse_size

    assert auth_from(None, {}) is None and auth_from(None, {AUTH_ENV: ""}) is None
    assert auth_from(None, {AUTH_ENV: "ada:x"}) == ("ada", "x")
    assert auth_from("bob:y", {AUTH_ENV: "ada:x"}) == ("bob", "y")  # the flag wins
    with pytest.raises(UserError):
        auth_from(None, {AUTH_ENV: "nocolon"})

    assert parse_auth(None) is None
    assert parse_auth("ada:lovelace") == ("ada", "lovelace")
    assert parse_auth("ada:pass:with:colons") == ("ada", "pass:with:colons")
    for bad in ["ada", "ada:", ":secret", " :secret", ""]:
        with pytest.raises(UserError, match="USER:PASSWORD"):
            parse_auth(bad)
    assert parse_size("500MB") == "500mb" and parse_size(" 2 gb") == "2gb"
    for bad in ["lots", "0mb", "5 parsecs", "-1mb"]:
        with pytest.raises(UserError):
            parse_size(bad)


def test_host_warning() -> None:
    from changeling.cli.ui import host_warning, is_loopback

    for host in ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"]:
        assert is_loopback(host) and host_warning(host, None) is None
    for host in ["0.0.0.0", "192.168.1.5", "::", "myhost.example"]:
        assert not is_loopback(host)
        w = host_warning(host, None)
        assert w is not None and host in w and "--auth" in w
        w2 = host_warning(host, ("a", "b"))
        assert w2 is not None and "--auth" not in w2
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"


def test_ui_command_rejects_bad_options_in_one_line(tmp_path: Path) -> None:
    from conftest import run_cli

    r = run_cli("ui", "--auth", "nopassword", "--project", str(tmp_path / "p"))
    assert r.returncode == 2 and "USER:PASSWORD" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("ui", "--max-upload", "huge", "--project", str(tmp_path / "p"))
    assert r.returncode == 2 and "--max-upload" in r.stderr


@pytest.mark.slow
def test_ui_command_serves_on_loopback_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from test_ui_browser import free_port, listening_addresses, raw_get, session_cookie

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "True"}  # the command must turn it off by itself
    proc = subprocess.Popen([sys.executable, "-m", "changeling", "ui", "--project", str(tmp_path / "swap"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    assert proc.stdout is not None
    try:
        printed = []
        for line in proc.stdout:  # until the server says where to open it
            printed.append(line)
            if "open http" in line:
                break
        assert proc.poll() is None, "".join(printed)
        url = printed[-1].split("open ", 1)[1].split()[0]
        assert url.startswith(f"http://127.0.0.1:{port}/?token=")
        assert listening_addresses(port) == {"127.0.0.1"}
        with pytest.raises(OSError):  # nothing answers on this machine's other addresses
            _connect_other_address(port)
        assert raw_get(port, "/config")[0] == 401  # not without the printed address's token
        code, body = raw_get(port, "/config", session_cookie(url))
        assert code == 200 and b"changeling" in body
        assert (tmp_path / "swap" / "changeling.toml").is_file()  # --project was created
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        out = "".join(printed) + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}" in out and "warning" not in out


def _connect_other_address(port: int) -> None:
    addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    addrs = {a for a in addrs if not a.startswith("127.")}
    if not addrs:
        raise OSError("no other address")
    for a in addrs:
        with socket.create_connection((a, port), timeout=2):
            pass
