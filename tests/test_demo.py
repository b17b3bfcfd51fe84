"""The README's first command, shortened: ``changeling demo`` end to end on the bundled portraits."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    proj = tmp_path / "demo"
    r = run_cli("demo", "--project", str(proj), "--minutes", "0.25", "--device", "cpu", "-q", timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = proj / "output" / "demo_swap.mp4"
    assert out.exists()
    with av.open(str(out)) as c:
        assert c.streams.video and c.streams.audio
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 100  # the 4 s held-out clip at 25 fps
    assert "provenance: marked" in r.stdout
    scores = json.loads((proj / "output" / "scores.json").read_text())
    assert scores and {"ssim", "psnr", "recognisable", "landmark_error", "step", "identity"} <= set(scores[-1])
    assert (proj / "output" / "quality.png").stat().st_size > 0
    v = run_cli("verify", str(out))
    assert v.returncode == 0 and "MARKED" in v.stdout
    step = scores[-1]["step"]
    # rerunning with the same budget resumes: nothing is trained again and the clips are not remade
    clip = proj / "inputs" / "A_train.mp4"
    mtime = clip.stat().st_mtime
    r2 = run_cli("demo", "--project", str(proj), "--minutes", "0.25", "--device", "cpu", "-q", timeout=1200)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert f"{step} training steps" in r2.stdout
    assert clip.stat().st_mtime == mtime


@pytest.mark.parametrize("preset", ["tiny", "lite-liae"])
def test_demo_project_carries_the_measured_settings_of_its_preset(tmp_path: Path, preset: str) -> None:
    from changeling.config import load_settings
    from changeling.demo import DEMO_TRAIN, demo_toml

    path = tmp_path / "changeling.toml"
    path.write_text(demo_toml(preset, 100), encoding="utf-8")
    train = load_settings(path).train
    assert train.preset == preset and train.snapshot_every == 100
    for key, value in DEMO_TRAIN[preset].items():
        assert getattr(train, key) == value, key


def test_the_demo_trains_its_measured_preset_by_default() -> None:
    from changeling.cli import build_parser
    from changeling.config.demo import DEMO_PRESET, DEMO_TRAIN

    assert DEMO_PRESET == "lite-liae" and DEMO_PRESET in DEMO_TRAIN  # its settings go into the demo's toml
    assert build_parser().parse_args(["demo"]).preset == DEMO_PRESET
