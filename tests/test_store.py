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
from hangs import outcome


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


# ------------------------------------------------------------------------------------- hostile files
# An alignments file comes with a project, and projects get shared: each file below is crafted from a valid
# one, and reading it must end (never hang) with one UserError line naming it, and never change it.

def _valid_store(tmp_path: Path) -> Path:
    db, src = tmp_path / "a.sqlite", _src(tmp_path)
    with AlignmentStore.open(db, src, frame_count=3, settings={"size": 64}) as st:
        st.record([FrameRecord(0, 0.0, "done"), FrameRecord(1, 0.04, "done"), FrameRecord(2, 0.08, "no_face")],
                  [_face(0, 0, "a_000000_0.png"), _face(1, 0, "a_000001_0.png")], corrupt={1: 1})
        st.finish(3)
    return db


def _tamper(db: Path, script: str) -> None:
    """Edit the file as an attacker would: with SQLite itself, constraints and schema protection off, leaving it
    in rollback-journal mode (so that a reader switching it to WAL would show)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.executescript(script)
    conn.close()


def _read_everything(db: Path) -> None:
    """What convert, `faces clean`, extraction's resume and the trainer's preview read."""
    with AlignmentStore.open_existing(db) as st:
        _ = (st.source_path, st.source_hash, st.side, st.frame_count, st.complete, st.no_faces_found)
        st.settings()
        st.frames()
        st.status_counts()
        st.done_frames()
        st.first_unfinished()
        for i in range(3):
            st.faces_for_frame(i)
        st.all_faces(include_deleted=True)


NAN_BLOB = "X'" + np.full((478, 3), np.nan, "<f4").tobytes().hex() + "'"
HOSTILE = {
    "endless-recursive-view": "DROP TABLE source; CREATE VIEW source AS WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL "
                              "SELECT i + 1 FROM r) SELECT 1 AS id, 'a.mp4' AS path, 'h' AS hash, 'A' AS side, "
                              "3 AS frame_count, '{}' AS settings, 'complete' AS state, 0.0 AS created, "
                              "0.0 AS updated FROM r;",
    "trigger": "CREATE TRIGGER wipe AFTER UPDATE ON faces BEGIN DELETE FROM frames; END;",
    "extra-table": "CREATE TABLE evil (x);",
    "changed-table": "ALTER TABLE faces ADD COLUMN g INTEGER GENERATED ALWAYS AS (1) VIRTUAL;",
    "blob-size-does-not-match-points": "UPDATE faces SET points = 10;",
    "blob-stored-as-text": "UPDATE faces SET landmarks = 'not a blob' WHERE frame = 1;",
    "nan-landmarks": f"UPDATE faces SET landmarks = {NAN_BLOB} WHERE frame = 1;",
    "huge-box": "UPDATE faces SET x0 = 1e300 WHERE frame = 0;",
    "infinite-score": "UPDATE faces SET score = 9e999;",
    "text-face-index": "UPDATE faces SET face = 'zero' WHERE frame = 0;",
    "text-frame-time": "UPDATE frames SET time = 'noon' WHERE idx = 1;",
    "negative-corrupt-count": "UPDATE corrupt SET count = -5;",
    "unknown-status": "UPDATE frames SET status = 'evil' WHERE idx = 2;",
    "file-name-with-folders": "UPDATE faces SET file = '../../../etc/passwd' WHERE frame = 0;",
    "settings-not-json": "UPDATE source SET settings = '{';",
    "two-source-rows": "INSERT INTO source (id, path, hash, side, settings, state, created, updated) "
                       "VALUES (2, 'b.mp4', 'h', 'A', '{}', 'complete', 0, 0);",
}


SCHEMA_CHANGES = ("endless-recursive-view", "trigger", "extra-table", "changed-table")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_alignments_are_refused_in_one_line_without_hanging(tmp_path: Path, name: str) -> None:
    db = _valid_store(tmp_path)
    _tamper(db, HOSTILE[name])
    before = db.read_bytes()
    err = outcome(lambda: _read_everything(db))
    assert isinstance(err, UserError), repr(err)
    assert str(err).startswith(f"{db}: ") and "\n" not in str(err), str(err)
    assert db.read_bytes() == before  # refused without a change
    # `faces clean` (which writes) ends too: a schema changeling does not make is refused before anything is
    # written; bad values are refused where they are read
    err = outcome(lambda: AlignmentStore.open_existing(db, writable=True).clean(tmp_path))
    assert err is None or isinstance(err, UserError), repr(err)
    if name in SCHEMA_CHANGES:
        assert isinstance(err, UserError) and db.read_bytes() == before, repr(err)


def test_a_fifo_in_place_of_the_file_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "a.sqlite"
    os.mkfifo(fifo)
    for fn in (lambda: AlignmentStore.open_existing(fifo), lambda: AlignmentStore.open(fifo, _src(tmp_path))):
        err = outcome(fn)
        assert isinstance(err, UserError) and "not an alignments file" in str(err), repr(err)


def test_a_planted_link_is_not_written_through(tmp_path: Path) -> None:
    elsewhere = _valid_store(tmp_path)
    before = elsewhere.read_bytes()
    link = tmp_path / "proj" / "alignments" / "a.sqlite"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    with pytest.raises(UserError, match="symbolic link"):
        AlignmentStore.open(link, _src(tmp_path))
    with pytest.raises(UserError, match="symbolic link"):
        AlignmentStore.open_existing(link, writable=True)
    assert elsewhere.read_bytes() == before


def test_reading_never_changes_the_file(tmp_path: Path) -> None:
    """Reading switched a rollback-journal file to WAL (a change to its header) and left -wal and -shm files."""
    db = _valid_store(tmp_path)
    _tamper(db, "")  # a valid file, in rollback-journal mode
    before, names = db.read_bytes(), sorted(os.listdir(tmp_path))
    assert before[18:20] == b"\x01\x01"  # the header's journal-mode bytes: rollback journal
    _read_everything(db)
    assert db.read_bytes() == before and sorted(os.listdir(tmp_path)) == names
    db2 = _valid_store(tmp_path / "wal") if (tmp_path / "wal").mkdir() is None else None
    assert db2 is not None and db2.read_bytes()[18:20] == b"\x02\x02"  # made by changeling: WAL
    names = sorted(os.listdir(db2.parent))
    _read_everything(db2)
    assert sorted(os.listdir(db2.parent)) == names  # no -wal or -shm left behind by a read-only reader


def test_every_query_runs_against_a_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query running past its limit is stopped with a one-line error (here the limit is 0 s, so any query
    of more than a few thousand SQLite steps is stopped: no timing involved)."""
    from changeling.faces import sqlite_guard

    db = tmp_path / "big.sqlite"
    with AlignmentStore.open(db, _src(tmp_path)) as st:
        st.record([FrameRecord(i, i / 25, "no_face") for i in range(3000)])
    with AlignmentStore.open_existing(db) as st:
        monkeypatch.setattr(sqlite_guard, "QUERY_SECONDS", 0.0)
        with pytest.raises(UserError, match="ran past its 0 s limit") as err:
            st.frames()
        assert str(err.value).startswith(str(db)) and "\n" not in str(err.value)
        monkeypatch.setattr(sqlite_guard, "QUERY_SECONDS", 60.0)
        assert len(st.frames()) == 3000  # the same query within its limit


def test_source_file_is_confined_to_the_project_or_the_extracted_content(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "alignments").mkdir(parents=True)
    inside = _src(root, b"inside" * 100, "in.mp4")
    outside = _src(tmp_path, b"outside" * 100, "out.mp4")
    secret = _src(tmp_path, b"a private file" * 10, "secret.txt")

    def store_for(recorded: Path, made_from: Path) -> AlignmentStore:
        db = root / "alignments" / f"{recorded.name}.sqlite"
        db.unlink(missing_ok=True)
        st = AlignmentStore.open(db, made_from)
        st.close()
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("UPDATE source SET path = ?", (str(recorded),))
        conn.close()
        return AlignmentStore.open_existing(db)

    with store_for(inside, inside) as st:
        assert st.source_file(root) == inside.resolve()
    with store_for(outside, outside) as st:  # footage kept outside the project: its content was extracted
        assert st.source_file(root) == outside.resolve()
    with store_for(secret, outside) as st, pytest.raises(UserError, match="outside the project"):
        st.source_file(root)  # a tampered store naming another file
    link = root / "link.mp4"
    link.symlink_to(secret)
    with store_for(link, inside) as st, pytest.raises(UserError, match="outside the project"):
        st.source_file(root)  # a link inside the project to a file outside it
    fifo = root / "fifo.mp4"
    os.mkfifo(fifo)
    with store_for(fifo, inside):
        pass

    def read_fifo() -> None:
        with AlignmentStore.open_existing(root / "alignments" / "fifo.mp4.sqlite") as st:
            st.source_file(root)

    err = outcome(read_fifo)
    assert isinstance(err, UserError) and "not a regular file" in str(err), repr(err)
    with store_for(root / "gone.mp4", inside) as st, pytest.raises(UserError, match="cannot be read"):
        st.source_file(root)


def test_forget_frames_makes_them_unfinished(tmp_path: Path) -> None:
    db = _valid_store(tmp_path)
    with AlignmentStore.open_existing(db, writable=True) as st:
        st.forget_frames([1])
        assert st.done_frames() == {0, 2} and st.first_unfinished() == 1
        assert [f.frame for f in st.all_faces()] == [0]


def test_the_trainers_frame_preview_does_not_hang_on_a_hostile_store(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The trainer reads A's alignments for its full-frame preview: a crafted store is refused there (the preview
    is skipped with a warning) instead of hanging the trainer."""
    from changeling.project import init_project
    from changeling.train.frame_preview import make_frame_preview

    project = init_project(tmp_path / "proj")
    db = _valid_store(project.alignments_dir)
    db.rename(project.alignments_dir / "a.mp4.A.sqlite")
    _tamper(project.alignments_dir / "a.mp4.A.sqlite", HOSTILE["endless-recursive-view"])
    err = outcome(lambda: make_frame_preview(project, "whole"))
    assert err is None
    assert "no full-frame preview" in caplog.text and "views, triggers" in caplog.text
