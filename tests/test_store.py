"""Alignments store: round trip, content hash, refusal of another file's store, atomic batches, resume after
SIGKILL with each frame recorded exactly once, pruning of deleted faces."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from changeling.errors import UserError
from changeling.faces.store import AlignmentStore, FaceRecord, FrameRecord, content_hash


def _src(tmp_path: Path, data: bytes = b"video bytes" * 100, name: str = "a.mp4") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _face(frame: int, face: int, file: str | None = None, points: int = 478) -> FaceRecord:
    rng = np.random.default_rng(frame * 10 + face)
    return FaceRecord(frame=frame, face=face, box=rng.uniform(0, 100, 4).astype(np.float32),
                      landmarks=rng.normal(0, 100, (points, 3)).astype(np.float32), score=0.9, blur=12.5,
                      file=file)


def test_round_trip(tmp_path: Path) -> None:
    src = _src(tmp_path)
    faces = [_face(0, 0, "a_000000_0.png"), _face(0, 1, None, points=468), _face(2, 0, "a_000002_0.png")]
    with AlignmentStore.open(tmp_path / "a.sqlite", src, frame_count=3, settings={"size": 64}) as st:
        st.record([FrameRecord(0, 0.0, "done"), FrameRecord(1, 0.04, "no_face"), FrameRecord(2, 0.08, "done")],
                  faces, corrupt={2: 1})
    with AlignmentStore.open_existing(tmp_path / "a.sqlite") as st:
        assert st.source_path == str(src) and st.source_hash == content_hash(src)
        assert st.done_frames() == {0, 1, 2} and st.first_unfinished() == 3
        assert st.settings() == {"size": 64} and not st.complete
        got = st.faces_for_frame(0)
        assert [g.face for g in got] == [0, 1] and got[1].file is None and got[1].landmarks.shape == (468, 3)
        for g, f in zip(got + st.faces_for_frame(2), faces, strict=True):
            np.testing.assert_array_equal(g.landmarks, f.landmarks)  # bit-exact float32
            np.testing.assert_array_equal(g.box, f.box)
            assert g.landmarks.dtype == np.float32 and g.score == pytest.approx(0.9)
        assert st.faces_for_frame(1) == []
        assert st.status_counts() == {"done": 2, "no_face": 1, "skipped": 0, "corrupt": 1}
    # landmarks are stored as raw little-endian float32, not pickled objects
    blob = sqlite3.connect(tmp_path / "a.sqlite").execute("SELECT landmarks FROM faces LIMIT 1").fetchone()[0]
    assert len(blob) == 478 * 3 * 4 and not blob.startswith(b"\x80")


def test_content_hash(tmp_path: Path) -> None:
    big = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    a = _src(tmp_path, big, "a.mp4")
    b = _src(tmp_path, big, "b.mp4")
    assert content_hash(a) == content_hash(b)  # content, not name
    changed = bytearray(big)
    changed[-1] ^= 1
    assert content_hash(_src(tmp_path, bytes(changed), "c.mp4")) != content_hash(a)
    assert content_hash(_src(tmp_path, big + b"x", "d.mp4")) != content_hash(a)  # size counts
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "1.png").write_bytes(b"one")
    h1 = content_hash(folder)
    (folder / "2.png").write_bytes(b"two")
    assert content_hash(folder) != h1


def test_store_of_another_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite"
    AlignmentStore.open(db, _src(tmp_path, b"first" * 10)).close()
    other = _src(tmp_path, b"second" * 10)  # same name, other content
    with pytest.raises(UserError, match="different file") as err:
        AlignmentStore.open(db, other)
    assert str(db) in str(err.value) and "\n" not in str(err.value)


def test_not_an_alignments_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database at all, just text\n" * 100)
    with pytest.raises(UserError, match="alignments"):
        AlignmentStore.open_existing(junk)
    with pytest.raises(UserError, match="no such"):
        AlignmentStore.open_existing(tmp_path / "missing.sqlite")


def test_batches_are_atomic_and_frames_recorded_once(tmp_path: Path) -> None:
    with AlignmentStore.open(tmp_path / "a.sqlite", _src(tmp_path)) as st:
        st.record([FrameRecord(0, 0.0, "done")], [_face(0, 0, "x.png")])
        with pytest.raises(sqlite3.IntegrityError):  # frame 0 again: refused, and frame 1 not kept either
            st.record([FrameRecord(1, 0.1, "done"), FrameRecord(0, 0.0, "done")], [_face(1, 0, "y.png")])
        assert st.done_frames() == {0} and st.face_count() == 1
        with pytest.raises(ValueError):
            st.record([FrameRecord(3, 0.1, "done")], [_face(4, 0)])  # a face of a frame not in the batch
        assert st.done_frames() == {0}


def test_no_faces_found_state(tmp_path: Path) -> None:
    with AlignmentStore.open(tmp_path / "a.sqlite", _src(tmp_path)) as st:
        st.record([FrameRecord(i, i / 25, "no_face") for i in range(5)])
        assert not st.no_faces_found  # not finished yet
        st.finish(5)
        assert st.complete and st.no_faces_found and st.frame_count == 5


def test_mark_deleted_and_clean(tmp_path: Path) -> None:
    faces_dir = tmp_path / "faces"
    faces_dir.mkdir()
    names = [f"a_{i:06d}_0.png" for i in range(4)]
    for n in names:
        (faces_dir / n).write_bytes(b"png")
    with AlignmentStore.open(tmp_path / "a.sqlite", _src(tmp_path)) as st:
        st.record([FrameRecord(i, 0.0, "done") for i in range(5)],
                  [_face(i, 0, names[i]) for i in range(4)] + [_face(4, 0, None)])
        (faces_dir / names[1]).unlink()  # the user prunes a face
        assert st.mark_deleted([names[2]]) == 1
        assert [f.frame for f in st.all_faces()] == [0, 1, 3, 4]
        assert len(st.all_faces(include_deleted=True)) == 5
        assert st.clean(faces_dir) == 2  # names[1] (file gone) and names[2] (flagged)
        assert [f.frame for f in st.all_faces(include_deleted=True)] == [0, 3, 4]  # unwritten face kept
        assert st.clean(faces_dir) == 0


_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from changeling.faces.store import AlignmentStore, FrameRecord
    db, src, log, n, delay = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    with AlignmentStore.open(db, src) as st, log.open("a") as out:
        done = st.done_frames()
        batch = []
        for i in range(n):
            if i in done:
                continue
            out.write(f"{i}\\n"); out.flush()  # 'processing' frame i
            time.sleep(delay)
            batch.append(FrameRecord(i, i / 25, "no_face"))
            if len(batch) == 3:
                st.record(batch); batch = []
        if batch:
            st.record(batch)
        st.finish(n)
""")


def test_resume_after_sigkill_records_each_frame_once(tmp_path: Path) -> None:
    src = _src(tmp_path)
    db, log1, log2 = tmp_path / "a.sqlite", tmp_path / "run1.log", tmp_path / "run2.log"
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    n = 40
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(src), str(log1), str(n), "0.05"])
    deadline = time.time() + 120
    while time.time() < deadline and (not log1.exists() or len(log1.read_text().split()) < 11):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with AlignmentStore.open_existing(db) as st:
        committed = st.done_frames()
        assert not st.complete
    run1 = [int(x) for x in log1.read_text().split()]
    assert committed and len(committed) % 3 == 0 and committed == set(range(len(committed)))
    assert len(run1) > len(committed)  # it was killed in the middle of a batch
    subprocess.run([sys.executable, str(script), str(db), str(src), str(log2), str(n), "0"], check=True,
                   timeout=120)
    run2 = [int(x) for x in log2.read_text().split()]
    assert run2 == list(range(min(run2), n)) and min(run2) == len(committed)  # resumed at the first unfinished
    assert not set(run2) & committed  # nothing committed was processed again
    with AlignmentStore.open_existing(db) as st:
        assert st.complete and [f.index for f in st.frames()] == list(range(n))  # each frame once
