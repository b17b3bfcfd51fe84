"""Provenance marks: the vectorised DWT-DCT-SVD watermark against an independent per-block reading (PyWavelets,
OpenCV's DCT, NumPy's SVD), its survival of H.264 CRF 28 and JPEG q75, metadata read back by PyAV/PIL, C2PA
manifests read back by c2pa-python, and ``changeling verify`` (edits and false positives:
tests/test_watermark_edits.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from changeling.errors import UserError
from changeling.provenance import (
    attach_c2pa,
    detect_watermark,
    embed_watermark,
    synthetic_metadata,
    verify_file,
    write_marked_image,
)
from changeling.provenance import c2pa as c2pa_marks
from changeling.provenance import watermark as wm
from changeling.provenance.batch_marker import watermark_marker
from changeling.video.testclip import pattern_frame, write_clip
from changeling.video.writer import write_video
from conftest import run_cli


@pytest.fixture(autouse=True)
def _private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Signing identities go to a temporary config folder, never the user's."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _portraits() -> list[np.ndarray]:
    from matplotlib import cbook
    from skimage import data

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as img:
        grace = np.asarray(img.convert("RGB"))
    return [data.astronaut(), grace]


def _moving_clip(image: np.ndarray, n: int, size: int = 256) -> list[np.ndarray]:
    """A camera pan over a portrait: the content moves 2-3 px a frame, as in real footage."""
    side = size + 3 * n
    big = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(big[2 * i: 2 * i + size, 3 * i: 3 * i + size]) for i in range(n)]


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"))


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# -- the scheme -----------------------------------------------------------------------------------------------


def test_payload_is_the_documented_balanced_hash() -> None:
    def bits_of(seed: str) -> np.ndarray:
        digest = hashlib.sha256(seed.encode()).digest()[:8]
        return np.unpackbits(np.frombuffer(digest, np.uint8))[: wm.N_BITS]

    def acceptable(b: np.ndarray) -> bool:
        s = 2 * b.astype(int) - 1
        autocorr = max(abs(int((s * np.roll(s, k)).sum())) for k in range(1, len(s)))
        return int(b.sum()) in (30, 31) and autocorr <= 13

    seeds = [f"changeling synthetic media {i}" for i in range(200)]
    first = next(s for s in seeds if acceptable(bits_of(s)))
    assert first == wm.PAYLOAD_SEED
    np.testing.assert_array_equal(wm.PAYLOAD_BITS, bits_of(first))


def test_power_iteration_finds_the_exact_top_singular_value() -> None:
    for image in _portraits():
        rows, cols = wm.grid(*image.shape[:2])
        blocks = wm._blocks(wm._u_ll(image, rows, cols), rows, cols)
        u, s0, v = wm._top_singular(blocks)
        exact = np.linalg.svd(blocks.transpose(2, 0, 1).astype(np.float64), compute_uv=False)[:, 0]
        np.testing.assert_allclose(s0, exact, rtol=1e-5)
        # u s0 v^T is the best rank-1 approximation, so it reproduces B^T u = s0 v
        np.testing.assert_allclose(np.einsum("ian,in->an", blocks, u), s0 * v, rtol=1e-3, atol=1e-2)


def test_every_block_carries_its_bit_by_the_packages_own_per_block_rule() -> None:
    """Block (r, c)'s DCT-SVD value on the two-level Haar LL band (PyWavelets, cv2.dct and NumPy's SVD, the
    way imwatermark reads one level) encodes payload bit (23 r + c) mod 61."""
    pywt = pytest.importorskip("pywt")
    image = cv2.resize(_portraits()[0], (320, 256), interpolation=cv2.INTER_AREA)
    marked = embed_watermark(image)
    u = cv2.cvtColor(marked[..., ::-1], cv2.COLOR_BGR2YUV)[..., 1]
    ll = pywt.wavedec2(u.astype(np.float64), "haar", level=2)[0]
    bits, expected = [], []
    for r in range(ll.shape[0] // 4):
        for c in range(ll.shape[1] // 4):
            s = np.linalg.svd(cv2.dct(ll[4 * r: 4 * r + 4, 4 * c: 4 * c + 4]), compute_uv=False)
            bits.append(int(s[0] % wm.SCALE > wm.SCALE * 0.5))
            expected.append(int(wm.PAYLOAD_BITS[(23 * r + c) % 61]))
    assert len(bits) == 16 * 20 and np.mean(np.array(bits) == np.array(expected)) > 0.98  # a few clipped blocks
    ours = (wm.block_votes(marked) > 0).astype(int).ravel()  # our reader's hard vote agrees block by block
    assert np.mean(ours == np.array(bits)) > 0.99
    assert detect_watermark(marked) == (True, 1.0)


def test_torch_batch_embedder_equals_the_numpy_one() -> None:
    torch = pytest.importorskip("torch")
    frames = [cv2.resize(p, (272, 264), interpolation=cv2.INTER_AREA) for p in _portraits()]
    batch = wm.embed_watermark_torch(torch.from_numpy(np.stack(frames)))
    for frame, marked in zip(frames, batch.numpy(), strict=True):
        diff = np.abs(marked.astype(int) - embed_watermark(frame))
        assert diff.max() <= 1 and np.mean(diff > 0) < 1e-4
        assert detect_watermark(marked) == (True, 1.0)
    with pytest.raises(ValueError, match="uint8 tensor"):
        wm.embed_watermark_torch(torch.zeros((1, 3, 64, 64), dtype=torch.uint8))


def test_the_mark_is_invisible() -> None:
    for image in _portraits():
        marked = embed_watermark(image)
        assert marked.shape == image.shape and marked.dtype == np.uint8
        assert cv2.PSNR(marked, image) > 38.0
        diff = marked.astype(int) - image
        assert np.array_equal(diff[..., 0], np.zeros_like(diff[..., 0]))  # U moves with Y and V held: R stays
        assert np.abs(diff).max() <= 20
        # luma (what the eye sees best) moves by rounding only
        y0 = cv2.cvtColor(image, cv2.COLOR_RGB2YUV)[..., 0].astype(int)
        y1 = cv2.cvtColor(marked, cv2.COLOR_RGB2YUV)[..., 0].astype(int)
        assert np.abs(y1 - y0).mean() < 0.6


def test_embed_checks_its_input_and_small_frames() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        embed_watermark(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        embed_watermark(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="128x128"):
        embed_watermark(np.zeros((120, 120, 3), np.uint8))
    assert detect_watermark(np.zeros((120, 120, 3), np.uint8)) == (False, 0.0)
    assert detect_watermark(embed_watermark(cv2.resize(_portraits()[0], (128, 128)))) == (True, 1.0)
    odd = cv2.resize(_portraits()[1], (333, 277))  # sides that are not multiples of 16: the rest is kept as is
    marked = embed_watermark(odd)
    assert detect_watermark(marked) == (True, 1.0)
    np.testing.assert_array_equal(marked[272:], odd[272:])
    np.testing.assert_array_equal(marked[:, 320:], odd[:, 320:])


# -- robustness and false positives -----------------------------------------------------------------------------


def test_found_in_a_frame_saved_as_jpeg_quality_75() -> None:
    for image in _portraits():
        for size in ((256, 256), (480, 640)):
            frame = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
            found, agreement = detect_watermark(_jpeg(embed_watermark(frame), 75))
            assert found, (size, agreement)


def test_verify_finds_the_mark_after_reencoding_at_crf_28(tmp_path: Path) -> None:
    for k, image in enumerate(_portraits()):
        marked = [embed_watermark(f) for f in _moving_clip(image, 24)]
        out = write_video(tmp_path / f"out{k}.mp4", marked, 25, metadata=synthetic_metadata())
        again = write_clip(tmp_path / f"again{k}.mp4", images=_decode(out), width=256, height=256, fps=25,
                           audio=None, crf=28)  # a re-encode by someone else: no metadata, CRF 28
        report = verify_file(again, frames=12)
        assert report.watermark and report.verdict == "marked", report.summary()
        assert report.frames_marked >= 6 and report.pooled_agreement >= 0.95, report.summary()
        assert not report.metadata.present  # the re-encode dropped the tags: the watermark alone decides


def test_long_videos_are_sampled_by_seeking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from changeling.provenance import verify as verify_mod

    image = cv2.resize(_portraits()[1], (256, 256), interpolation=cv2.INTER_AREA)
    frames = [embed_watermark(f) for f in _moving_clip(image, 60)]
    video = write_video(tmp_path / "long.mp4", frames, 25, metadata=synthetic_metadata())
    sequential = verify_mod.sample_video_frames(video, 6)
    monkeypatch.setattr(verify_mod, "SEEK_ABOVE_FRAMES", 10)

    def no_fallback(*args: object) -> None:
        raise AssertionError("fell back to decoding every frame")

    monkeypatch.setattr(verify_mod, "_decode_sequential", no_fallback)
    seeking = verify_mod.sample_video_frames(video, 6)
    assert len(sequential) == len(seeking) == 6
    decoded = _decode(video)
    for frame in seeking:  # each sampled frame is one of the video's frames, and they are spread out
        assert min(np.abs(frame.astype(int) - d).mean() for d in decoded) == 0
    assert len({int(np.argmin([np.abs(f.astype(int) - d).mean() for d in decoded])) for f in seeking}) == 6
    report = verify_file(video, frames=6)
    assert report.frames_sampled == 6 and report.frames_marked == 6


# -- metadata and C2PA ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_container_tags_are_there_for_pyav(tmp_path: Path, suffix: str) -> None:
    frames = [pattern_frame(i, 64, 64) for i in range(4)]
    path = write_video(tmp_path / f"v{suffix}", frames, 25, metadata=synthetic_metadata())
    with av.open(str(path)) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}
    for k, v in synthetic_metadata().items():
        assert tags[k] == v
    assert "changeling" in tags["generator"]


def test_image_tags_are_there_for_pil(tmp_path: Path) -> None:
    frame = embed_watermark(cv2.resize(_portraits()[0], (256, 256)))
    png = write_marked_image(tmp_path / "a.png", frame)
    jpg = write_marked_image(tmp_path / "a.jpg", frame, quality=90)
    with Image.open(png) as img:
        assert img.text["synthetic_media"] == "true"  # type: ignore[attr-defined]
        assert img.text["generator"].startswith("changeling ")  # type: ignore[attr-defined]
        assert "compositeWithTrainedAlgorithmicMedia" in img.text["XML:com.adobe.xmp"]  # type: ignore[attr-defined]
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), frame)  # lossless: pixels unchanged
    with Image.open(jpg) as img:
        exif = img.getexif()
        assert exif[0x0131].startswith("changeling ")  # Software
        assert "Synthetic media" in exif[0x010E]  # ImageDescription
        assert b"compositeWithTrainedAlgorithmicMedia" in img.info["xmp"]
        assert b"synthetic_media=true" in img.info["comment"]
    for path in (png, jpg):
        report = verify_file(path)
        assert report.metadata.present and report.watermark and report.verdict == "marked"
    assert not list(tmp_path.glob(".*part"))


def test_c2pa_manifest_signed_offline_and_read_back(tmp_path: Path) -> None:
    c2pa = pytest.importorskip("c2pa")
    frame = embed_watermark(cv2.resize(_portraits()[1], (256, 256)))
    png = write_marked_image(tmp_path / "a.png", frame)
    video = write_video(tmp_path / "v.mp4", [frame] * 5, 25, metadata=synthetic_metadata())
    assert attach_c2pa(video)
    identity = c2pa_marks.config_dir()
    assert identity.is_relative_to(tmp_path) and (identity / "signer-key.pem").exists()
    assert (os.stat(identity / "signer-key.pem").st_mode & 0o077) == 0  # the key is the user's alone
    for path in (png, video):
        with c2pa.Reader(str(path)) as reader:  # the library's own reader, default settings
            manifest = reader.get_active_manifest()
            assert reader.get_validation_state() == "Valid"  # good signature; our root is not a public anchor
        assert manifest["claim_generator_info"][0]["name"] == "changeling"
        text = json.dumps(manifest)
        assert c2pa_marks.DIGITAL_SOURCE_TYPE in text
        finding = c2pa_marks.read_manifest(path)
        assert finding is not None and finding.this_installation and finding.state == "Trusted"
        assert not finding.problems
    # signing did not disturb the other marks
    assert verify_file(video).evidence == ["watermark", "metadata", "C2PA manifest"]
    assert len(_decode(video)) == 5
    # the same identity is reused, and a tampered file no longer validates
    before = (identity / "signer-chain.pem").read_bytes()
    attach_c2pa(video)
    assert (identity / "signer-chain.pem").read_bytes() == before
    data = bytearray(png.read_bytes())
    data[-200] ^= 0xFF
    tampered = tmp_path / "t.png"
    tampered.write_bytes(bytes(data))
    finding = c2pa_marks.read_manifest(tampered)
    assert finding is None or finding.state == "Invalid" or finding.problems


def test_matroska_has_no_c2pa_but_keeps_the_other_marks(tmp_path: Path) -> None:
    frame = embed_watermark(cv2.resize(_portraits()[0], (256, 256)))
    video = write_video(tmp_path / "v.mkv", [frame] * 4, 25, metadata=synthetic_metadata())
    assert not attach_c2pa(video)
    assert verify_file(video).evidence == ["watermark", "metadata"]


# -- verify and its command -----------------------------------------------------------------------------------


def test_verify_bad_input(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "text.png").write_text("not an image")
    audio = write_clip(tmp_path / "audio.mkv", frames=4, audio="aac")
    with av.open(str(audio)) as c, av.open(str(tmp_path / "sound.m4a"), "w") as out:
        stream = out.add_stream_from_template(c.streams.audio[0])
        for packet in c.demux(c.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    for name, message in (("missing.mp4", "no such file"), ("empty.mp4", "empty file"),
                          ("text.mp4", "not a video"), ("text.png", "not an image"),
                          ("sound.m4a", "no video stream"), (".", "folder")):
        with pytest.raises(UserError, match=message):
            verify_file(tmp_path / name)


@pytest.mark.slow
def test_verify_command(tmp_path: Path) -> None:
    image = cv2.resize(_portraits()[0], (256, 256), interpolation=cv2.INTER_AREA)
    marked = write_marked_image(tmp_path / "marked.png", embed_watermark(image))
    plain = tmp_path / "plain.png"
    Image.fromarray(image).save(plain)
    clip = write_video(tmp_path / "clip.mp4", [embed_watermark(f) for f in _moving_clip(image, 8)], 25,
                       metadata=synthetic_metadata())
    (tmp_path / "empty.png").write_bytes(b"")

    r = run_cli("verify", str(marked), str(clip))
    assert r.returncode == 0, r.stderr
    assert "MARKED" in r.stdout and "found in 8 of 8 sampled frames" in r.stdout
    r = run_cli("verify", str(plain))
    assert r.returncode == 3 and "NOT MARKED" in r.stdout
    r = run_cli("verify", "--json", str(marked), str(plain))
    assert r.returncode == 3
    parsed = json.loads(r.stdout)
    assert [p["verdict"] for p in parsed] == ["marked", "not marked"]
    r = run_cli("verify", str(tmp_path / "empty.png"), str(marked))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"changeling verify: error: {tmp_path / 'empty.png'}: empty file (0 bytes)"]
    assert "MARKED" in r.stdout  # the other file was still checked
    r = run_cli("verify", "--frames", "0", str(marked))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_marker_for_the_cpu_is_the_numpy_embedder_and_a_gpu_one_marks_alike() -> None:
    torch = pytest.importorskip("torch")
    assert watermark_marker("cpu") is embed_watermark
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA for the GPU marker")
    frame = cv2.resize(_portraits()[0], (320, 256), interpolation=cv2.INTER_AREA)
    marked = watermark_marker("cuda")(frame)
    diff = np.abs(marked.astype(int) - embed_watermark(frame))
    assert marked.shape == frame.shape and diff.max() <= 1 and detect_watermark(marked) == (True, 1.0)


def test_video_is_signed_before_it_gets_its_final_name(tmp_path: Path) -> None:
    pytest.importorskip("c2pa")
    from changeling.video.writer import VideoWriter

    frame = embed_watermark(cv2.resize(_portraits()[0], (256, 256)))
    final = tmp_path / "out.mp4"
    seen: list[bool] = []

    def sign(tmp: Path) -> None:
        seen.append(final.exists())
        assert tmp != final and attach_c2pa(tmp, name=final.name)

    w = VideoWriter(final, width=256, height=256, fps=25, metadata=synthetic_metadata())
    w.open()
    for _ in range(4):
        w.write(frame)
    assert w.close(before_publish=sign) == final
    assert seen == [False]  # nothing under the final name until it is signed
    assert verify_file(final).evidence == ["watermark", "metadata", "C2PA manifest"]
    assert not list(tmp_path.glob(".*"))


def test_a_failing_publish_step_leaves_nothing(tmp_path: Path) -> None:
    from changeling.video.writer import VideoWriter

    w = VideoWriter(tmp_path / "out.mp4", width=64, height=64, fps=25)
    w.open()
    w.write(np.zeros((64, 64, 3), np.uint8))

    def boom(_tmp: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        w.close(before_publish=boom)
    assert list(tmp_path.iterdir()) == []


def test_batch_marker_marks_concurrent_frames_together_and_each_alike() -> None:
    import threading

    import torch

    from changeling.provenance.batch_marker import BatchMarker

    base = cv2.resize(_portraits()[0], (320, 256), interpolation=cv2.INTER_AREA)
    frames = [np.roll(base, 7 * i, axis=1) for i in range(6)]
    marker = BatchMarker("cpu", max_batch=4)
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        got[i] = marker(frames[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    with marker._lock:  # hold the marking thread back until all six frames wait in its queue
        for t in threads:
            t.start()
        for _ in range(500):
            if marker._q.qsize() == 6:
                break
            time.sleep(0.01)
    for t in threads:
        t.join(timeout=60)
    assert list(marker.batches) == [4, 2]
    for i, f in enumerate(frames):  # each caller got its own frame back, marked as if alone
        alone = wm.embed_watermark_torch(torch.from_numpy(f)[None])[0].numpy()
        np.testing.assert_array_equal(got[i], alone)
        assert np.abs(got[i].astype(int) - embed_watermark(f)).max() <= 1
    with pytest.raises(ValueError, match="payload"):  # an error reaches the caller whose frame caused it
        marker(np.zeros((32, 32, 3), np.uint8))
    assert detect_watermark(marker(frames[0]))[0]  # and the marker still works after it
