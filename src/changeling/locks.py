"""One process at a time: an exclusive lock on a small file that records the holder's pid.

``train`` holds one on the model folder, ``extract`` one per source and side, ``convert`` one per output. The
lock is a ``flock``: the system releases it when its holder dies, so a killed run never blocks the next one.
The lock file lives in a project folder, which is untrusted: a symbolic link there is refused rather than
followed (the pid would be written through it), and only a regular file is used.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from changeling.errors import UserError

log = logging.getLogger(__name__)

_ATTEMPTS = 5  # re-opening after the file was removed under us by a holder that just finished


class LockBusy(UserError):
    """Another process holds the lock; ``pid`` is what its file records (``"?"`` when unreadable)."""

    def __init__(self, message: str, path: str | Path | None, pid: str) -> None:
        super().__init__(message, path)
        self.pid = pid


class ProcessLock:
    """Exclusive lock on ``path`` for this process; use as a context manager.

    ``busy(pid)`` is the message of the :class:`LockBusy` (a :class:`UserError`, naming ``subject``) raised when
    another process holds it. With ``remove``, the lock file is deleted on release (for lock files beside a
    user's output), and acquiring checks that the file it locked is still the one under ``path``.
    """

    def __init__(self, path: Path, busy: Callable[[str], str], subject: str | Path | None = None, *,
                 remove: bool = False) -> None:
        self.path = Path(path)
        self.busy = busy
        self.subject = subject if subject is not None else self.path
        self.remove = remove
        self._fd: int | None = None

    def __enter__(self) -> ProcessLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            log.warning("no file locking on this system; do not run two of these at once (%s)", self.path)
            return self
        for _ in range(_ATTEMPTS):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                raise LockBusy(self.busy(holder), self.subject, holder) from None
            if self.remove and not _still_there(fd, self.path):
                os.close(fd)  # its holder finished and removed it after we opened it: lock the new one
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._fd = fd
            return self
        raise UserError("the lock file keeps being replaced; is another run starting and stopping?", self.path)

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(
            os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError("the lock file is a symbolic link; remove it", self.path) from None
            raise UserError(f"cannot create the lock file ({exc.strerror or exc})", self.path) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UserError("the lock file is not a regular file; remove it", self.path)
        return fd

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self.remove and _still_there(fd, self.path):
            self.path.unlink(missing_ok=True)  # before unlocking: a waiting process then sees it gone
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
        except (ImportError, OSError):
            pass
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


def _still_there(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def already_running(what: str) -> Callable[[str], str]:
    """The busy message of ``extract`` and ``convert``: ``WHAT is already running (pid N); ...``."""
    return lambda pid: f"{what} is already running (pid {pid}); wait for it to finish or stop it"
