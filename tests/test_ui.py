"""The web UI's parts without a browser: path confinement (and the file-route guard), the job runner (start,
refuse a second job, stop as Ctrl+C, state that survives a reload or a server restart), the UI's commands
checked against the real CLI parser, state read from a project, auth and host options, and the ``ui`` command
serving on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
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


# ---- the commands the UI runs are valid CLI commands -----------------------------------------------------------


def test_train_args_parse_with_the_cli(tmp_path: Path) -> None:
    from changeling.ui.app import train_args

    project = init_project(tmp_path / "p")
    settings = TrainSettings(preset="tiny", batch_size=4, lr=3e-4, preview_every=5, save_every=50, device="cpu")
    ns = build_parser().parse_args(train_args(project, settings, current_step=120, steps=30, minutes=1.5))
    assert ns.command == "train" and ns.project == project.root
    assert (ns.preset, ns.batch_size, ns.lr, ns.preview_every, ns.save_every, ns.device) == \
        ("tiny", 4, 3e-4, 5, 50, "cpu")
    assert int(ns.max_steps) == 150  # 30 more steps after the model's 120
    assert parse_duration(ns.max_time) == 90.0
    ns = build_parser().parse_args(train_args(project, settings, current_step=120, steps=0, minutes=0))
    assert int(ns.max_steps) == 0 and parse_duration(ns.max_time) == 0.0  # no limits: until stopped
    with pytest.raises(UserError):
        train_args(project, settings, 0, -1, 0)


def test_extract_and_convert_args_parse_with_the_cli(tmp_path: Path) -> None:
    from changeling.ui.app import convert_args, extract_args

    project = init_project(tmp_path / "p")
    clip = project.root / "inputs" / "a.mp4"
    ns = build_parser().parse_args(extract_args(project, "B", [clip], 64, "full", "short", 2))
    assert (ns.command, ns.side, ns.inputs, int(ns.size), ns.face_type, ns.detector, int(ns.every_nth)) == \
        ("extract", "B", [clip], 64, "full", "short", 2)
    with pytest.raises(UserError):
        extract_args(project, "C", [clip], 64, "full", "short", 1)
    with pytest.raises(UserError):
        extract_args(project, "A", [], 64, "full", "short", 1)
    cs = ConvertSettings(color="hist", mask="hull", erode=3, blur=5, smooth=0.25, direction="b2a")
    out = project.output_dir / "a_swap.mp4"
    ns = build_parser().parse_args(convert_args(project, clip, out, cs))
    assert (ns.input, ns.output, ns.color, ns.mask, int(ns.erode), int(ns.blur), float(ns.smooth), ns.direction) \
        == (clip, out, "hist", "hull", 3, 5, 0.25, "b2a")


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
    from test_ui_browser import free_port, listening_addresses, raw_get

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "True"}  # the command must turn it off by itself
    proc = subprocess.Popen([sys.executable, "-m", "changeling", "ui", "--project", str(tmp_path / "swap"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 120
        while not listening_addresses(port):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        assert listening_addresses(port) == {"127.0.0.1"}
        with pytest.raises(OSError):  # nothing answers on this machine's other addresses
            _connect_other_address(port)
        code, body = raw_get(port, "/config")
        assert code == 200 and b"changeling" in body
        assert (tmp_path / "swap" / "changeling.toml").is_file()  # --project was created
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
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
