"""A guard for tests of hostile inputs that used to hang: run the call in a thread and fail the test, rather
than wait for ever, when it has not ended in time."""

from __future__ import annotations

import threading
from collections.abc import Callable

HANG_S = 30  # a call on tiny test data still running after this long is a hang


def outcome(fn: Callable[[], object], seconds: float = HANG_S) -> BaseException | None:
    """What ``fn()`` raised (``None`` if it returned); fails the test if it is still running after ``seconds``
    (the thread is a daemon: a hung call is left behind, not waited for)."""
    box: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            box.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: a hang"
    return box[0]
