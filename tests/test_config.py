from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changeling.config import TrainSettings, load_settings, with_flags
from changeling.config.core import parse_duration
from changeling.errors import UserError
from changeling.project import init_project, open_project


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


def test_precedence_defaults_then_toml_then_flags(tmp_path: Path) -> None:
    toml = _write(tmp_path / "changeling.toml", "[train]\nlr = 0.001\nbatch_size = 8\n[convert]\ncolor = 'hist'\n")
    s = load_settings(toml)
    assert s.train.lr == 0.001 and s.train.batch_size == 8  # from the file
    assert s.train.save_every == TrainSettings().save_every  # default kept
    assert s.convert.color == "hist"
    t = with_flags(s.train, {"batch_size": "16", "lr": None, "flip": False})
    assert t.batch_size == 16 and t.lr == 0.001 and t.flip is False  # flag wins, None means not given


@pytest.mark.parametrize(("text", "needle"), [
    ("[train]\nbatch_sise = 8\n", "unknown setting 'batch_sise'"),
    ("[train]\nlr = 'fast'\n", "bad value 'fast' for 'lr'"),
    ("[train]\nbatch_size = -1\n", "must be from 0 to 65536"),
    ("[convert]\ncolor = 'purple'\n", "one of 'none', 'mean', 'rct'"),
    ("[trian]\nlr = 0.1\n", "unknown section [trian]"),
    ("[train]\nflip = 3\n", "bad value 3 for 'flip'"),
    ("[train\nlr = 1\n", "not valid TOML"),
    ("train = 5\n", "must be a table"),
])
def test_bad_toml_is_rejected_naming_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    toml = _write(tmp_path / "changeling.toml", text)
    with pytest.raises(UserError) as err:
        load_settings(toml)
    msg = str(err.value)
    assert needle in msg
    assert str(toml) in msg
    assert "\n" not in msg


def test_bad_flag_is_rejected_naming_the_source() -> None:
    with pytest.raises(UserError, match="command line.*'max_steps'"):
        with_flags(TrainSettings(), {"max_steps": "ten"})


def test_durations() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2.5s") == 2.5
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert with_flags(TrainSettings(), {"max_time": "10m"}).max_time == 600


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                                                       st.booleans(), st.none()), max_size=4))
def test_fuzzed_settings_either_apply_or_raise_user_error(values: dict) -> None:
    try:
        with_flags(TrainSettings(), values)
    except UserError as exc:
        assert "\n" not in str(exc)


def test_project_init_and_open(tmp_path: Path) -> None:
    root = tmp_path / "swap"
    project = init_project(root)
    for sub in ("faces/A", "faces/B", "alignments", "model", "previews", "logs", "output"):
        assert (root / sub).is_dir()
    assert open_project(root).settings().train.preset == "tiny"
    with pytest.raises(UserError, match="not a changeling project"):
        open_project(tmp_path / "elsewhere")
    (root / "changeling.toml").write_text("[extract]\nsize = 5\n")
    with pytest.raises(UserError, match="'size': must be from 32 to 1024"):
        open_project(root)
    assert project.faces_dir("A") == root / "faces" / "A"
