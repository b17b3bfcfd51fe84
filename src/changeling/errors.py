"""Error types. A :class:`UserError` is a mistake in what the user gave us: the CLI prints its message on one
line and exits with code 2, never with a traceback."""

from __future__ import annotations

from pathlib import Path


class ChangelingError(Exception):
    """Base class of changeling's own errors."""


class UserError(ChangelingError):
    """Bad input or usage: a missing file, an unreadable video, a bad setting. Exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class InterruptedRun(ChangelingError):
    """A long run was stopped by the user (Ctrl+C) after saving what it had."""
