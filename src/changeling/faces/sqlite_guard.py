"""Opening SQLite files that may be hostile: an alignments file comes with a project, and projects get shared.

A crafted database can make SQLite loop for ever (a recursive view read as a table), run functions from its
schema (triggers, views, generated columns), change the file on a plain read (a journal-mode switch), or hold
values of any type in any column. So a foreign file is opened read-only (``mode=ro``, ``query_only``) with
``trusted_schema`` off and its ``sqlite_master`` compared entry by entry with the schema changeling itself
creates; nothing else (no view, trigger or extra table) is accepted. Every query runs against a deadline (a
progress handler aborts it), and every value read is checked by the caller with the helpers below. Each
refusal is a one-line :class:`UserError` naming the file.
"""

from __future__ import annotations

import math
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Literal

from changeling.errors import UserError

QUERY_SECONDS = 60.0  # one query's limit: reading every face of a 2-hour video takes a few seconds
PROGRESS_STEPS = 2000  # SQLite virtual-machine steps between two looks at the clock
MAX_VALUE_BYTES = 1 << 20  # the longest text or blob changeling ever stores is a few kB of landmarks

Mode = Literal["ro", "rw", "rwc"]


class Deadline:
    """The progress handler of a connection: aborts the running statement once ``until`` has passed."""

    def __init__(self) -> None:
        self.until = math.inf
        self.expired = False

    def __call__(self) -> int:
        if time.monotonic() > self.until:
            self.expired = True
            return 1  # non-zero: SQLite interrupts the statement
        return 0

    @contextmanager
    def armed(self, path: Path, seconds: float | None = None) -> Iterator[None]:
        """Run the block against the deadline; SQLite errors (but integrity errors, which are the caller's to
        handle) become a :class:`UserError` naming ``path``."""
        self.until = time.monotonic() + (QUERY_SECONDS if seconds is None else seconds)
        self.expired = False
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):  # the caller's mistakes, not the file's
            raise
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # a damaged schema's error text may not be UTF-8
            raise self.error(path, exc) from None
        finally:
            self.until = math.inf

    def error(self, path: Path, exc: sqlite3.Error | UnicodeDecodeError) -> UserError:
        if self.expired:
            return UserError(f"a query on this alignments file ran past its {QUERY_SECONDS:.0f} s limit and was "
                             "stopped (a damaged or hostile file?); delete it to extract again", path)
        return UserError(f"damaged alignments file ({_one_line(str(exc))}); delete it to extract again", path)


def connect(path: Path, mode: Mode, deadline: Deadline) -> sqlite3.Connection:
    """A connection to ``path`` (``ro``: read-only; ``rw``: existing file; ``rwc``: create it) with the
    deadline as its progress handler, ``trusted_schema`` off and values capped at ``MAX_VALUE_BYTES``. Nothing
    here writes to the file, and a read-only connection leaves no file beside it."""
    uri = f"file:{urllib.parse.quote(str(Path(path).absolute()))}?mode={mode}"
    if mode == "ro" and not Path(f"{path}-wal").exists():
        # No write-ahead log: no writer has the file open, and all of it is in the main file. Read it as
        # immutable, so that SQLite creates no -wal and -shm files beside it (a read-only connection could not
        # remove them again).
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        raise deadline.error(path, exc) from None
    try:
        conn.set_progress_handler(deadline, PROGRESS_STEPS)
        if hasattr(conn, "setlimit"):  # Python 3.11+
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        with deadline.armed(path):
            conn.execute("PRAGMA trusted_schema = OFF")  # no function from the file's schema runs
            conn.execute("PRAGMA cell_size_check = ON")  # damaged pages are refused, not followed
            if mode == "ro":
                conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


@cache
def schema_entries(script: str) -> frozenset[tuple[Any, ...]]:
    """The ``sqlite_master`` rows (type, name, table, SQL) that ``script`` creates: what a valid file holds."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(script)
        return frozenset(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
    finally:
        conn.close()


SchemaState = Literal["empty", "partial", "valid"]


def check_schema(conn: sqlite3.Connection, path: Path, deadline: Deadline, script: str, version: int
                 ) -> SchemaState:
    """Compare the file's schema with what ``script`` creates at ``user_version`` ``version``: ``"valid"``,
    ``"empty"`` (a new file) or ``"partial"`` (version 0 holding only some of the expected entries: a creation
    that was cut short). Anything else raises :class:`UserError`: another version, another database, and any
    view, trigger, table or index that ``script`` does not create."""
    expected = schema_entries(script)
    with deadline.armed(path):
        found_version = conn.execute("PRAGMA user_version").fetchone()[0]
        entries = set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
    if found_version not in (0, version):
        raise UserError(f"alignments format {shown(found_version)} is not {version} (made by another version?)",
                        path)
    unexpected = sorted(entries - expected, key=repr)
    if unexpected:
        kind, name = unexpected[0][0], unexpected[0][1]
        if found_version == 0 and not entries & expected:
            raise UserError("not a changeling alignments file", path)
        kind = kind if kind in ("table", "index", "view", "trigger") else shown(kind)
        what = (f"its {kind} {shown(name)} is not the one changeling makes" if name in {e[1] for e in expected}
                else f"holds a {kind} named {shown(name)} that changeling does not make")
        raise UserError(f"{what} (views, triggers and changed or extra tables are refused); not a changeling "
                        "alignments file, or a tampered one", path)
    if found_version == 0:
        return "partial" if entries else "empty"
    missing = sorted(str(e[1]) for e in expected - entries)
    if missing:
        raise UserError(f"lacks {', '.join(missing)} (damaged, or not a changeling alignments file)", path)
    return "valid"


# --- values read back ---------------------------------------------------------------------------------


class BadValue(ValueError):
    """A value in a row that changeling would never have written; the caller names the file and the row."""


def integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadValue(f"{name} is {shown(value)}, expected an integer from {low} to {high}")
    return value


def real(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise BadValue(f"{name} is {shown(value)}, expected a finite number from {low:g} to {high:g}")
    return float(value)


def text(value: Any, name: str, max_chars: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > max_chars or "\0" in value:
        raise BadValue(f"{name} is {shown(value)}, expected text of at most {max_chars} characters")
    return value


def shown(value: Any, limit: int = 40) -> str:
    """A value for a one-line message: its type for blobs and long text, never a line break."""
    if isinstance(value, bytes):
        return f"a blob of {len(value)} bytes"
    r = repr(value)
    return _one_line(r if len(r) <= limit else r[:limit] + "...")


def _one_line(s: str) -> str:
    return s.replace("\n", " ").replace("\r", " ")
