from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from changeling.video.testclip import write_clip
from changeling.video.yuv import frame_to_rgb


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed console script's code path in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", "changeling", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def audio_seconds(path: Path) -> float:
    """Decoded audio length in seconds (independent of container duration fields)."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        n, rate = 0, None
        for f in c.decode(s):
            n += f.samples
            rate = f.sample_rate
    assert rate
    return n / rate


def decode_all(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """PyAV's own decode of ``path`` (not the reader's loop), converted to RGB as the reader converts
    (``video.yuv.frame_to_rgb``, checked against the BT.601 table and swscale in test_yuv.py)."""
    frames, times = [], []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            frames.append(frame_to_rgb(f))
            times.append(float(f.pts * s.time_base))
    return frames, times


@pytest.fixture(autouse=True)
def _private_config_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the per-installation C2PA signing key (and anything else under ~/.config) out of the real home."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "config-home"))


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4", frames=24, width=64, height=48, fps=24, audio="aac")


def mjpeg_with_corrupt_frame(path: Path, frames: list[np.ndarray], bad: int) -> Path:
    """An MJPEG clip of ``frames`` whose frame ``bad`` has its data zeroed (undecodable)."""
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=24)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuvj420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode(None):
            out.mux(pkt)
    with av.open(str(path)) as c:
        payload = [bytes(p) for p in c.demux(c.streams.video[0]) if p.size][bad]
    raw = path.read_bytes()
    at = raw.find(payload)
    assert at > 0
    path.write_bytes(raw[:at] + bytes(len(payload)) + raw[at + len(payload):])  # that frame's data zeroed
    return path


@pytest.fixture(autouse=True)
def _ctrl_c_as_a_shell_gives_it() -> None:
    """Each test starts with Ctrl+C as a user's shell hands it to a program: the default handler, not blocked.
    Children inherit an ignored or blocked SIGINT across exec, and in the whole suite something before the
    tests that send Ctrl+C to a child left it so (the Ctrl+C tests then saw a child that never stopped)."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
