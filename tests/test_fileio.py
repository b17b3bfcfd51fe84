"""Durable files and process locks (``changeling.fileio``, ``changeling.locks``).

A finished file is flushed to the disk before it is renamed into place, and the folder after, so a power cut
leaves the old file or the whole new one; it gets the permissions of a plainly written file (0666 less the
umask), not a temporary's private 0600. A lock file in a project folder may be planted: a link is refused.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from changeling.errors import UserError
from changeling.fileio import current_umask, default_mode, publish
from changeling.locks import LockBusy, ProcessLock, already_running
from changeling.video.images import write_image_atomic


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(umask_022: None) -> None:
    assert current_umask() == 0o022 and default_mode() == 0o644
    os.umask(0o077)
    assert current_umask() == 0o077 and default_mode() == 0o600


def test_images_get_a_plain_file_mode(tmp_path: Path, umask_022: None) -> None:
    """mkstemp's temporaries are 0600; the finished image must be 0644 under umask 0022, like any file."""
    out = tmp_path / "preview.png"
    write_image_atomic(out, np.zeros((8, 8, 3), np.uint8))
    assert mode(out) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]


class Recorder:
    """Records fsync (by the path of the flushed descriptor) and rename calls, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            self.calls.append(("replace", os.fspath(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def check_durable(self, final: Path) -> None:
        """The temporary was flushed before the rename to ``final``, and the folder after it."""
        i = self.calls.index(("replace", str(final)))
        before, after = self.calls[:i], self.calls[i + 1:]
        assert any(kind == "fsync" and Path(p).name.startswith(f".{final.name}.") for kind, p in before), self.calls
        assert ("fsync", str(final.parent)) in after, self.calls


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_an_image_is_flushed_before_its_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch)
    out = tmp_path / "face.png"
    write_image_atomic(out, np.zeros((8, 8, 3), np.uint8))
    rec.check_durable(out)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_publish_flushes_then_renames_over_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        umask_022: None) -> None:
    final = tmp_path / "out.mp4"
    final.write_bytes(b"old")
    tmp = tmp_path / ".out.mp4.123-ab.partial"
    tmp.write_bytes(b"new")
    tmp.chmod(0o600)
    rec = Recorder(monkeypatch)
    publish(tmp, final)
    rec.check_durable(final)
    assert final.read_bytes() == b"new" and mode(final) == 0o644 and not tmp.exists()


def test_a_second_holder_is_told_who_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / ".x.lock"
    with ProcessLock(path, already_running("another extract of x"), tmp_path / "x.mp4"):
        with pytest.raises(LockBusy) as err:
            ProcessLock(path, already_running("another extract of x"), tmp_path / "x.mp4").__enter__()
        assert str(err.value) == (f"{tmp_path / 'x.mp4'}: another extract of x is already running (pid {os.getpid()}); "
                                  "wait for it to finish or stop it")
        assert err.value.pid == str(os.getpid())
    with ProcessLock(path, already_running("x")):  # released
        pass


def test_a_removable_lock_leaves_no_file_and_a_killed_holder_releases_it(tmp_path: Path) -> None:
    path = tmp_path / ".out.mp4.lock"
    with ProcessLock(path, already_running("x"), remove=True):
        assert path.exists()
    assert not path.exists()
    code = ("import os, sys; from pathlib import Path; from changeling.locks import ProcessLock, already_running\n"
            "ProcessLock(Path(sys.argv[1]), already_running('x'), remove=True).__enter__(); os.kill(os.getpid(), 9)")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=60)
    assert r.returncode == -9 and path.exists()  # killed while holding it: the file stays, the lock does not
    with ProcessLock(path, already_running("x"), remove=True):
        pass
    assert not path.exists()


def test_a_planted_link_as_lock_file_is_not_written_through(tmp_path: Path) -> None:
    """The trainer's lock wrote its pid through a link planted as ``model/.train.lock``."""
    from changeling.train.loop import LOCK_NAME, TrainLock

    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    model = tmp_path / "model"
    model.mkdir()
    (model / LOCK_NAME).symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        TrainLock(model).__enter__()
    assert victim.read_text() == "keep me"


def test_publish_flushes_a_folder_and_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    tmp = tmp_path / ".frames.1-ab.partial"
    tmp.mkdir()
    (tmp / "a.png").write_bytes(b"x")
    publish(tmp, tmp_path / "frames")
    assert mode(tmp_path / "frames") == 0o755 and (tmp_path / "frames" / "a.png").read_bytes() == b"x"
