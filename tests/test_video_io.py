from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from changeling.errors import UserError
from changeling.video import VideoWriter, open_frames, probe
from changeling.video.encoding import can_copy_audio, container_format, container_options, h264_settings
from changeling.video.testclip import pattern_frame, write_clip
from changeling.video.writer import partials
from conftest import audio_seconds, decode_all


def _round_trip(src: Path, out: Path) -> None:
    fs = open_frames(src)
    with VideoWriter(out, width=fs.width, height=fs.height, fps=fs.fps, time_base=fs.time_base,
                     audio_from=src, crf=10) as w:
        for f in fs:
            w.write(f.image, f.time)


@pytest.mark.parametrize(("audio", "src_ext", "out_ext", "copied"), [
    ("aac", ".mp4", ".mp4", True),
    ("aac", ".mp4", ".mkv", True),
    ("pcm_s16le", ".mkv", ".mp4", False),   # PCM is not allowed in mp4 here: re-encoded to AAC
    ("pcm_s16le", ".mkv", ".mkv", True),
    ("libopus", ".webm", ".mkv", True),
    ("aac", ".mov", ".mp4", True),
    ("mp3", ".avi", ".mkv", True),
])
def test_round_trip_keeps_frames_rate_size_audio(tmp_path: Path, audio: str, src_ext: str, out_ext: str,
                                                  copied: bool) -> None:
    src = write_clip(tmp_path / f"src{src_ext}", frames=30, width=64, height=48, fps=24, audio=audio)
    out = tmp_path / f"out{out_ext}"
    _round_trip(src, out)
    in_frames, _ = decode_all(src)
    out_frames, _ = decode_all(out)
    assert len(out_frames) == len(in_frames) == 30
    assert out_frames[0].shape == in_frames[0].shape == (48, 64, 3)
    # the pixels survive (crf 10): mean absolute difference of a few levels at most
    assert np.abs(out_frames[5].astype(int) - in_frames[5].astype(int)).mean() < 4
    info_in, info_out = probe(src), probe(out)
    assert abs(float(info_out.fps) / float(info_in.fps) - 1) < 1e-3
    assert info_out.has_audio
    assert (info_out.audio_codec == info_in.audio_codec) == copied or info_out.audio_codec == "aac"
    assert abs(audio_seconds(out) - audio_seconds(src)) < 0.05
    assert partials(out) == []


def test_variable_frame_rate_times_survive(tmp_path: Path) -> None:
    times = [0.0, 0.04, 0.1, 0.3, 0.35, 0.5, 0.52, 0.9]
    src = write_clip(tmp_path / "vfr.mp4", frames=len(times), vfr_times=times, audio="aac")
    out = tmp_path / "out.mp4"
    _round_trip(src, out)
    _, got = decode_all(out)
    assert got == pytest.approx(times, abs=1e-3)


def test_reads_images_folders_and_patterns(tmp_path: Path) -> None:
    from PIL import Image
    for i in range(3):
        Image.fromarray(pattern_frame(i, 40, 30)).save(tmp_path / f"f_{i:03d}.png")
    assert len(list(open_frames(tmp_path))) == 3
    assert len(list(open_frames(tmp_path / "f_%03d.png"))) == 3
    assert len(list(open_frames(str(tmp_path / "*.png")))) == 3
    one = list(open_frames(tmp_path / "f_001.png"))
    assert len(one) == 1 and one[0].image.shape == (30, 40, 3)
    assert np.array_equal(one[0].image, pattern_frame(1, 40, 30))


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P", "LA"])
def test_odd_image_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    from PIL import Image
    img = Image.fromarray(pattern_frame(0, 32, 24))
    if mode == "I;16":
        arr = (np.asarray(img.convert("L")).astype(np.uint16) * 257)
        img = Image.fromarray(arr)
        assert img.mode == "I;16"
    else:
        img = img.convert(mode)
    ext = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"img{ext}"
    img.save(path)
    frames = list(open_frames(path))
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (24, 32, 3)
    if mode in ("L", "I;16"):  # grey levels map back to the same 8-bit grey
        grey = np.asarray(Image.fromarray(pattern_frame(0, 32, 24)).convert("L"))
        assert np.abs(frames[0].image[..., 0].astype(int) - grey.astype(int)).max() <= 1


def test_encoder_settings_are_pure() -> None:
    s = h264_settings(64, 48, crf=23)
    assert (s.codec, s.pix_fmt, s.options["crf"]) == ("libx264", "yuv420p", "23")
    assert h264_settings(63, 48).pix_fmt == "yuv444p"
    with pytest.raises(ValueError):
        h264_settings(64, 48, crf=60)
    assert container_format(Path("x.MKV")) == "matroska"
    with pytest.raises(UserError):
        container_format(Path("x.avi2"))
    assert can_copy_audio("aac", "mp4") and not can_copy_audio("pcm_s16le", "mp4")
    assert can_copy_audio("pcm_s16le", "matroska")
    assert container_options("mp4") == {"movflags": "use_metadata_tags"}


def test_crf_changes_the_file(tmp_path: Path) -> None:
    frames = [pattern_frame(i, 64, 48) for i in range(10)]
    sizes = []
    for crf in (10, 40):
        out = tmp_path / f"c{crf}.mp4"
        with VideoWriter(out, width=64, height=48, fps=Fraction(24), crf=crf) as w:
            for f in frames:
                w.write(f)
        sizes.append(out.stat().st_size)
    assert sizes[0] > sizes[1]


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, width=64, height=48, fps=24) as w:
            w.write(pattern_frame(0, 64, 48))
            raise RuntimeError("boom")
    assert not out.exists() and partials(out) == []
    assert list(tmp_path.iterdir()) == []


def test_metadata_is_written(tmp_path: Path) -> None:
    out = tmp_path / "m.mp4"
    with VideoWriter(out, width=64, height=48, fps=24, metadata={"comment": "hello"}) as w:
        w.write(pattern_frame(0, 64, 48))
    with av.open(str(out)) as c:
        assert c.metadata.get("comment") == "hello"


def test_i420_frames_match_rgb_frames(tmp_path: Path) -> None:
    import cv2
    import skimage.data

    portrait = cv2.resize(skimage.data.astronaut(), (64, 48), interpolation=cv2.INTER_AREA)
    frames = [np.roll(portrait, i, axis=1) for i in range(6)]
    rgb_out, yuv_out = tmp_path / "rgb.mp4", tmp_path / "yuv.mp4"
    with VideoWriter(rgb_out, width=64, height=48, fps=24, crf=0) as w:
        for f in frames:
            w.write(f)
    with VideoWriter(yuv_out, width=64, height=48, fps=24, crf=0) as w:
        for i, f in enumerate(frames):
            w.write_i420(cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420), i / 24)
        with pytest.raises(ValueError, match="I420 planes"):
            w.write_i420(np.zeros((48, 64), np.uint8))
    a, ta = decode_all(rgb_out)
    b, tb = decode_all(yuv_out)
    assert len(a) == len(b) == 6 and ta == tb
    for x, y, f in zip(a, b, frames, strict=True):  # two colour converters: the same picture and colour range
        assert np.abs(x.astype(int) - f).mean() < 6 and np.abs(y.astype(int) - f).mean() < 6  # 4:2:0 chroma
        bias = (x.astype(float) - f).mean(axis=(0, 1)) - (y.astype(float) - f).mean(axis=(0, 1))
        assert np.all(np.abs(bias) < 1.0)
