"""TensorBoard event files: written by training (losses, preview grid) and by evaluate (view-size scores) when a
writer is installed, and nothing at all, without an error, when none is."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from changeling.config import TrainSettings
from changeling.project import init_project
from changeling.train import events as ev
from changeling.train import loop
from changeling.train.testfaces import make_faces


def read_events(folder: Path) -> list[object]:
    """Every Event record in the event files of ``folder`` (TFRecord framing: length, its CRC, data, CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (n,) = struct.unpack("<Q", data[at:at + 8])
            e = Event()
            e.ParseFromString(data[at + 12:at + 12 + n])
            out.append(e)
            at += 12 + n + 4
    return out


def tags(events: list[object]) -> dict[str, list[int]]:
    """tag -> the steps it was written at."""
    out: dict[str, list[int]] = {}
    for e in events:
        for v in e.summary.value:  # type: ignore[attr-defined]
            out.setdefault(v.tag, []).append(e.step)  # type: ignore[attr-defined]
    return out


def small_run(root: Path, **kw: object) -> Path:
    project = init_project(root)
    make_faces(project.faces_dir("A"), "A", 4, size=32)
    make_faces(project.faces_dir("B"), "B", 4, size=32)
    s = dataclasses.replace(TrainSettings(), resolution=32, e_dims=4, ae_dims=16, d_dims=8, batch_size=2,
                            device="cpu", precision="fp32", max_steps=20, save_every=10, preview_every=10, **kw)
    loop.train(project, s, progress=False)
    return project.logs_dir


def test_training_writes_losses_and_the_preview_grid(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    logs = small_run(tmp_path / "p")
    seen = tags(read_events(logs))
    assert seen["train/loss_a"] == [10, 20] and seen["train/loss_b"] == [10, 20]
    assert "train/examples_per_s" in seen and 10 in seen["preview"] and 20 in seen["preview"]


def test_without_a_writer_training_runs_and_writes_no_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "_writer_class", lambda: None)
    logs = small_run(tmp_path / "p")
    assert not list(logs.glob("events.out.tfevents.*"))
    assert (logs / "metrics.jsonl").stat().st_size > 0  # the record that is always kept


def test_a_failing_writer_is_reported_once_and_never_stops_anything(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def __init__(self, folder: str) -> None:
            pass

        def add_scalar(self, *a: object) -> None:
            raise OSError("disk full")

    log = ev.EventLog.__new__(ev.EventLog)
    log._writer, log._failed = Broken("x"), False
    log.scalars(1, {"a": 1.0, "b": 2.0, "nan": float("nan"), "text": "x"})
    log.scalars(2, {"a": 1.0})
    assert caplog.text.count("could not write TensorBoard events") == 1
