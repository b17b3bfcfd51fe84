"""ruff and mypy are part of the test run, so CI fails when either finds a problem."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_static_checks_are_clean(tool: str) -> None:
    if shutil.which(tool) is None and tool == "ruff":
        pytest.fail("ruff is in the [test] extra and must be installed")
    cmd = [sys.executable, "-m", "ruff", "check", "src", "tests"] if tool == "ruff" else [sys.executable, "-m", "mypy"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
