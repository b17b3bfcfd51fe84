"""The stage helper: errors in any stage stop all of them and reach the caller, a stop request ends every stage,
and no thread outlives the pipeline."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from changeling.stages import END, Stages, Stopped


def _alive(*threads: threading.Thread) -> list[str]:
    return [t.name for t in threads if t.is_alive()]


class Counting:
    """An endless producer that records whether it was closed (its cleanup ran)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at, self.made, self.closed = fail_at, 0, False

    def __iter__(self) -> Iterator[int]:
        try:
            for i in itertools.count():
                if i == self.fail_at:
                    raise ValueError(f"bad item {i}")
                self.made += 1
                yield i
        finally:
            self.closed = True


def test_items_flow_in_order_and_every_thread_ends() -> None:
    with Stages() as stages:
        src, dst = stages.channel(2), stages.channel(2)
        out: list[int] = []
        producer = stages.produce("decode", range(50), src)
        consumer = stages.consume("write", dst, out.append)
        for item in stages.items(src):
            stages.put(dst, item * 2)
        stages.put(dst, END)
        stages.join()
    assert out == [2 * i for i in range(50)]
    assert _alive(producer, consumer) == []


def test_a_producer_error_arrives_after_the_items_made_before_it() -> None:
    items = Counting(fail_at=5)
    with Stages() as stages:
        ch = stages.channel(2)
        producer = stages.produce("decode", items, ch)
        got = []
        with pytest.raises(ValueError, match="bad item 5"):
            while (item := stages.get(ch)) is not END:
                got.append(item)
    assert got == [0, 1, 2, 3, 4] and items.closed
    assert _alive(producer) == []


def test_an_error_in_a_consumer_stops_everything_and_is_raised_in_the_caller() -> None:
    items = Counting()

    def write(item: int) -> None:
        if item == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), Stages() as stages:
        src, dst = stages.channel(4), stages.channel(1)
        threads = [stages.produce("decode", items, src), stages.consume("write", dst, write)]
        for item in stages.items(src):  # never ends on its own: the consumer's error must end it
            stages.put(dst, item)
    assert items.closed and _alive(*threads) == []


def test_a_consumer_error_reaches_a_caller_blocked_on_a_full_channel() -> None:
    taken = threading.Event()

    def write(item: int) -> None:
        taken.set()
        time.sleep(0.3)  # meanwhile the caller fills the channel and waits for room
        raise RuntimeError("encoder died")

    stages = Stages()
    dst = stages.channel(1)
    consumer = stages.consume("write", dst, write)
    with pytest.raises(RuntimeError, match="encoder died"):
        for i in range(100):
            stages.put(dst, i)
            taken.wait(5)
    stages.close()
    assert _alive(consumer) == []


def test_an_error_in_the_caller_stops_a_producer_blocked_on_a_full_channel() -> None:
    items = Counting()
    with pytest.raises(KeyError), Stages() as stages:
        ch = stages.channel(2)
        producer = stages.produce("decode", items, ch)
        stages.get(ch)
        raise KeyError("the main thread failed")
    assert items.closed and _alive(producer) == []
    assert items.made <= 5  # it stopped: a channel of 2, one item taken


def test_a_stop_request_ends_every_stage_without_an_error() -> None:
    items = Counting()
    seen: list[int] = []
    with Stages() as stages:
        src, dst = stages.channel(3), stages.channel(3)
        threads = [stages.produce("decode", items, src), stages.consume("write", dst, seen.append)]
        for item in stages.items(src):
            stages.put(dst, item)
            if item == 10:
                stages.stop()
                break
        with pytest.raises(Stopped):
            stages.get(src)
    assert items.closed and _alive(*threads) == []
    assert seen == list(range(len(seen))) and len(seen) <= 11  # what was written, in order


def test_closing_cancels_pool_tasks_not_started_and_joins_the_pool() -> None:
    started: list[int] = []
    running, gate = threading.Event(), threading.Event()

    def task(i: int) -> int:
        started.append(i)
        running.set()
        gate.wait(5)
        return i

    with Stages() as stages:
        pool = stages.pool(1, "render")
        futures = [pool.submit(task, i) for i in range(5)]
        running.wait(5)
        threading.Timer(0.2, gate.set).start()  # the first task ends while the pool shuts down
    assert started == [0] and futures[0].result() == 0
    assert all(f.cancelled() for f in futures[1:])


def test_a_pool_error_the_caller_hands_to_fail_is_raised_at_the_next_get() -> None:
    stages = Stages()
    ch = stages.channel(1)
    stages.fail(ValueError("model failed"))
    with pytest.raises(ValueError, match="model failed"):
        stages.get(ch)
    with pytest.raises(ValueError, match="model failed"):
        stages.__exit__(None, None, None)


def test_wait_empty_wakes_when_the_consumer_takes_the_item() -> None:
    with Stages() as stages:
        ch = stages.channel(1)
        assert ch.wait_empty(0.0)
        stages.put(ch, 1)
        assert not ch.wait_empty(0.01)
        taker = threading.Timer(0.05, lambda: stages.get(ch))
        taker.start()
        assert ch.wait_empty(30.0)  # woken by the get, long before the timeout
        taker.join()
