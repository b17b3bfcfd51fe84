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
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from changeling.errors import UserError
from changeling.video.images import is_image_path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MIB = 1 << 20
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
    :meth:`open_existing` (readers). Use as a context manager or call :meth:`close`."""

    def __init__(self, db_path: Path, conn: sqlite3.Connection) -> None:
        self.path = Path(db_path)
        self._conn = conn

    # --- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, db_path: Path, source: Path, *, side: str = "", frame_count: int | None = None,
             settings: dict[str, Any] | None = None, source_hash: str | None = None) -> AlignmentStore:
        """Open the store for ``source``, creating it if needed. Raises :class:`UserError` when the store was
        made for a file with different content."""
        db_path = Path(db_path)
        digest = source_hash or content_hash(source)
        store = cls(db_path, _connect(db_path))
        row = store._conn.execute("SELECT path, hash, side FROM source WHERE id = 1").fetchone()
        now = time.time()
        if row is None:
            with store._tx():
                store._conn.execute(
                    "INSERT INTO source (id, path, hash, side, frame_count, settings, created, updated) "
                    "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                    (str(source), digest, side, frame_count, json.dumps(settings or {}, sort_keys=True), now, now))
        elif row[1] != digest:
            store.close()
            raise UserError(f"was made for a different file ({row[0]}, other content); delete it to extract "
                            f"{source} again", db_path)
        elif side and row[2] and row[2] != side:
            store.close()
            raise UserError(f"holds the faces of side {row[2]}, not {side}", db_path)
        elif settings is not None:
            old = json.loads(store._conn.execute("SELECT settings FROM source").fetchone()[0])
            if old and old != settings:
                changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                log.warning("%s: settings changed since this source was started (%s); finished frames are kept",
                            db_path, ", ".join(changed))
        return store

    @classmethod
    def open_existing(cls, db_path: Path) -> AlignmentStore:
        """Open a store that must exist (for reading and cleaning)."""
        db_path = Path(db_path)
        if not db_path.is_file():
            raise UserError("no such alignments file", db_path)
        store = cls(db_path, _connect(db_path, create=False))
        if store._conn.execute("SELECT COUNT(*) FROM source").fetchone()[0] != 1:
            store.close()
            raise UserError("not a changeling alignments file (no source recorded)", db_path)
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AlignmentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- the source ----------------------------------------------------------------------------------
    @property
    def source_path(self) -> str:
        return str(self._conn.execute("SELECT path FROM source").fetchone()[0])

    @property
    def source_hash(self) -> str:
        return str(self._conn.execute("SELECT hash FROM source").fetchone()[0])

    @property
    def side(self) -> str:
        return str(self._conn.execute("SELECT side FROM source").fetchone()[0])

    @property
    def frame_count(self) -> int | None:
        v = self._conn.execute("SELECT frame_count FROM source").fetchone()[0]
        return None if v is None else int(v)

    @property
    def complete(self) -> bool:
        """True when the whole source was read (every frame dealt with)."""
        return bool(self._conn.execute("SELECT state FROM source").fetchone()[0] == "complete")

    @property
    def no_faces_found(self) -> bool:
        """True when the whole source was read and no frame held a face."""
        return self.complete and self.face_count(include_deleted=True) == 0

    def settings(self) -> dict[str, Any]:
        return dict(json.loads(self._conn.execute("SELECT settings FROM source").fetchone()[0]))

    def finish(self, frame_count: int) -> None:
        """Mark the source as completely read, with its true frame count."""
        with self._tx():
            self._conn.execute("UPDATE source SET state = 'complete', frame_count = ?, updated = ?",
                               (int(frame_count), time.time()))

    # --- writing -------------------------------------------------------------------------------------
    def record(self, frames: Sequence[FrameRecord], faces: Sequence[FaceRecord] = (),
               corrupt: dict[int, int] | None = None) -> None:
        """Record a batch of frames with their faces (and undecodable frames counted before frame index k) in
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

    # --- reading -------------------------------------------------------------------------------------
    def done_frames(self) -> set[int]:
        """Indices of the frames already dealt with (any status)."""
        return {int(r[0]) for r in self._conn.execute("SELECT idx FROM frames")}

    def first_unfinished(self) -> int:
        """The first frame index not yet recorded (resuming starts here)."""
        done = self.done_frames()
        i = 0
        while i in done:
            i += 1
        return i

    def frames(self) -> list[FrameRecord]:
        return [FrameRecord(int(i), float(t), s) for i, t, s in
                self._conn.execute("SELECT idx, time, status FROM frames ORDER BY idx")]

    def status_counts(self) -> dict[str, int]:
        out = dict.fromkeys(FRAME_STATUSES, 0)
        for status, n in self._conn.execute("SELECT status, COUNT(*) FROM frames GROUP BY status"):
            out[str(status)] = int(n)
        out["corrupt"] = int(self._conn.execute("SELECT COALESCE(SUM(count), 0) FROM corrupt").fetchone()[0])
        return out

    def face_count(self, *, include_deleted: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM faces" + ("" if include_deleted else " WHERE deleted = 0")
        return int(self._conn.execute(sql).fetchone()[0])

    def faces_for_frame(self, index: int, *, include_deleted: bool = False) -> list[FaceRecord]:
        sql = "SELECT * FROM faces WHERE frame = ?" + ("" if include_deleted else " AND deleted = 0")
        return [_face_from_row(r) for r in self._conn.execute(sql + " ORDER BY face", (int(index),))]

    def all_faces(self, *, include_deleted: bool = False) -> list[FaceRecord]:
        sql = "SELECT * FROM faces" + ("" if include_deleted else " WHERE deleted = 0")
        return [_face_from_row(r) for r in self._conn.execute(sql + " ORDER BY frame, face")]

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
        rows = self._conn.execute("SELECT frame, face, file, deleted FROM faces WHERE file IS NOT NULL").fetchall()
        stored = {name for _fr, _fa, name, _d in rows}
        names = {p.name for p in faces_dir.iterdir()} if faces_dir.is_dir() else set()
        present: set[tuple[int, int]] = set()
        for p in sorted(faces_dir.rglob("*.png")) if faces_dir.is_dir() else []:
            if p.name in stored and p.parent == faces_dir:
                continue  # found under its own name
            try:
                meta = read_meta(p)
            except FaceFileError:
                continue
            if meta.source_hash == self.source_hash:
                present.add((meta.frame_index, meta.face_index))
        gone = [(fr, fa) for fr, fa, name, deleted in rows
                if deleted or (name not in names and (fr, fa) not in present)]
        with self._tx():
            self._conn.executemany("DELETE FROM faces WHERE frame = ? AND face = ?", gone)
        return len(gone)


def _connect(db_path: Path, *, create: bool = True) -> sqlite3.Connection:
    try:
        if create:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=30)
        else:
            conn = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: a killed process loses no committed batch
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            conn.close()
            raise UserError(f"alignments format {version} is not {SCHEMA_VERSION} (made by another version?)",
                            db_path)
        if version == 0:
            if not create:
                conn.close()
                raise UserError("not a changeling alignments file", db_path)
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return conn
    except sqlite3.DatabaseError as exc:
        raise UserError(f"not a readable alignments file ({exc})", db_path) from None


def _face_row(f: FaceRecord) -> tuple[Any, ...]:
    box = np.asarray(f.box, dtype=np.float32).reshape(4)
    lm = np.ascontiguousarray(np.asarray(f.landmarks, dtype=np.float32))
    if lm.ndim != 2 or lm.shape[1] != 3:
        raise ValueError(f"expected (N, 3) landmarks, got {lm.shape}")
    return (int(f.frame), int(f.face), *map(float, box), int(lm.shape[0]), lm.astype("<f4").tobytes(),
            float(f.score), float(f.blur), f.file, int(f.deleted))


def _face_from_row(r: tuple[Any, ...]) -> FaceRecord:
    frame, face, x0, y0, x1, y1, points, blob, score, blur, file, deleted = r
    lm = np.frombuffer(blob, dtype="<f4").reshape(int(points), 3).astype(np.float32)
    return FaceRecord(frame=int(frame), face=int(face), box=np.array([x0, y0, x1, y1], np.float32),
                      landmarks=lm, score=float(score), blur=float(blur), file=file, deleted=bool(deleted))
