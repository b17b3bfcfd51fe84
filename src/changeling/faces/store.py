"""Per-source alignments in SQLite: what extraction found in every frame, written as it goes.

One file per source (a video, an image or a folder of images) under ``alignments/``. Tables:

- ``source``: one row, the source's path, content hash, side (A/B), frame count (when known), settings, and state
  (``running`` until the whole source was read, then ``complete``).
- ``frames``: one row per frame that was dealt with: index (position among the decoded frames), time, status
  (``done``: faces found; ``no_face``; ``skipped``: not selected by every-Nth).
- ``corrupt``: undecodable frames, counted by the index of the next good frame (they have no index of their
  own; the reader skips them).
- ``faces``: frame index, face index, box, landmarks (float32 bytes, never pickle), score, blur, and the face
  file name (NULL when the face was not written, e.g. too blurry), and a ``deleted`` flag.

WAL journal, one transaction per batch of frames: a run killed at any moment leaves whole batches only, and the
next run starts at the first frame not recorded, so no frame is recorded twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from changeling.errors import UserError
from changeling.faces.sqlite_guard import (
    MAX_VALUE_BYTES,
    BadValue,
    Deadline,
    check_schema,
    connect,
    integer,
    real,
    shown,
    text,
)
from changeling.fileio import check_regular
from changeling.video.images import is_image_path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MIB = 1 << 20
MAX_INDEX = 1 << 40  # frame and face indices, frame counts
MAX_POINTS = 1000  # landmarks per face (468 or 478 in practice)
MAX_COORD = 1e6  # frame pixels: boxes and landmarks (a face may reach a little past the frame's edges)
MAX_SECONDS = 1e9  # frame times
MAX_BLUR = 1e9  # variance of the Laplacian of an 8-bit image is below 2.1e7
FrameStatus = Literal["done", "no_face", "skipped"]
FRAME_STATUSES: tuple[str, ...] = ("done", "no_face", "skipped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS source (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    path TEXT NOT NULL,
    hash TEXT NOT NULL,
    side TEXT NOT NULL DEFAULT '',
    frame_count INTEGER,
    settings TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'complete')),
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    idx INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'no_face', 'skipped'))
);
CREATE TABLE IF NOT EXISTS corrupt (
    before_idx INTEGER PRIMARY KEY,
    count INTEGER NOT NULL CHECK (count > 0)
);
CREATE TABLE IF NOT EXISTS faces (
    frame INTEGER NOT NULL REFERENCES frames(idx),
    face INTEGER NOT NULL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    points INTEGER NOT NULL,
    landmarks BLOB NOT NULL,
    score REAL NOT NULL,
    blur REAL NOT NULL DEFAULT 0,
    file TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (frame, face)
);
CREATE INDEX IF NOT EXISTS faces_file ON faces(file);
"""


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def source_key(path: Path) -> str:
    """The file-system-safe name of a source: its file (or folder) name."""
    return _SAFE.sub("_", Path(path).name).strip("._") or "input"


def alignments_path(alignments_dir: Path, source: Path, side: str) -> Path:
    """Where the alignments of ``source`` extracted as ``side`` live: ``alignments/<file name>.<side>.sqlite``."""
    return Path(alignments_dir) / f"{source_key(source)}.{side}.sqlite"


def content_hash(path: Path) -> str:
    """Identify a source's content cheaply: its size and a SHA-256 of its first and last MiB. For a folder of
    images: a SHA-256 of the images' names, sizes and content hashes."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(q for q in path.iterdir() if q.is_file() and is_image_path(q)):
            h.update(f"{p.name}\0{content_hash(p)}\n".encode())
        return f"dir:{h.hexdigest()}"
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(MIB))
        if size > MIB:
            f.seek(max(MIB, size - MIB))
            h.update(f.read(MIB))
    return f"{size}:{h.hexdigest()}"


@dataclass(frozen=True)
class FrameRecord:
    index: int
    time: float
    status: FrameStatus


@dataclass(frozen=True)
class FaceRecord:
    frame: int
    face: int  # 0 = largest in the frame
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1 frame pixels
    landmarks: np.ndarray  # (N, 3) float32 frame pixels
    score: float
    blur: float = 0.0
    file: str | None = None  # face PNG name in the faces folder (None: not written)
    deleted: bool = False


class AlignmentStore:
    """The alignments of one source. Open with :meth:`open` (extraction; checks the content hash) or
    :meth:`open_existing` (readers, and ``faces clean`` with ``writable``). Use as a context manager or call
    :meth:`close`.

    The file is untrusted (it may come with a shared project): it is checked read-only before anything else
    (see :mod:`changeling.faces.sqlite_guard`), every query runs against a deadline, and every value read is
    checked; a damaged or hostile file raises :class:`UserError` naming it.
    """

    def __init__(self, db_path: Path, conn: sqlite3.Connection, deadline: Deadline) -> None:
        self.path = Path(db_path)
        self._conn = conn
        self._deadline = deadline

    # --- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, db_path: Path, source: Path, *, side: str = "", frame_count: int | None = None,
             settings: dict[str, Any] | None = None, source_hash: str | None = None) -> AlignmentStore:
        """Open the store for ``source``, creating it if needed. Raises :class:`UserError` when the store was
        made for a file with different content."""
        db_path = Path(db_path)
        digest = source_hash or content_hash(source)
        store = cls._connected(db_path, writable=True, create=True)
        try:
            row = store._source_row(allow_none=True)
            now = time.time()
            if row is None:
                with store._tx():
                    store._conn.execute(
                        "INSERT INTO source (id, path, hash, side, frame_count, settings, created, updated) "
                        "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                        (str(source), digest, side, frame_count, json.dumps(settings or {}, sort_keys=True), now,
                         now))
            elif row.hash != digest:
                raise UserError(f"was made for a different file ({row.path}, other content); delete it to extract "
                                f"{source} again", db_path)
            elif side and row.side and row.side != side:
                raise UserError(f"holds the faces of side {row.side}, not {side}", db_path)
            elif settings is not None:
                old = store.settings()
                if old and old != settings:
                    changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                    log.warning("%s: settings changed since this source was started (%s); finished frames are "
                                "kept", db_path, ", ".join(changed))
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_existing(cls, db_path: Path, *, writable: bool = False) -> AlignmentStore:
        """Open a store that must exist: read-only for reading, ``writable`` for cleaning."""
        db_path = Path(db_path)
        store = cls._connected(db_path, writable=writable, create=False)
        try:
            store._source_row()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _connected(cls, db_path: Path, *, writable: bool, create: bool) -> AlignmentStore:
        """A checked connection. An existing file is first opened read-only and its schema checked; only then
        is it opened for writing (checked again: it could have been swapped meanwhile). A missing file is
        created only with ``create``."""
        deadline = Deadline()
        if not _exists(db_path):
            if not create:
                raise UserError("no such alignments file", db_path)
            return cls(db_path, _create(db_path, deadline), deadline)
        _check_plain_file(db_path, writable)
        conn = connect(db_path, "ro", deadline)
        try:
            state = check_schema(conn, db_path, deadline, _SCHEMA, SCHEMA_VERSION)
        finally:
            conn.close()
        if state != "valid" and not create:
            raise UserError("not a changeling alignments file (no source recorded)", db_path)
        if not writable:
            return cls(db_path, connect(db_path, "ro", deadline), deadline)
        conn = connect(db_path, "rw", deadline)
        try:
            if check_schema(conn, db_path, deadline, _SCHEMA, SCHEMA_VERSION) != "valid":
                _create_schema(conn, db_path, deadline)  # a creation cut short (file made, tables not all)
            with deadline.armed(db_path):
                conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: a killed process loses no committed batch
                conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return cls(db_path, conn, deadline)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AlignmentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._deadline.armed(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of one query, read against the deadline."""
        with self._deadline.armed(self.path):
            return self._conn.execute(sql, tuple(params)).fetchall()

    def _bad(self, table: str, where: str, exc: BadValue) -> UserError:
        return UserError(f"bad value in table {table} ({where}): {exc}; a damaged or tampered alignments file "
                         "(delete it to extract again)", self.path)

    # --- the source ----------------------------------------------------------------------------------
    def _source_row(self, *, allow_none: bool = False) -> _SourceRow | None:
        rows = self._rows("SELECT path, hash, side, frame_count, settings, state FROM source")
        if not rows and allow_none:
            return None
        if len(rows) != 1:
            raise UserError("not a changeling alignments file (no source recorded)" if not rows else
                            f"holds {len(rows)} source rows instead of one (tampered?)", self.path)
        path, digest, side, count, settings, state = rows[0]
        try:
            row = _SourceRow(
                path=text(path, "path"), hash=text(digest, "hash", 200), side=text(side, "side", 1),
                frame_count=None if count is None else integer(count, "frame_count", 0, MAX_INDEX),
                settings=text(settings, "settings", MAX_VALUE_BYTES), state=text(state, "state", 8))
            if row.side not in ("", "A", "B"):
                raise BadValue(f"side is {row.side!r}, expected A or B")
            if row.state not in ("running", "complete"):
                raise BadValue(f"state is {row.state!r}, expected running or complete")
        except BadValue as exc:
            raise self._bad("source", "its one row", exc) from None
        return row

    def _source(self) -> _SourceRow:
        row = self._source_row()
        assert row is not None
        return row

    @property
    def source_path(self) -> str:
        """The source's path as extraction was given it (for messages; see :meth:`source_file` to read it)."""
        return self._source().path

    @property
    def source_hash(self) -> str:
        return self._source().hash

    @property
    def side(self) -> str:
        return self._source().side

    @property
    def frame_count(self) -> int | None:
        return self._source().frame_count

    @property
    def complete(self) -> bool:
        """True when the whole source was read (every frame dealt with)."""
        return self._source().state == "complete"

    @property
    def no_faces_found(self) -> bool:
        """True when the whole source was read and no frame held a face."""
        return self.complete and self.face_count(include_deleted=True) == 0

    def settings(self) -> dict[str, Any]:
        try:
            value = json.loads(self._source().settings, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise self._bad("source", "settings", BadValue(f"not JSON ({exc})")) from None
        if not isinstance(value, dict):
            raise self._bad("source", "settings", BadValue("not a JSON object"))
        return value

    def source_file(self, project_root: Path) -> Path:
        """The source to read frames from again (the trainer's full-frame preview does): a regular file (or a
        folder of images) inside ``project_root``, or outside it only when its content is the one extracted
        (same content hash), so that a tampered store cannot make changeling read any other file. Links are
        followed before the check. A FIFO, a device or a missing file is refused. Raises :class:`UserError`."""
        row = self._source()
        path = Path(row.path)
        try:
            st = os.stat(path)
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:
            raise UserError(f"the source {row.path!r} this file names cannot be read "
                            f"({getattr(exc, 'strerror', None) or type(exc).__name__})", self.path) from None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise UserError(f"the source {row.path!r} this file names is not a regular file", self.path)
        if resolved.is_relative_to(Path(project_root).resolve()):
            return resolved
        try:
            same = content_hash(resolved) == row.hash
        except OSError:
            same = False
        if not same:
            raise UserError(f"the source {row.path!r} this file names is outside the project and is not the file "
                            "that was extracted (other content); refusing to read it", self.path)
        return resolved

    def finish(self, frame_count: int) -> None:
        """Mark the source as completely read, with its true frame count."""
        with self._tx():
            self._conn.execute("UPDATE source SET state = 'complete', frame_count = ?, updated = ?",
                               (int(frame_count), time.time()))

    # --- writing -------------------------------------------------------------------------------------
    def record(self, frames: Sequence[FrameRecord], faces: Sequence[FaceRecord] = (),
               corrupt: dict[int, int] | None = None) -> None:
        """Record a batch of frames with their faces (and undecodable frames counted before frame k) in
        one transaction. A frame already recorded is an error (it would be processed twice)."""
        known = {f.index for f in frames}
        for face in faces:
            if face.frame not in known:
                raise ValueError(f"face of frame {face.frame} is not in this batch's frames")
        for f in frames:
            if f.status not in FRAME_STATUSES:
                raise ValueError(f"bad frame status {f.status!r}")
        with self._tx():
            self._conn.executemany("INSERT INTO frames (idx, time, status) VALUES (?, ?, ?)",
                                   [(int(f.index), float(f.time), f.status) for f in frames])
            self._conn.executemany(
                "INSERT INTO faces (frame, face, x0, y0, x1, y1, points, landmarks, score, blur, file, deleted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [_face_row(f) for f in faces])
            if corrupt:
                self._conn.executemany("INSERT OR REPLACE INTO corrupt (before_idx, count) VALUES (?, ?)",
                                       [(int(k), int(v)) for k, v in corrupt.items() if v > 0])
            self._conn.execute("UPDATE source SET updated = ?", (time.time(),))

    def forget_frames(self, indices: Iterable[int]) -> None:
        """Drop these frames and their faces in one transaction, so that a resumed run does them again (their
        face files did not survive a crash)."""
        rows = [(int(i),) for i in indices]
        with self._tx():
            self._conn.executemany("DELETE FROM faces WHERE frame = ?", rows)
            self._conn.executemany("DELETE FROM frames WHERE idx = ?", rows)

    # --- reading -------------------------------------------------------------------------------------
    def done_frames(self) -> set[int]:
        """Indices of the frames already dealt with (any status)."""
        try:
            return {integer(r[0], "idx", 0, MAX_INDEX) for r in self._rows("SELECT idx FROM frames")}
        except BadValue as exc:
            raise self._bad("frames", "a frame index", exc) from None

    def first_unfinished(self) -> int:
        """The first frame index not yet recorded (resuming starts here)."""
        done = self.done_frames()
        i = 0
        while i in done:
            i += 1
        return i

    def frames(self) -> list[FrameRecord]:
        out = []
        for i, t, s in self._rows("SELECT idx, time, status FROM frames ORDER BY idx"):
            try:
                out.append(FrameRecord(integer(i, "idx", 0, MAX_INDEX), real(t, "time", -MAX_SECONDS, MAX_SECONDS),
                                       _status(s)))
            except BadValue as exc:
                raise self._bad("frames", f"frame {shown(i)}", exc) from None
        return out

    def status_counts(self) -> dict[str, int]:
        out = dict.fromkeys(FRAME_STATUSES, 0)
        try:
            for status, n in self._rows("SELECT status, COUNT(*) FROM frames GROUP BY status"):
                out[_status(status)] = int(n)
            total = self._rows("SELECT COALESCE(SUM(count), 0) FROM corrupt")[0][0]
            out["corrupt"] = integer(total, "the corrupt count", 0, MAX_INDEX)
        except BadValue as exc:
            raise self._bad("frames", "a status", exc) from None
        return out

    def face_count(self, *, include_deleted: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM faces" + ("" if include_deleted else " WHERE deleted = 0")
        return int(self._rows(sql)[0][0])

    def faces_for_frame(self, index: int, *, include_deleted: bool = False) -> list[FaceRecord]:
        sql = "SELECT * FROM faces WHERE frame = ?" + ("" if include_deleted else " AND deleted = 0")
        return [self._face(r) for r in self._rows(sql + " ORDER BY face", (int(index),))]

    def all_faces(self, *, include_deleted: bool = False) -> list[FaceRecord]:
        sql = "SELECT * FROM faces" + ("" if include_deleted else " WHERE deleted = 0")
        return [self._face(r) for r in self._rows(sql + " ORDER BY frame, face")]

    def _face(self, row: tuple[Any, ...]) -> FaceRecord:
        try:
            return _face_from_row(row)
        except BadValue as exc:
            where = f"frame {shown(row[0])}, face {shown(row[1])}" if len(row) > 1 else "a row"
            raise self._bad("faces", where, exc) from None

    # --- pruning ---------------------------------------------------------------------------------------
    def mark_deleted(self, files: Iterable[str]) -> int:
        """Flag the faces stored under these file names as deleted (kept, but no longer returned)."""
        names = [(str(f),) for f in files]
        with self._tx():
            before = self._conn.total_changes
            self._conn.executemany("UPDATE faces SET deleted = 1 WHERE file = ? AND deleted = 0", names)
            return self._conn.total_changes - before

    def clean(self, faces_dir: Path) -> int:
        """Remove the entries of faces whose files are gone from ``faces_dir`` (the user deleted them), and of
        faces flagged deleted. Faces never written (file NULL) are kept. Returns how many were removed.

        A face counts as present by its metadata (this source's hash, frame and face index), wherever it lies
        under ``faces_dir``, so faces renamed by ``faces sort`` or moved by ``faces cluster`` are not lost."""
        from changeling.faces.facefile import FaceFileError, read_meta

        faces_dir = Path(faces_dir)
        rows = [(f.frame, f.face, f.file, f.deleted) for f in self.all_faces(include_deleted=True)
                if f.file is not None]
        stored = {name for _fr, _fa, name, _d in rows}
        names = {p.name for p in faces_dir.iterdir()} if faces_dir.is_dir() else set()
        present: set[tuple[int, int]] = set()
        source_hash = self.source_hash
        for p in sorted(faces_dir.rglob("*.png")) if faces_dir.is_dir() else []:
            if p.name in stored and p.parent == faces_dir:
                continue  # found under its own name
            try:
                meta = read_meta(p)
            except FaceFileError:
                continue
            if meta.source_hash == source_hash:
                present.add((meta.frame_index, meta.face_index))
        gone = [(fr, fa) for fr, fa, name, deleted in rows
                if deleted or (name not in names and (fr, fa) not in present)]
        with self._tx():
            self._conn.executemany("DELETE FROM faces WHERE frame = ? AND face = ?", gone)
        return len(gone)


@dataclass(frozen=True)
class _SourceRow:
    path: str
    hash: str
    side: str
    frame_count: int | None
    settings: str  # JSON
    state: str


def _exists(path: Path) -> bool:
    try:
        os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or type(exc).__name__})", path) from None
    return True


def _check_plain_file(path: Path, writable: bool) -> None:
    """A regular file (not a FIFO or device, which would block or misbehave); for writing, not a link either
    (a planted link would make extraction write wherever it points)."""
    if writable and path.is_symlink():
        raise UserError("is a symbolic link; an alignments file to write must be a plain file", path)
    try:
        check_regular(path)
    except OSError as exc:
        raise UserError(f"not an alignments file ({exc.strerror or exc})", path) from None


def _create(db_path: Path, deadline: Deadline) -> sqlite3.Connection:
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the alignments folder ({exc.strerror or exc})", db_path.parent) from None
    conn = connect(db_path, "rwc", deadline)
    try:
        with deadline.armed(db_path):
            conn.execute("PRAGMA journal_mode = WAL")  # a new file: WAL from the start (readers never switch it)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        _create_schema(conn, db_path, deadline)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_schema(conn: sqlite3.Connection, db_path: Path, deadline: Deadline) -> None:
    """Create the tables and set the version in one transaction: a run killed here leaves a file that is
    either empty or complete."""
    with deadline.armed(db_path):
        conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _status(value: Any) -> FrameStatus:
    if value not in FRAME_STATUSES:
        raise BadValue(f"status is {value!r}, expected one of {', '.join(FRAME_STATUSES)}")
    return value  # type: ignore[no-any-return]


def _plain_name(value: Any) -> str | None:
    """A face file name: NULL, or a bare file name (no folder part)."""
    if value is None:
        return None
    name = text(value, "file", 255)
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise BadValue(f"file is {name!r}, expected a bare file name")
    return name


def _face_row(f: FaceRecord) -> tuple[Any, ...]:
    box = np.asarray(f.box, dtype=np.float32).reshape(4)
    lm = np.ascontiguousarray(np.asarray(f.landmarks, dtype=np.float32))
    if lm.ndim != 2 or lm.shape[1] != 3:
        raise ValueError(f"expected (N, 3) landmarks, got {lm.shape}")
    return (int(f.frame), int(f.face), *map(float, box), int(lm.shape[0]), lm.astype("<f4").tobytes(),
            float(f.score), float(f.blur), f.file, int(f.deleted))


def _face_from_row(r: tuple[Any, ...]) -> FaceRecord:
    """A checked face row: :class:`BadValue` for anything changeling would not have written (a blob of the
    wrong size or type, NaN, infinities or huge numbers, a file name with a folder in it)."""
    if len(r) != 12:
        raise BadValue(f"{len(r)} columns, expected 12")
    frame, face, x0, y0, x1, y1, points, blob, score, blur, file, deleted = r
    n = integer(points, "points", 1, MAX_POINTS)
    if not isinstance(blob, bytes) or len(blob) != n * 12:
        got = f"{len(blob)} bytes" if isinstance(blob, bytes) else f"a {type(blob).__name__}"
        raise BadValue(f"landmarks are {got}, expected {n} x 3 float32 ({n * 12} bytes)")
    lm = np.frombuffer(blob, dtype="<f4").reshape(n, 3).astype(np.float32)
    if not np.isfinite(lm).all() or float(np.abs(lm).max()) > MAX_COORD:
        raise BadValue(f"landmarks hold values that are not finite or beyond {MAX_COORD:g} pixels")
    box = np.array([real(v, "box", -MAX_COORD, MAX_COORD) for v in (x0, y0, x1, y1)], np.float32)
    return FaceRecord(frame=integer(frame, "frame", 0, MAX_INDEX), face=integer(face, "face", 0, MAX_INDEX),
                      box=box, landmarks=lm, score=real(score, "score", 0.0, 1.0),
                      blur=real(blur, "blur", 0.0, MAX_BLUR), file=_plain_name(file),
                      deleted=bool(integer(deleted, "deleted", 0, 1)))
