"""Progress bars for long loops; every caller can switch them off (``--quiet``).

On a terminal a bar redraws itself in place. When stderr is not a terminal (CI, a log file, the web UI's
jobs) the ``\\r`` redraws would pile up into one endless line, so the bar prints a plain line instead, at most
every :data:`PLAIN_INTERVAL` seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
PLAIN_INTERVAL = 5.0  # seconds between the plain lines written when stderr is not a terminal


class PlainLines:
    """A text stream for tqdm that turns each redraw (``\\r`` + bar + padding) into one line of ``out``, and
    drops the blank redraw that clears a finished bar."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line and line != self._last:  # a closing bar redraws its last state once more
            self.out.write(line + "\n")
            self._last = line
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
) -> tqdm:
    """A tqdm bar on stderr; ``enabled=False`` gives a silent one with the same interface. Off a terminal it
    writes plain lines (see the module's docstring)."""
    stream = sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True,
                    leave=False)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=PlainLines(stream),
                mininterval=PLAIN_INTERVAL, maxinterval=PLAIN_INTERVAL * 4, ncols=0, leave=True)


def iterate(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
            enabled: bool = True) -> Iterator[T]:
    """Yield from ``iterable`` while showing a bar."""
    with bar(iterable, total=total, desc=desc, unit=unit, enabled=enabled) as b:
        yield from b
