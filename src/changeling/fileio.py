"""Files that survive a power loss and look like any other file, and reading files that are only files.

Finished files are written under a temporary name, flushed to the disk (``fsync``) and renamed: after a crash
or a power cut the final name holds the old file or the whole new one, never an empty or half-written one.
A temporary made with :func:`tempfile.mkstemp` is private (mode 0600); :func:`publish` gives it the mode a
plainly written file would have (``0666`` less the umask) before the rename.

A project folder is untrusted: a file named like a face or a video may be a FIFO (reading it blocks forever)
or a device. :func:`open_regular` opens only regular files.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """The path is a FIFO, a device, a socket or a folder where a regular file was expected."""


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux ``/proc``); elsewhere set
    and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """The permission bits ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it, a new file) to the disk; silently skipped where the system
    cannot open folders."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flush every file and folder under ``path`` (a finished output folder, before it is renamed)."""
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def temp_name(final: Path, suffix: str = ".part") -> Path:
    """A hidden temporary name beside ``final``, unique to this process and call:
    ``.NAME.<pid>-<random>SUFFIX``."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def publish(tmp: Path, final: Path, *, mode: int | None = None, sync_dir: bool = True) -> None:
    """Give the finished ``tmp`` its permissions (``mode``, default :func:`default_mode`), flush it to the disk,
    rename it to ``final`` (replacing what is there only now) and flush the folder (unless ``sync_dir`` is off:
    a caller renaming many files into one folder flushes it once, with :func:`fsync_dir`). A folder (an image
    sequence written into a temporary folder, say) keeps its mode and is flushed file by file."""
    tmp, final = Path(tmp), Path(final)
    if tmp.is_dir():  # made by mkdir, whose mode already follows the umask (and folders need their x bits)
        fsync_tree(tmp)
    else:
        os.chmod(tmp, default_mode() if mode is None else mode)
        fsync_file(tmp)
    os.replace(tmp, final)
    if sync_dir:
        fsync_dir(final.parent if str(final.parent) else Path("."))


def finish_file(fh: BinaryIO, *, mode: int | None = None) -> None:
    """For a temporary written through ``fh`` (from :func:`tempfile.mkstemp`, say): flush Python's buffer,
    give it its permissions and flush it to the disk, so that a rename can publish it."""
    fh.flush()
    os.fchmod(fh.fileno(), default_mode() if mode is None else mode)
    os.fsync(fh.fileno())


def check_regular(path: Path) -> os.stat_result:
    """``os.stat`` of ``path`` (links followed), or :class:`NotRegularFile` if it is not a regular file. Checked
    before opening, since opening some devices has effects and opening a FIFO waits for a writer."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(f"not a regular file ({describe_mode(st.st_mode)})")
    return st


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading; :class:`NotRegularFile` for a FIFO, device, socket or folder
    (:class:`FileNotFoundError` and other ``OSError`` as ``open`` raises them)."""
    check_regular(path)
    nonblock = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode  # what was opened: the path may have been swapped since the check
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"not a regular file ({describe_mode(mode)})")
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def describe_mode(mode: int) -> str:
    """What a file of this ``st_mode`` is, for a message: "a FIFO", "a device"..."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
