"""Many-core machines write faces from worker processes; the files must be the same as from threads."""

from __future__ import annotations

from pathlib import Path

import pytest

from changeling.bench.cases import moving_portrait_frames
from changeling.config import ExtractSettings
from changeling.extract import extract
from changeling.extract import workers as P
from changeling.project import init_project
from changeling.video.testclip import write_clip


def test_faces_written_from_processes_equal_those_from_threads(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_clip(tmp_path / "c.mp4", width=480, height=270, fps=25, images=moving_portrait_frames(5, 480, 270))
    settings = ExtractSettings(batch_size=4, size=96)
    threads = extract(init_project(tmp_path / "threads"), "A", [clip], settings, progress=False)
    monkeypatch.setattr(P, "use_face_processes", lambda: True)
    pool = P.face_process_pool()
    assert pool is not None and P.face_process_pool() is pool  # started once, then reused
    try:
        procs = extract(init_project(tmp_path / "procs"), "A", [clip], settings, progress=False)
    finally:
        pool.shutdown()
        P._PROCESS_POOL.clear()
    assert procs.faces_written == threads.faces_written >= 3
    a = sorted((tmp_path / "threads" / "faces" / "A").glob("*.png"))
    b = sorted((tmp_path / "procs" / "faces" / "A").glob("*.png"))
    assert [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.name


def test_worker_processes_only_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from changeling import threads

    monkeypatch.setattr(threads, "_WORKER_PROCESSES", [False])
    monkeypatch.setattr(P, "FACE_PROCESSES_FROM_CORES", 1)
    assert not P.use_face_processes()  # library use (a script may lack the __main__ guard): threads
    threads.allow_worker_processes()
    assert P.use_face_processes()
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())  # as inside a worker
    assert not threads.worker_processes_allowed()  # workers never start workers of their own


def test_decoding_in_a_process_gives_the_same_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from changeling import threads
    from changeling.video import process_reader

    clip = write_clip(tmp_path / "c.mp4", width=480, height=270, fps=25, images=moving_portrait_frames(6, 480, 270))
    settings = ExtractSettings(batch_size=2, size=96)
    monkeypatch.setattr(threads, "_WORKER_PROCESSES", [True])
    monkeypatch.setenv(process_reader.ENV, "0")
    here = extract(init_project(tmp_path / "thread"), "A", [clip], settings, progress=False)
    monkeypatch.setenv(process_reader.ENV, "1")
    child = extract(init_project(tmp_path / "process"), "A", [clip], settings, progress=False)
    assert (here.sources[0].decoder, child.sources[0].decoder) == ("thread", "process")
    assert child.frames_read == here.frames_read == 6 and child.faces_written == here.faces_written >= 4
    a = sorted((tmp_path / "thread" / "faces" / "A").glob("*.png"))
    b = sorted((tmp_path / "process" / "faces" / "A").glob("*.png"))
    assert [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.name
