from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from changeling import __version__
from conftest import run_cli

SUBCOMMANDS = ["init", "extract", "train", "convert", "verify", "evaluate", "demo", "ui", "bench", "faces"]


def test_console_script_version_and_help() -> None:
    exe = shutil.which("changeling")
    assert exe, "the console script is installed"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"changeling {__version__}"
    helptext = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in helptext


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_real_help(name: str) -> None:
    exe = shutil.which("changeling")
    assert exe
    out = subprocess.run([exe, name, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "usage: changeling " + name in out.stdout
    assert "--quiet" in out.stdout or name == "faces"


def test_init_then_bad_setting_is_one_line_exit_2(tmp_path: Path) -> None:
    r = run_cli("init", str(tmp_path / "p"))
    assert r.returncode == 0 and (tmp_path / "p" / "changeling.toml").exists()
    (tmp_path / "p" / "changeling.toml").write_text("[train]\nlearning_rate = 1\n")
    r = run_cli("train", "--project", str(tmp_path / "p"), "--max-steps", "1")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "learning_rate" in lines[0] and "changeling.toml" in lines[0]
    assert "Traceback" not in r.stderr


def test_unknown_flag_exit_2() -> None:
    r = run_cli("train", "--no-such-flag")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_reference_and_exclude_take_one_path_each_and_inputs_may_follow() -> None:
    from changeling.cli import build_parser

    parse = build_parser().parse_args
    ns = parse(["extract", "--side", "A", "--reference", "me.png", "clip.mp4"])
    assert ns.inputs == [Path("clip.mp4")] and ns.reference == [Path("me.png")] and ns.exclude is None
    ns = parse(["extract", "--side", "B", "--reference", "a.png", "--exclude", "x.png", "one.mp4", "two.mp4",
                "--reference", "b.png", "--exclude", "y.png"])
    assert ns.inputs == [Path("one.mp4"), Path("two.mp4")]
    assert ns.reference == [Path("a.png"), Path("b.png")] and ns.exclude == [Path("x.png"), Path("y.png")]
    ns = parse(["convert", "--which", "reference", "--reference", "me.png", "clip.mp4"])
    assert ns.input == Path("clip.mp4") and ns.reference == [Path("me.png")]
    ns = parse(["convert", "clip.mp4", "--reference", "a.png", "--reference", "b.png"])
    assert ns.reference == [Path("a.png"), Path("b.png")]


def test_a_reference_before_the_inputs_runs(tmp_path: Path) -> None:
    """As a new user types it: the reference first, then the video (fails on the photo, not on the syntax)."""
    r = run_cli("init", str(tmp_path / "p"))
    assert r.returncode == 0
    r = run_cli("extract", "-p", str(tmp_path / "p"), "--side", "A", "--reference", str(tmp_path / "me.png"),
                str(tmp_path / "clip.mp4"), "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "me.png: no such file" in r.stderr and "required" not in r.stderr
