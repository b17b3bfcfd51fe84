"""Progress bars: redrawn in place on a terminal, plain lines every few seconds anywhere else (CI, logs, the
web UI's jobs)."""

from __future__ import annotations

import io
import sys

import pytest
import tqdm.std

from changeling import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """tqdm's clock, advanced by the test (no sleeping, no timing)."""
    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    return now


def _run(monkeypatch: pytest.MonkeyPatch, clock: list[float], stream: io.StringIO, seconds: int) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress.iterate(range(seconds), desc="frames", unit="frame"):
        clock[0] += 1.0  # one item a second
    return stream.getvalue()


def test_off_a_terminal_progress_is_a_plain_line_every_few_seconds(monkeypatch: pytest.MonkeyPatch,
                                                                  clock: list[float]) -> None:
    out = _run(monkeypatch, clock, io.StringIO(), 60)
    assert "\r" not in out and out.endswith("\n")
    lines = out.splitlines()
    assert lines[0].startswith("frames:") and "0/60" in lines[0]
    assert "60/60" in lines[-1] and sum("60/60" in ln for ln in lines) == 1  # the final count, once
    # 60 seconds: one line at the start and at most one per interval after it
    assert 60 / progress.PLAIN_INTERVAL <= len(lines) <= 60 / progress.PLAIN_INTERVAL + 2
    assert all(len(ln) < 120 for ln in lines)


def test_on_a_terminal_the_bar_redraws_in_place(monkeypatch: pytest.MonkeyPatch, clock: list[float]) -> None:
    out = _run(monkeypatch, clock, Terminal(), 60)
    assert out.count("\r") > 10 and "\n" not in out.rstrip()


def test_a_disabled_bar_writes_nothing(monkeypatch: pytest.MonkeyPatch, clock: list[float]) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress.bar(total=5, enabled=False) as b:
        b.update(5)
    assert stream.getvalue() == ""
