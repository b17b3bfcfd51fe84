"""The command line works with no network at all: init, extract, train, convert and verify run in a fresh network
namespace (``unshare -n``: no interface but a downed loopback), and none of them even tries to connect: an audit
hook (loaded through ``sitecustomize``) records every Internet socket connection and name lookup the Python code
attempts, and the record must stay empty."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from changeling.train.testfaces import portrait
from changeling.video.testclip import pattern_frame, write_clip

AUDIT_HOOK = textwrap.dedent('''
    import os
    import socket
    import sys

    _LOG = os.environ["CHANGELING_NET_LOG"]

    def _record(what):
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(what + "\\n")

    def _hook(event, args):
        if event == "socket.connect" or event == "socket.sendto":
            sock = args[0]
            if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
                _record(f"{event} {args[1]!r}")
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "urllib.Request"):
            _record(f"{event} {args[0]!r}")

    sys.addaudithook(_hook)
''')


def offline(*args: str, env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m changeling ARGS`` in a new network namespace."""
    return subprocess.run(["unshare", "-n", "--", sys.executable, "-m", "changeling", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def person_clip(path: Path, side: str, frames: int) -> Path:
    """A public-domain portrait moving over a moving background, with a tone as audio."""
    img = portrait(side)
    crop = img[0:300, 110:410] if side == "A" else img[60:460, 60:460]
    face = cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA)
    bg = pattern_frame(0, 160, 120)
    images = []
    for i in range(frames):
        f = np.roll(bg, 3 * i, axis=1).copy()
        x, y = 20 + int(12 * np.sin(i / 4)), 10 + int(4 * np.cos(i / 3))
        f[y:y + 96, x:x + 96] = face
        images.append(f)
    return write_clip(path, width=160, height=120, fps=24, audio="aac", images=images)


@pytest.fixture
def no_network(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python processes record attempted connections; skip when namespaces are refused."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-n", "--", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here (needs root or user namespaces): {probe.stderr.strip()}")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(AUDIT_HOOK)
    log = tmp_path / "net.log"
    log.touch()
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "CHANGELING_NET_LOG": str(log), "OMP_NUM_THREADS": "1"}


def test_the_namespace_has_no_network_and_the_hook_sees_attempts(no_network: dict[str, str], tmp_path: Path) -> None:
    """The set-up is real: inside, connecting fails, and the audit hook records the attempt."""
    code = ("import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
            "except OSError as e:\n    print('refused', e.errno)\n")
    r = subprocess.run(["unshare", "-n", "--", sys.executable, "-c", code], capture_output=True, text=True,
                       env=no_network, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("refused"), r.stdout + r.stderr
    assert "socket.connect ('192.0.2.1', 80)" in Path(no_network["CHANGELING_NET_LOG"]).read_text()


@pytest.mark.slow
def test_cli_end_to_end_without_network(no_network: dict[str, str], tmp_path: Path) -> None:
    a = person_clip(tmp_path / "a.mp4", "A", 16)
    b = person_clip(tmp_path / "b.mp4", "B", 16)
    proj = tmp_path / "proj"
    out = tmp_path / "swap.mp4"
    steps = [
        ("init", str(proj)),
        ("extract", "-q", "-p", str(proj), "--side", "A", "--size", "64", "--device", "cpu", str(a)),
        ("extract", "-q", "-p", str(proj), "--side", "B", "--size", "64", "--device", "cpu", str(b)),
        ("train", "-q", "-p", str(proj), "--max-steps", "2", "--batch-size", "4", "--resolution", "32",
         "--preview-every", "1", "--device", "cpu"),
        ("convert", "-q", "-p", str(proj), str(a), "-o", str(out), "--device", "cpu"),
        ("verify", str(out)),
    ]
    for args in steps:
        r = offline(*args, env=no_network, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    assert "MARKED" in r.stdout, r.stdout  # verify found the provenance marks
    for side in "AB":
        assert len(list((proj / "faces" / side).glob("*.png"))) >= 12, side  # faces were found offline
    assert (proj / "model" / "checkpoints" / "step-00000002").is_dir() and (proj / "previews" / "preview.png").exists()
    attempts = Path(no_network["CHANGELING_NET_LOG"]).read_text()
    assert attempts == "", f"the package tried to reach the network:\n{attempts}"
