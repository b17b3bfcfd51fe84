"""Fuzzing the readers of untrusted project files: face metadata (the JSON chunk of a face PNG), settings (TOML)
and alignments (SQLite, edited with SQLite itself or damaged byte by byte).

Whatever they are given, they either succeed with values that pass their own checks, or raise their documented
one-line error (``ValueError`` from ``meta_from_dict``, ``FaceFileError`` from ``read_meta``/``read_face``,
``UserError`` from ``load_settings`` and the alignments store); never any other exception, and never a hang.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import math
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from changeling.config import SECTIONS, Settings, load_settings
from changeling.errors import UserError
from changeling.faces.facefile import (
    CHUNK_KEY,
    FACE_TYPES,
    MASK_NAMES,
    FaceFileError,
    FaceMeta,
    meta_from_dict,
    read_face,
    read_meta,
)

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------------- JSON values

NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 8, 4096, 4097, 2**63, -(2**63), 10**400]),  # bounds, and an int beyond any float
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=30)


def valid_meta_dict(points: int = 468) -> dict[str, Any]:
    """A metadata dict that ``meta_from_dict`` accepts (every field present)."""
    lm = [[float(i % 50), float(i // 50), 0.0] for i in range(points)]
    square = [[1.0, 1.0], [30.0, 1.0], [30.0, 30.0], [1.0, 30.0]]
    return {"source": "a.mp4", "frame_index": 3, "face_index": 0, "size": 32, "face_type": "whole",
            "affine": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "landmarks": lm, "box": [0.0, 0.0, 31.0, 31.0],
            "score": 0.9, "masks": {"hull": square, "mouth": square}, "time": 0.1, "blur": 12.0, "side": "A",
            "source_hash": "123:abc", "version": 1}


KEYS = sorted(FaceMeta.__dataclass_fields__)


@st.composite
def mutated_meta(draw: st.DrawFn) -> Any:
    """A valid metadata dict with a few fields replaced, removed or added (or, rarely, any JSON value)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    d = valid_meta_dict(draw(st.sampled_from([468, 478])))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "row", "mask"]))
        key = draw(st.sampled_from(KEYS))
        if action == "replace":
            d[key] = draw(JSON)
        elif action == "delete":
            d.pop(key, None)
        elif action == "add":
            d[draw(st.text(max_size=8))] = draw(JSON)
        elif action == "row":  # one number inside a matrix
            name = draw(st.sampled_from(["affine", "landmarks", "box"]))
            if isinstance(d.get(name), list) and d[name]:
                if name == "box" and len(d[name]) == 4:
                    d[name][draw(st.integers(0, 3))] = draw(SCALARS)
                else:
                    row = d[name][draw(st.integers(0, len(d[name]) - 1))]
                    if isinstance(row, list) and row:
                        row[draw(st.integers(0, len(row) - 1))] = draw(SCALARS)
        else:
            d["masks"] = {draw(st.sampled_from([*MASK_NAMES, "nose"])): draw(JSON)}
    return d


def assert_meta_is_valid(meta: FaceMeta) -> None:
    """What an accepted metadata must satisfy: it writes back as strict JSON and reads back equal."""
    assert isinstance(meta, FaceMeta)
    assert meta.face_type in FACE_TYPES and 8 <= meta.size <= 4096
    again = meta_from_dict(json.loads(meta.to_json()))  # to_json refuses NaN and infinities
    assert again == meta


def one_line(exc: BaseException) -> None:
    assert "\n" not in str(exc) and str(exc).strip(), repr(exc)


@FAST
@given(mutated_meta())
def test_meta_from_dict_accepts_or_raises_value_error(d: Any) -> None:
    try:
        meta = meta_from_dict(d)
    except ValueError as exc:
        one_line(exc)
        return
    assert_meta_is_valid(meta)


def test_the_unmutated_dict_is_valid() -> None:
    """The fuzzer starts from metadata that is accepted (else every example would only test refusals)."""
    assert_meta_is_valid(meta_from_dict(valid_meta_dict()))


# ---------------------------------------------------------------------------------------------- face PNGs

_PIXELS = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def face_png(chunks: list[tuple[str, str, bool]], size: int = 32) -> bytes:
    img = Image.fromarray(_PIXELS if size == 32 else np.zeros((size, size, 3), np.uint8))
    info = PngImagePlugin.PngInfo()
    for key, text, zipped in chunks:
        info.add_text(key, text, zip=zipped)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _json_text(draw: st.DrawFn) -> str:
    value = draw(mutated_meta())
    text = json.dumps(value, allow_nan=True)  # NaN/Infinity literals included on purpose
    how = draw(st.sampled_from(["as is", "as is", "cut", "noise"]))
    if how == "cut":
        return text[: draw(st.integers(0, len(text)))]
    if how == "noise":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.text(max_size=5)) + text[at:]
    return text


@st.composite
def png_file(draw: st.DrawFn) -> bytes:
    """A small PNG with random text chunks (the changeling key or others), sometimes damaged."""
    chunks = []
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([CHUNK_KEY, CHUNK_KEY, "Comment", "changelin"]))
        text = _json_text(draw) if draw(st.booleans()) else draw(st.text(
            alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=60))
        chunks.append((key, text, draw(st.booleans())))
    data = face_png(chunks, size=draw(st.sampled_from([32, 32, 16])))
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return data


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "face.png"


@FAST
@given(data=png_file())
def test_read_meta_and_read_face_accept_or_raise_face_file_error(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    try:
        meta = read_meta(scratch)
    except FaceFileError as exc:
        one_line(exc)
        assert str(scratch) in str(exc)  # the message names the file
        return
    assert_meta_is_valid(meta)
    try:
        image, meta2 = read_face(scratch)
    except FaceFileError as exc:
        one_line(exc)
        return
    assert meta2 == meta and image.shape == (meta.size, meta.size, 3) and image.dtype == np.uint8


def test_a_valid_face_png_reads() -> None:
    """The generator can make an accepted face file (so the fuzz reaches the success path)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.png"
        path.write_bytes(face_png([(CHUNK_KEY, json.dumps(valid_meta_dict()), True)]))
        image, meta = read_face(path)
        assert image.shape == (32, 32, 3) and meta.size == 32


# ------------------------------------------------------------------------------------------------ settings

FIELDS = {name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}
HINTS = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}


def toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) and key.isascii() else toml_string(key)


def toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # JSON's escapes are TOML's, except surrogate pairs (avoided)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
TOML_SCALAR = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 16, 65536, 65537, 10**6]), st.floats(allow_nan=True, allow_infinity=True),
    TEXT, st.sampled_from(["tiny", "df", "cpu", "auto", "rct", "10m", "1h30m", "90s", "whole", "on", "yes"]),
    st.datetimes(min_value=dt.datetime(1, 1, 1), timezones=st.none()), st.dates(),
)
TOML_VALUE = st.recursive(TOML_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)


def plausible(section: str, key: str) -> st.SearchStrategy[Any]:
    """Values of the right type for a real setting: mostly inside its range, sometimes just outside, and NaN or
    infinities for floats, so that whole documents often pass and what passes gets checked."""
    f = FIELDS.get(section, {}).get(key)
    if f is None:
        return TOML_VALUE
    tp = HINTS[section][key]
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if get_origin(tp) is Literal:
        return st.sampled_from([*get_args(tp), *get_args(tp), "other"])
    if tp is bool:
        return st.booleans()
    low = lo if lo is not None else -1000
    high = hi if hi is not None else 10**6
    if tp is int:
        inside = st.integers(min_value=int(low), max_value=int(high))
        return st.one_of(inside, inside, inside, st.sampled_from([int(low) - 1, int(high) + 1]))
    if tp is float:
        inside = st.floats(min_value=float(low), max_value=float(high))
        special = st.sampled_from([math.nan, math.inf, -math.inf, float(low) - 1e-9, float(high) * 2 + 1])
        text = st.sampled_from(["10m", "1h30m", "90", "x"]) if f.metadata.get("duration") else inside
        return st.one_of(inside, inside, special, text)
    return TOML_VALUE


@st.composite
def toml_document(draw: st.DrawFn) -> str:
    """Sections (mostly real ones) with keys (mostly real settings) set to random TOML values; sometimes junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    lines = []
    real = st.sampled_from(list(SECTIONS))
    for section in draw(st.lists(st.one_of(real, real, real, real, TEXT), max_size=3, unique=True)):
        lines.append(f"[{toml_key(section)}]")
        names = list(FIELDS.get(section, {})) or ["x"]
        known = st.sampled_from(names)
        for key in draw(st.lists(st.one_of(known, known, known, known, TEXT), max_size=4, unique=True)):
            value = draw(plausible(section, key)) if draw(st.integers(0, 4)) else draw(TOML_VALUE)
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    if draw(st.integers(0, 5)) == 0:
        lines.insert(0, f"{toml_key(draw(TEXT))} = {toml_value(draw(TOML_VALUE))}")  # a top-level key
    return "\n".join(lines) + "\n"


def assert_settings_are_valid(s: Settings) -> None:
    """Every field of every section has its declared type, is finite, and lies in its declared range."""
    for name in SECTIONS:
        section = getattr(s, name)
        for fname, f in FIELDS[name].items():
            value, tp = getattr(section, fname), HINTS[name][fname]
            if get_origin(tp) is Literal:
                assert value in get_args(tp), (name, fname, value)
            elif tp is bool:
                assert isinstance(value, bool)
            elif tp in (int, float):
                assert isinstance(value, tp) and not isinstance(value, bool), (name, fname, value)
                assert math.isfinite(value), (name, fname, value)
                lo, hi = f.metadata.get("min"), f.metadata.get("max")
                assert (lo is None or value >= lo) and (hi is None or value <= hi), (name, fname, value)


@pytest.fixture(scope="module")
def toml_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "changeling.toml"


@settings(FAST, max_examples=500)
@given(text=toml_document())
def test_load_settings_accepts_or_raises_user_error(toml_path: Path, text: str) -> None:
    toml_path.write_text(text, encoding="utf-8")
    try:
        s = load_settings(toml_path)
    except UserError as exc:
        one_line(exc)
        assert str(toml_path) in str(exc)  # the message names the file
        return
    assert_settings_are_valid(s)


@FAST
@given(data=st.binary(max_size=200))
def test_load_settings_on_random_bytes(toml_path: Path, data: bytes) -> None:
    toml_path.write_bytes(data)
    try:
        s = load_settings(toml_path)
    except UserError as exc:
        one_line(exc)
        return
    assert_settings_are_valid(s)


def test_a_real_settings_file_loads() -> None:
    """The generator's real sections and keys can succeed (so the fuzz reaches the success path)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "changeling.toml"
        path.write_text('[train]\nlr = 0.001\npreset = "df"\nmax_time = "1h30m"\n[extract]\nsize = 128\n')
        s = load_settings(path)
        assert s.train.lr == 0.001 and s.train.preset == "df" and s.train.max_time == 5400 and s.extract.size == 128
        assert_settings_are_valid(s)


# ------------------------------------------------------------------------------------------ alignments files
# An alignments file comes with a project. Whatever a crafted or damaged one holds, reading it (as convert,
# `faces clean`, extraction's resume and the trainer's preview do) either succeeds with values that pass the
# store's checks or raises UserError naming the file; never another exception, and never a hang.

COLUMNS = {
    "source": ["path", "hash", "side", "frame_count", "settings", "state", "created", "updated", "id"],
    "frames": ["idx", "time", "status"],
    "corrupt": ["before_idx", "count"],
    "faces": ["frame", "face", "x0", "y0", "x1", "y1", "points", "landmarks", "score", "blur", "file", "deleted"],
}
SQL_VALUES = st.one_of(
    st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False),
    st.sampled_from([float("inf"), float("-inf"), 1e300, -1e300, 0, -1, 2**40 + 1, 468, 478]),
    st.text(max_size=30), st.sampled_from(["done", "no_face", "skipped", "complete", "running", "A", "{", "{}",
                                           '{"size": 1e999}', "[" * 50, "../../x.png", "a/b.png", ""]),
    st.binary(max_size=64), st.integers(0, 6000).map(lambda n: bytes(n)),
    st.sampled_from([np.full((478, 3), np.nan, "<f4").tobytes(), np.full((468, 3), 1e30, "<f4").tobytes()]),
)
SCHEMA_EDITS = [
    "CREATE VIEW v AS SELECT 1", "CREATE TRIGGER t AFTER INSERT ON frames BEGIN DELETE FROM faces; END",
    "CREATE TABLE extra (x)", "CREATE INDEX extra_i ON frames(time)", "DROP INDEX faces_file", "DROP TABLE corrupt",
    "DROP TABLE source; CREATE VIEW source AS WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
    "SELECT 1 AS id, 'a' AS path, 'h' AS hash, 'A' AS side, 1 AS frame_count, '{}' AS settings, "
    "'complete' AS state, 0 AS created, 0 AS updated FROM r",
    "ALTER TABLE faces ADD COLUMN g INTEGER GENERATED ALWAYS AS (1) VIRTUAL", "PRAGMA user_version = 2",
    "PRAGMA user_version = 0", "DELETE FROM source", "PRAGMA journal_mode = DELETE",
]


@st.composite
def sql_edits(draw: st.DrawFn) -> list[tuple[str, tuple[Any, ...]]]:
    """A few edits an attacker makes with SQLite itself: values of any type in any cell, rows added or removed,
    and schema changes."""
    edits: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "set", "set", "insert", "schema"]))
        table = draw(st.sampled_from(sorted(COLUMNS)))
        if kind == "set":
            col = draw(st.sampled_from(COLUMNS[table]))
            edits.append((f"UPDATE {table} SET {col} = ? WHERE rowid = (SELECT min(rowid) FROM {table}) + ?",
                          (draw(SQL_VALUES), draw(st.integers(0, 3)))))
        elif kind == "insert":
            cols = COLUMNS[table]
            edits.append((f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                          tuple(draw(SQL_VALUES) for _ in cols)))
        else:
            edits.append((draw(st.sampled_from(SCHEMA_EDITS)), ()))
    return edits


@pytest.fixture(scope="module")
def valid_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid alignments file (a few frames and faces, finished); examples edit copies of it."""
    from test_store import _valid_store

    return _valid_store(tmp_path_factory.mktemp("store"))


def _read_store(db: Path, root: Path) -> None:
    """Everything the store's readers do; on success, check what came back."""
    from changeling.faces.store import FRAME_STATUSES, AlignmentStore

    with AlignmentStore.open_existing(db) as store:
        assert isinstance(store.source_path, str) and store.side in ("", "A", "B")
        assert isinstance(store.settings(), dict) and isinstance(store.complete, bool)
        for f in store.frames():
            assert f.status in FRAME_STATUSES and math.isfinite(f.time) and f.index >= 0
        assert all(v >= 0 for v in store.status_counts().values())
        for face in store.all_faces(include_deleted=True):
            assert face.landmarks.ndim == 2 and face.landmarks.shape[1] == 3 and np.isfinite(face.landmarks).all()
            assert np.isfinite(face.box).all() and 0 <= face.score <= 1 and math.isfinite(face.blur)
            assert face.file is None or "/" not in face.file
        store.first_unfinished()
        try:
            store.source_file(root)
        except UserError:
            pass
    with AlignmentStore.open_existing(db, writable=True) as store:
        store.clean(root / "faces")


def _outcome_of(db: Path, root: Path) -> None:
    from hangs import outcome

    err = outcome(lambda: _read_store(db, root))
    if err is not None:
        assert isinstance(err, UserError), repr(err)
        one_line(err)
        assert str(db) in str(err)


@pytest.fixture(scope="module")
def store_scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-store")


@settings(FAST, max_examples=200)
@given(edits=sql_edits())
def test_alignments_edited_with_sqlite_read_or_raise_user_error(valid_store: Path, store_scratch: Path,
                                                               edits: list[tuple[str, tuple[Any, ...]]]) -> None:
    import sqlite3

    db = store_scratch / "a.sqlite"
    for p in store_scratch.glob("a.sqlite*"):
        p.unlink()
    db.write_bytes(valid_store.read_bytes())
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute("PRAGMA foreign_keys = OFF")
    for sql, params in edits:
        try:
            conn.execute(sql, params) if params else conn.executescript(sql)
        except sqlite3.Error:
            pass  # an edit SQLite itself refuses (a type an INTEGER PRIMARY KEY cannot hold, say)
    conn.close()
    _outcome_of(db, store_scratch)


@st.composite
def damaged_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """The valid file with bytes flipped, zeroed, cut off or garbage inserted."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        how = draw(st.sampled_from(["flip", "flip", "zero", "cut", "header"]))
        at = draw(st.integers(0, max(0, len(out) - 1)))
        if how == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif how == "zero":
            n = draw(st.integers(1, 4096))
            out[at:at + n] = bytes(len(out[at:at + n]))
        elif how == "cut":
            del out[at:]
        else:  # the 100-byte database header: page size, counts, schema cookie, version...
            i = draw(st.integers(16, 99))
            if i < len(out):
                out[i] = draw(st.integers(0, 255))
    return bytes(out)


@settings(FAST, max_examples=200)
@given(data=st.data())
def test_damaged_alignments_bytes_read_or_raise_user_error(valid_store: Path, store_scratch: Path,
                                                          data: st.DataObject) -> None:
    db = store_scratch / "b.sqlite"
    for p in store_scratch.glob("b.sqlite*"):
        p.unlink()
    db.write_bytes(data.draw(damaged_bytes(valid_store.read_bytes()), label="damaged file"))
    _outcome_of(db, store_scratch)


def test_the_fuzzed_store_starts_valid(valid_store: Path, store_scratch: Path) -> None:
    """The unedited file reads (so the fuzz reaches the success path)."""
    db = store_scratch / "c.sqlite"
    db.write_bytes(valid_store.read_bytes())
    _read_store(db, store_scratch)
