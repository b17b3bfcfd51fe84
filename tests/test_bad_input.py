"""Bad input to the video layer: one clear error naming the path, and nothing created under an output name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from changeling.errors import UserError
from changeling.video import VideoWriter, open_frames
from changeling.video.testclip import write_audio_only, write_clip
from changeling.video.writer import check_output_path


def _consume(path: Path | str) -> None:
    for _ in open_frames(path):
        pass


def _truncated(tmp_path: Path) -> Path:
    src = write_clip(tmp_path / "full.mp4", frames=24)
    data = src.read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: len(data) // 3])
    return bad


@pytest.mark.parametrize(("make", "needle"), [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: (d / "zero.mp4").write_bytes(b"") and d / "zero.mp4" or d / "zero.mp4", "empty file"),
    (lambda d: (d / "text.mp4").write_text("this is not a video\n") and d / "text.mp4", "not a video"),
    (lambda d: (d / "empty_dir").mkdir() or d / "empty_dir", "folder holds no images"),
    (lambda d: write_clip(d / "audio_only.m4a", frames=1, audio="aac") and _audio_only(d), "no video stream"),
    (_truncated, ""),
])
def test_bad_inputs_raise_user_error_naming_the_path(tmp_path: Path, make, needle: str) -> None:
    path = make(tmp_path)
    try:
        _consume(path)
    except UserError as exc:
        msg = str(exc)
        assert str(path) in msg and needle in msg and "\n" not in msg
    else:
        # a truncated file may still hold some whole frames: then they decode and the rest are counted
        assert needle == ""


def _audio_only(d: Path) -> Path:
    return write_audio_only(d / "tone.m4a")


def test_output_folder_missing_or_unwritable(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "out.mp4")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root can write anywhere; the check is still exercised for other users
            with pytest.raises(UserError, match="cannot be written"):
                check_output_path(locked / "out.mp4")
    finally:
        locked.chmod(0o700)
    with pytest.raises(UserError, match="is the input"):
        src = write_clip(tmp_path / "in.mp4", frames=2)
        VideoWriter(src, width=64, height=48, fps=24, inputs=[src])
    with pytest.raises(UserError, match="unsupported output type"):
        VideoWriter(tmp_path / "out.xyz", width=64, height=48, fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "locked"]


def test_image_edge_cases(tmp_path: Path) -> None:
    from PIL import Image
    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    with pytest.raises(UserError, match="too small"):
        _consume(tmp_path / "tiny.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(UserError, match="broken.png"):
        _consume(tmp_path / "broken.png")
