"""Convert's output under concurrency and crashes: one convert per output (the second says "already running
(pid N)"), temporary names unique per process, leftovers of killed runs removed, and an output that is flushed
to the disk before it replaces the old file (which stays until then), with a plain file's permissions."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from changeling.convert.writers import provenance_writer_factory
from changeling.errors import UserError
from changeling.video.writer import partial_path
from conftest import decode_all
from test_convert import N, TintModel, _converter
from test_convert import video as video  # the fixture


def partials(out: Path) -> list[Path]:
    """The output's temporaries now beside it."""
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and p.name.endswith(".partial"))


class _Held(TintModel):
    """The fake model, which on batch ``at`` (0-based) signals ``reached`` and waits for ``release``."""

    def __init__(self, at: int = 0) -> None:
        super().__init__()
        self.at = at
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.calls == self.at:
            self.reached.set()
            self.release.wait(120)
        return super().__call__(crops)


def _in_thread(model: _Held, source: Path, out: Path, writer: str = "video") -> tuple[threading.Thread,
                                                                                     list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _converter(writer, swapper=model).run(source, out)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert model.reached.wait(120), errors
    return t, errors


def test_a_second_convert_to_one_output_says_already_running(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    model = _Held()
    t, errors = _in_thread(model, video, out)
    try:
        with pytest.raises(UserError, match=rf"already running \(pid {os.getpid()}\)") as err:
            _converter("video").run(video, out)
        assert str(err.value).startswith(f"{out}: ") and "\n" not in str(err.value)
    finally:
        model.release.set()
        t.join(120)
    assert errors == [] and len(decode_all(out)[0]) == N
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]  # no lock or temporary left


def test_temporary_names_are_unique_per_process_and_call(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    a, b = partial_path(out), partial_path(out)
    assert a != b and a.parent == tmp_path and a.name.startswith(f".out.mp4.{os.getpid()}-")
    assert a.name.endswith(".partial") and partials(out) == []


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    left = [tmp_path / ".out.mp4.4242-0a0b0c0d.partial", tmp_path / ".out.mp4.partial"]
    for p in left:
        p.write_bytes(b"half a video")
    (tmp_path / ".out.mp4.lock").write_text("4242")  # a killed run's lock file (its lock died with it)
    other = tmp_path / ".other.mp4.4242-0a0b0c0d.partial"  # another output's: not ours to touch
    other.write_bytes(b"x")
    _converter("video").run(video, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "in.mp4", "out.mp4"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_an_existing_output_stays_until_the_new_one_is_on_the_disk(video: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``convert -o`` onto an existing file: the old file stays whole while the new one is written, and the new
    one is flushed to the disk (file, then folder) around its rename, so a power cut leaves one or the other."""
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the old video")
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    model = _Held(at=2)  # the first batch is on its way to the file
    t, errors = _in_thread(model, video, out)
    try:
        deadline = time.monotonic() + 60
        while not partials(out) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(partials(out)) == 1 and out.read_bytes() == b"the old video"  # being written; the old one kept
    finally:
        model.release.set()
        t.join(120)
    assert errors == [] and len(decode_all(out)[0]) == N
    i = calls.index(("replace", str(out)))
    assert any(k == "fsync" and Path(p).name.startswith(".out.mp4.") for k, p in calls[:i]), calls
    assert ("fsync", str(tmp_path)) in calls[i + 1:], calls


def test_a_signed_video_gets_a_plain_file_mode(video: Path, tmp_path: Path) -> None:
    """The C2PA signer rewrites the video through a private (0600) temporary; the published file must have the
    mode of any file this process writes (0644 under umask 0022)."""
    out = tmp_path / "out.mp4"
    old = os.umask(0o022)
    try:
        _converter("video", writer_factory=provenance_writer_factory("video")).run(video, out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
