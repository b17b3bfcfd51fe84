"""The converter with injected fakes (face source, model, marker), its writers, preview and failure rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from changeling.convert import color
from changeling.convert.blend import paste_back
from changeling.convert.maskops import MaskBuilder
from changeling.convert.pipeline import Converter, DetectedFace, all_faces, check_model
from changeling.convert.previews import write_previews
from changeling.convert.writers import RenderedFrame, writer_factory
from changeling.detect.align import face_affine, template_points
from changeling.errors import UserError
from changeling.video.reader import FrameSource, TimedFrame
from changeling.video.testclip import write_clip
from changeling.video.writer import partials
from conftest import audio_seconds, decode_all

W, H, N, FACE = 96, 72, 12, 40
R = 32
NO_FACE = {0, 4, 5, 9}  # frames without a face


def _landmarks(index: int, dx: float = 0.0) -> np.ndarray:
    """468 template points of a face FACE px wide, drifting right by one pixel a frame."""
    p = template_points("whole", FACE) + np.array([20.0 + index + dx, 12.0])
    return np.column_stack([p, np.zeros(len(p))]).astype(np.float32)


def _box(lm: np.ndarray) -> np.ndarray:
    return np.array([*lm[:, :2].min(0), *lm[:, :2].max(0)], np.float32)


class FakeFaces:
    """A face source that knows where the faces are (no detector)."""

    def __init__(self, no_face: set[int] = NO_FACE, two: bool = False) -> None:
        self.no_face, self.two = no_face, two
        self.opened = 0

    def open(self, source: FrameSource) -> None:
        self.opened += 1

    def faces(self, frames: Sequence[TimedFrame]) -> list[list[DetectedFace]]:
        out = []
        for tf in frames:
            if tf.index in self.no_face:
                out.append([])
                continue
            faces = [DetectedFace(_landmarks(tf.index), _box(_landmarks(tf.index)))]
            if self.two:
                small = _landmarks(tf.index, dx=-10)[:, :] * np.array([0.5, 0.5, 1], np.float32)
                faces.append(DetectedFace(small, _box(small)))
            out.append(faces)
        return out


class TintModel:
    """A fake model: the face tinted blue, and a full predicted mask."""

    resolution = R
    face_type = "whole"

    def __init__(self, fail_after: int | None = None, delay: float = 0.0) -> None:
        self.calls = 0
        self.fail_after = fail_after
        self.delay = delay

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("model exploded")
        if self.delay:
            time.sleep(self.delay)
        f = crops.astype(np.float32) / 255
        f = np.clip(f * 0.5 + np.array([0.0, 0.1, 0.5], np.float32), 0, 1)
        return f, np.ones(crops.shape[:3], np.float32)


def _marker(frame: np.ndarray) -> np.ndarray:
    out = frame.copy()
    out[0, 0] = (1, 2, 3)  # a visible stand-in for the watermark
    return out


def _converter(writer: str = "images", **kw: object) -> Converter:
    parts: dict[str, object] = {
        "faces": FakeFaces(), "swapper": TintModel(), "color": color.none,
        "masks": MaskBuilder("hull", erode=0, blur=4), "writer_factory": writer_factory(writer, crf=18),  # type: ignore[arg-type]
        "marker": _marker, "batch_size": 4, "workers": 2, "progress": False,
    }
    parts.update(kw)
    return Converter(**parts)  # type: ignore[arg-type]


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "in.mp4", frames=N, width=W, height=H, fps=24, audio="aac")


def _pngs(folder: Path) -> list[np.ndarray]:
    files = sorted(folder.glob("*.png"))
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def test_frames_without_faces_are_bit_exact_and_faces_are_swapped(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    report = _converter(smooth=0.0).run(video, out)
    assert report.frames == N and report.frames_swapped == N - len(NO_FACE)
    assert report.faces_swapped == report.faces_found == N - len(NO_FACE) and report.output == out
    got = _pngs(out)
    src, _ = decode_all(video)  # PyAV's own decode of the source
    assert len(got) == N
    for i in range(N):
        if i in NO_FACE:  # bit-exact pass-through but for the marker's pixel
            expected = src[i].copy()
            expected[0, 0] = (1, 2, 3)
            np.testing.assert_array_equal(got[i], expected)
            continue
        assert tuple(got[i][0, 0]) == (1, 2, 3)  # the marker ran on every swapped frame
        diff = np.any(got[i] != src[i], axis=2)
        diff[0, 0] = False
        ys, xs = np.nonzero(diff)
        box = _box(_landmarks(i))
        # changes only inside the face (within a pixel of its landmarks' box), and a lot of them
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1
        assert diff.sum() > 300
        # the face's centre is the fake model's tint of the crop, warped back: redo it with OpenCV
        a = face_affine(_landmarks(i), "whole", R)
        crop = cv2.warpAffine(src[i], a, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        tinted = np.clip(crop / 255 * 0.5 + np.array([0.0, 0.1, 0.5]), 0, 1)
        tinted = np.clip(tinted * 255 + 0.5, 0, 255).astype(np.uint8).astype(np.float32)
        back = cv2.warpAffine(tinted, cv2.invertAffineTransform(a), (W, H), flags=cv2.INTER_LINEAR)
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        centre = (slice(cy - 5, cy + 5), slice(cx - 5, cx + 5))
        assert np.abs(got[i][centre] - back[centre]).max() <= 1.5  # rounding of the two results
    # the writer's metadata made it into the PNGs, and no temporary folder is left
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_video_output_keeps_count_size_rate_and_audio(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    meta = {"comment": "synthetic media made with changeling"}
    conv = _converter("video", writer_factory=writer_factory("video", crf=18, metadata=meta))
    report = conv.run(video, out)
    assert report.frames == N and out.is_file()
    with av.open(str(video)) as a, av.open(str(out)) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert (vb.codec_context.width, vb.codec_context.height) == (W, H)
        assert Fraction(vb.average_rate) == Fraction(va.average_rate) == 24
        assert b.metadata.get("comment") == meta["comment"]
        assert b.streams.audio
    frames_in, times_in = decode_all(video)
    frames_out, times_out = decode_all(out)
    assert len(frames_out) == len(frames_in) == N
    np.testing.assert_allclose(times_out, times_in, atol=1e-3)
    assert audio_seconds(out) == pytest.approx(audio_seconds(video), abs=0.03)
    # a face-free frame survives H.264 closely; a swapped one differs in its face
    assert np.abs(frames_out[0].astype(int) - frames_in[0]).mean() < 3
    assert np.abs(frames_out[2].astype(int) - frames_in[2]).max() > 40


def test_frames_come_out_in_order_with_parallel_rendering(video: Path, tmp_path: Path) -> None:
    seen: list[int] = []

    class Capture:
        path = tmp_path / "cap"

        def prepare(self, frame: RenderedFrame) -> object:
            return frame.index

        def write(self, frame: RenderedFrame, prepared: object) -> None:
            assert prepared == frame.index
            seen.append(frame.index)

        def close(self) -> Path:
            return self.path

        def abort(self) -> None:
            pass

    rng = np.random.default_rng(0)

    def slow_color(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
        time.sleep(float(rng.uniform(0, 0.02)))  # renders finish out of order
        return face

    conv = _converter(writer_factory=lambda out, src: Capture(), color=slow_color, workers=3, batch_size=3)
    conv.run(video, tmp_path / "cap")
    assert seen == list(range(N))


def test_all_faces_and_patch_writer_recompose_the_frames(video: Path, tmp_path: Path) -> None:
    kw = {"faces": FakeFaces(two=True), "select": all_faces, "smooth": 0.0}
    images = tmp_path / "frames"
    _converter(**kw).run(video, images)  # type: ignore[arg-type]
    patches = tmp_path / "patches"
    report = _converter("patches", **kw).run(video, patches)  # type: ignore[arg-type]
    assert report.faces_swapped == 2 * (N - len(NO_FACE))
    manifest = json.loads((patches / "patches.json").read_text())
    assert manifest["frames"] == N and manifest["frames_with_faces"] == [i for i in range(N) if i not in NO_FACE]
    rendered = _pngs(images)
    src, _ = decode_all(video)
    for i in manifest["frames_with_faces"]:
        frame = src[i].copy()
        for f in (0, 1):
            rgba = np.asarray(Image.open(patches / f"{i:06d}_{f}.png"))
            meta = json.loads((patches / f"{i:06d}_{f}.json").read_text())
            assert rgba.shape == (R, R, 4) and meta["frame_index"] == i and meta["size"] == R
            a = np.array(meta["affine_frame_to_patch"])
            np.testing.assert_allclose(cv2.invertAffineTransform(a), meta["affine_patch_to_frame"], atol=1e-9)
            frame = paste_back(frame, rgba[..., :3], rgba[..., 3].astype(np.float32) / 255, a)
        frame[0, 0] = (1, 2, 3)
        # compositing the patches elsewhere gives the converter's own frame (alpha quantised to 8 bits)
        assert np.abs(frame.astype(int) - rendered[i]).max() <= 2


def test_an_exception_leaves_nothing_under_the_final_name(video: Path, tmp_path: Path) -> None:
    for kind, name in (("video", "out.mp4"), ("images", "frames"), ("patches", "patches")):
        out = tmp_path / name
        conv = _converter(kind, swapper=TintModel(fail_after=1))
        with pytest.raises(RuntimeError, match="model exploded"):
            conv.run(video, out)
        assert not out.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"], kind


class _AskedFaces(FakeFaces):
    """FakeFaces that counts the batches it has been asked for."""

    def __init__(self) -> None:
        super().__init__(no_face=set())
        self.asked = 0
        self.changed = threading.Condition()

    def faces(self, frames: Sequence[TimedFrame]) -> list[list[DetectedFace]]:
        with self.changed:
            self.asked += 1
            self.changed.notify_all()
        return super().faces(frames)


class _WaitingModel(TintModel):
    """TintModel that, handed batch k, waits until the face source has been asked for batch k + 1: that can
    only happen if the model runs beside the main thread's planning of the next batch."""

    def __init__(self, faces: _AskedFaces) -> None:
        super().__init__()
        self.faces = faces
        self.overlapped = 0
        self.threads: set[str] = set()

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.threads.add(threading.current_thread().name)
        batch = self.calls + 1
        last = batch * 4 >= N  # no next batch to wait for
        with self.faces.changed:
            if not last and self.faces.changed.wait_for(lambda: self.faces.asked > batch, timeout=10):
                self.overlapped += 1
        return super().__call__(crops)


def test_the_model_runs_beside_the_next_batchs_planning(video: Path, tmp_path: Path) -> None:
    faces = _AskedFaces()
    model = _WaitingModel(faces)
    report = _converter(faces=faces, swapper=model, batch_size=4).run(video, tmp_path / "o")
    assert report.frames == report.frames_swapped == N
    assert model.calls == faces.asked == N // 4
    assert model.overlapped == N // 4 - 1  # the last batch has no next one to wait for
    assert threading.current_thread().name not in model.threads


def test_a_failing_writer_stops_the_run(video: Path, tmp_path: Path) -> None:
    class Broken:
        path = tmp_path / "x"
        aborted = False

        def prepare(self, frame: RenderedFrame) -> object:
            return None

        def write(self, frame: RenderedFrame, prepared: object) -> None:
            if frame.index == 5:
                raise OSError("disk full")

        def close(self) -> Path:
            raise AssertionError("must not close")

        def abort(self) -> None:
            Broken.aborted = True

    before = set(threading.enumerate())  # other tests may leave daemon threads of their own behind
    with pytest.raises(OSError, match="disk full"):
        _converter(writer_factory=lambda o, s: Broken()).run(video, tmp_path / "x")
    assert Broken.aborted
    left = [t for t in threading.enumerate() if t not in before and t.name != "tqdm_monitor"]  # tqdm's is global
    assert left == []  # its threads are gone


def test_killed_convert_leaves_nothing_under_the_final_name(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_convert import _converter, TintModel
        _converter("video", swapper=TintModel(delay=2.0)).run({str(video)!r}, {str(out)!r})
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    try:
        deadline = time.time() + 60
        while not partials(out) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert partials(out), "the writer never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()


def test_output_equal_to_input_is_refused(video: Path, tmp_path: Path) -> None:
    for out in (video, tmp_path / "." / "in.mp4"):
        with pytest.raises(UserError, match="output path is the input"):
            _converter("video").run(video, out)
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    with pytest.raises(UserError, match="output path is the input"):
        _converter("video").run(video, link)
    assert video.stat().st_size > 0


def test_image_folder_output_must_be_new_or_empty(video: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        _converter("images").run(video, full)
    assert (full / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    _converter("images").run(video, empty)
    assert len(list(empty.glob("*.png"))) == N


def test_no_face_anywhere_passes_everything_through(video: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "frames"
    report = _converter(faces=FakeFaces(no_face=set(range(N)))).run(video, out)
    assert report.faces_swapped == report.faces_found == 0 and "no face was found" in caplog.text
    src, _ = decode_all(video)
    for a, b in zip(_pngs(out), src, strict=True):
        np.testing.assert_array_equal(a, _marker(b))  # untouched but for the provenance mark


def test_model_checks_refuse_another_preset_or_face_type(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="preset 'df'"):
        check_model(preset="tiny", resolution=64, face_type="whole", model_dir=tmp_path, expected_preset="df",
                    faces_face_type=None, faces_size=None)
    with pytest.raises(UserError, match="'full' crops"):
        check_model(preset="tiny", resolution=64, face_type="full", model_dir=tmp_path, expected_preset="tiny",
                    faces_face_type="whole", faces_size=256)
    check_model(preset="tiny", resolution=64, face_type="whole", model_dir=tmp_path, expected_preset="tiny",
                faces_face_type="whole", faces_size=256)


def test_preview_writes_one_side_by_side_png_per_colour_mode(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "previews"
    paths = write_previews(_converter(color=color.rct), video, 3, out, metadata={"comment": "synthetic"})
    assert [p.name for p in paths] == [f"in_f000003_{m}.png" for m in color.COLOR_MATCHERS]
    src, _ = decode_all(video)
    for p in paths:
        img = Image.open(p)
        assert img.size == (3 * W, H) and img.text.get("comment") == "synthetic"
        arr = np.asarray(img.convert("RGB"))
        mask_panel = arr[:, 2 * W:]
        x0, y0, x1, y1 = _box(_landmarks(3))
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        assert mask_panel[cy - 5:cy + 5, cx - 5:cx + 5].min() > 200  # the face is white in the mask panel
        assert mask_panel[:, int(x1) + 2:].max() == 0 and mask_panel[int(y1) + 2:].max() == 0
        # the swapped panel differs from the original inside the face only
        d = np.any(arr[:, W:2 * W] != arr[:, :W], axis=2)
        d[:24, :] = False  # the labels
        ys, xs = np.nonzero(d)
        assert xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.max() <= y1 + 1
    with pytest.raises(UserError, match="no face"):
        write_previews(_converter(), video, 4, out)
    with pytest.raises(UserError, match="past the end"):
        write_previews(_converter(), video, 99, out)



def _store(db: Path, video: Path, *, frames: int = N, finish: bool = True, skipped: Sequence[int] = ()) -> Path:
    from changeling.faces.store import AlignmentStore, FaceRecord, FrameRecord

    with AlignmentStore.open(db, video, frame_count=frames) as st:
        recs, faces = [], []
        for i in range(frames):
            status = "skipped" if i in skipped else ("no_face" if i in NO_FACE else "done")
            recs.append(FrameRecord(i, i / 24, status))  # type: ignore[arg-type]
            if status == "done":
                lm = _landmarks(i)
                faces.append(FaceRecord(i, 0, _box(lm), lm, 0.9))
        st.record(recs, faces)
        if finish:
            st.finish(frames)
    return db


def test_stored_alignments_drive_the_converter(video: Path, tmp_path: Path) -> None:
    from changeling.convert.sources import StoreFaceSource, find_alignments

    db = _store(tmp_path / "in.mp4.A.sqlite", video)
    assert find_alignments(tmp_path, video) == db
    out_store, out_fake = tmp_path / "s", tmp_path / "f"
    report = _converter(faces=StoreFaceSource(db), smooth=0.0).run(video, out_store)
    assert report.frames_swapped == N - len(NO_FACE)
    _converter(smooth=0.0).run(video, out_fake)
    for a, b in zip(_pngs(out_store), _pngs(out_fake), strict=True):
        np.testing.assert_array_equal(a, b)  # the stored landmarks are the fake source's


def test_alignments_of_another_video_or_unfinished_are_refused(video: Path, tmp_path: Path) -> None:
    from changeling.convert.sources import StoreFaceSource

    other = write_clip(tmp_path / "other.mp4", frames=N, width=W, height=H, fps=24, audio=None)
    cases = [
        (_store(tmp_path / "other.sqlite", other), "made for another video"),
        (_store(tmp_path / "unfinished.sqlite", video, finish=False), "did not finish"),
        (_store(tmp_path / "nth.sqlite", video, skipped=(3, 4)), "skipped"),
        (tmp_path / "missing.sqlite", "no such alignments file"),
    ]
    for db, message in cases:
        with pytest.raises(UserError, match=message):
            _converter(faces=StoreFaceSource(db)).run(video, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_model_swapper_runs_a_real_tiny_model() -> None:
    from changeling.convert.sources import ModelSwapper
    from changeling.models.registry import create_model

    model = create_model("tiny").eval()
    sw = ModelSwapper(model, resolution=64, face_type="whole", to="B")
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    faces, masks = sw(crops)
    assert faces.shape == (3, 64, 64, 3) and masks.shape == (3, 64, 64)
    assert faces.dtype == masks.dtype == np.float32
    assert 0 <= faces.min() and faces.max() <= 1 and 0 <= masks.min() and masks.max() <= 1
    import torch

    with torch.no_grad():
        ref = model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, "B")
    np.testing.assert_allclose(faces, ref.face.clamp(0, 1).permute(0, 2, 3, 1).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="uint8 crops"):
        sw(crops[:, :32])


def test_model_swapper_takes_the_detail_stages_size_from_the_model(video: Path, tmp_path: Path) -> None:
    """A swapper built without ``output_resolution`` over a model behind a detail stage renders at the stage's
    size, so masks from the occlusion segmenter (at the model's size) and the hull (at the face's) agree; the
    occlusion bench built its swapper this way and failed on "masks differ in shape"."""
    from changeling.convert.sources import ModelSwapper
    from changeling.models.detail import DetailConfig, DetailedModel, DetailStage
    from changeling.models.registry import create_model

    pair = create_model("tiny").eval()
    model = DetailedModel(pair, DetailStage(DetailConfig(resolution=64, scale=4))).eval()
    sw = ModelSwapper(model, resolution=64, face_type="whole", to="B")
    assert sw.output_resolution == 256
    crops = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    faces, masks = sw(crops)
    assert faces.shape == (2, 256, 256, 3) and masks.shape == (2, 256, 256)
    occ = _converter(swapper=sw, masks=MaskBuilder("combined", erode=0, blur=4),
                     occlusion=lambda c: np.ones(c.shape[:3], np.float32))
    report = occ.run(video, tmp_path / "out")
    assert report.frames_swapped == N - len(NO_FACE)

# ---- end to end: extract, train a tiny model, convert, verify (real modules, real CLI) ---------------------

EW, EH, EN = 320, 240, 16
E_NO_FACE = (0, 6, 7)  # frames of A's clip without a face


def _portrait(side: str, size: int) -> np.ndarray:
    from changeling.train.testfaces import portrait

    img = portrait(side)
    crop = img[0:300, 110:410] if side == "A" else img[60:460, 60:460]
    return np.asarray(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))


def _person_clip(path: Path, side: str, frames: int, no_face: Sequence[int] = ()) -> Path:
    """A public-domain portrait moving over a background; some frames without it; a tone as audio."""
    from changeling.video.testclip import pattern_frame

    face = _portrait(side, 170)
    bg = pattern_frame(0, EW, EH)
    images = []
    for i in range(frames):
        img = np.roll(bg, 2 * i, axis=1).copy()
        if i not in no_face:
            x, y = 60 + int(30 * np.sin(i / 5)), 30 + int(8 * np.cos(i / 4))
            img[y:y + 170, x:x + 170] = face
        images.append(img)
    return write_clip(path, width=EW, height=EH, fps=24, audio="aac", images=images)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from conftest import run_cli

    root = tmp_path_factory.mktemp("e2e")
    a = _person_clip(root / "a.mp4", "A", EN, E_NO_FACE)
    b = _person_clip(root / "b.mp4", "B", 12)
    proj = root / "proj"
    for args in (("init", str(proj)),
                 ("extract", "-q", "--project", str(proj), "--side", "A", str(a)),
                 ("extract", "-q", "--project", str(proj), "--side", "B", str(b)),
                 ("train", "-q", "--project", str(proj), "--preset", "tiny", "--batch-size", "8", "--max-steps",
                  "60", "--preview-every", "0")):
        r = run_cli(*args)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return {"root": root, "a": a, "b": b, "proj": proj}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    from conftest import run_cli

    return run_cli(*args)


@pytest.mark.slow
def test_end_to_end_video_keeps_timing_audio_and_carries_the_marks(trained: dict[str, Path]) -> None:
    from changeling.provenance import verify_file

    out = trained["root"] / "out.mp4"
    r = _cli("convert", "-q", "--project", str(trained["proj"]), str(trained["a"]), "-o", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{EN - len(E_NO_FACE)} with a swapped face" in r.stdout
    frames_in, times_in = decode_all(trained["a"])
    frames_out, times_out = decode_all(out)
    assert len(frames_out) == len(frames_in) == EN
    assert frames_out[0].shape == (EH, EW, 3)
    np.testing.assert_allclose(times_out, times_in, atol=1e-3)
    with av.open(str(out)) as c:
        assert Fraction(c.streams.video[0].average_rate) == 24
    assert audio_seconds(out) == pytest.approx(audio_seconds(trained["a"]), abs=0.03)
    # provenance: the marks are found after re-encoding at CRF 28, and not on the source
    reencoded = write_clip(trained["root"] / "crf28.mp4", width=EW, height=EH, fps=24, audio=None,
                           images=frames_out, crf=28)
    found = verify_file(reencoded)
    assert found.watermark and found.verdict == "marked", found.summary()
    assert verify_file(out).metadata.present
    assert verify_file(trained["a"]).verdict == "not marked"


@pytest.mark.slow
def test_end_to_end_frames_pass_through_and_faces_look_like_b(trained: dict[str, Path]) -> None:
    from changeling.detect.align import face_affine
    from changeling.faces.facefile import list_faces, read_face
    from changeling.faces.store import AlignmentStore

    out = trained["root"] / "frames"
    r = _cli("convert", "-q", "--project", str(trained["proj"]), str(trained["a"]), "-o", str(out),
             "--writer", "images", "--color", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    got = _pngs(out)
    src, _ = decode_all(trained["a"])
    assert len(got) == EN
    from changeling.provenance import embed_watermark

    for i in E_NO_FACE:  # bit-exact pass-through of the source frame, plus the provenance watermark
        np.testing.assert_array_equal(got[i], embed_watermark(src[i]))
        assert not np.array_equal(got[i], src[i])
    # the test's own identity measure: distance of the aligned face's centre to B's mean training face
    faces_b = [read_face(p)[0] for p in list_faces(trained["proj"] / "faces" / "B")]
    size = faces_b[0].shape[0]
    mean_b = np.mean([f.astype(np.float32) for f in faces_b], axis=0)
    centre = (slice(size // 4, 3 * size // 4), slice(size // 4, 3 * size // 4))
    closer = 0
    with AlignmentStore.open_existing(trained["proj"] / "alignments" / "a.mp4.A.sqlite") as store:
        swapped = [i for i in range(EN) if i not in E_NO_FACE]
        for i in swapped:
            lm = store.faces_for_frame(i)[0].landmarks
            a = face_affine(lm, "whole", size)
            crop_out = cv2.warpAffine(got[i], a, (size, size)).astype(np.float32)
            crop_src = cv2.warpAffine(src[i], a, (size, size)).astype(np.float32)
            assert np.abs(crop_out[centre] - crop_src[centre]).mean() > 5  # the face was replaced
            d_out = np.abs(crop_out[centre] - mean_b[centre]).mean()
            d_src = np.abs(crop_src[centre] - mean_b[centre]).mean()
            closer += d_out < d_src
    assert closer == len(swapped)


@pytest.mark.slow
def test_end_to_end_refusals_are_one_line(trained: dict[str, Path]) -> None:
    proj, a = trained["proj"], trained["a"]
    cases = [
        (("convert", "--project", str(proj), str(a), "-o", str(a)), "output path is the input"),
        (("convert", "--project", str(proj), str(a), "-o", str(trained["root"] / "x.mp4"), "--alignments",
          str(proj / "alignments" / "b.mp4.B.sqlite")), "made for another video"),
        (("convert", "--project", str(proj), str(a), "--preview", "99"), "past the end"),
        (("convert", "--project", str(proj), str(a), "--preview", "0"), "no face found in frame 0"),
    ]
    other = trained["root"] / "other"
    assert _cli("init", str(other)).returncode == 0
    (other / "changeling.toml").write_text('[train]\npreset = "df"\n')
    cases.append((("convert", "--project", str(other), str(a), "--model", str(proj / "model")), "preset 'df'"))
    for args, message in cases:
        r = _cli(*args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (args, r.stderr[-2000:])
    assert not (trained["root"] / "x.mp4").exists()
    assert a.stat().st_size > 0


@pytest.mark.slow
def test_end_to_end_preview_pngs(trained: dict[str, Path]) -> None:
    out = trained["root"] / "previews"
    r = _cli("convert", "-q", "--project", str(trained["proj"]), str(trained["a"]), "--preview", "3", "-o", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    paths = [Path(p) for p in r.stdout.split()]
    assert [p.name for p in paths] == [f"a_f000003_{m}.png" for m in color.COLOR_MATCHERS]
    for p in paths:
        assert Image.open(p).size == (3 * EW, EH)


def test_decoding_in_a_process_renders_the_same_frames(video: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from changeling import threads
    from changeling.video import process_reader

    monkeypatch.setattr(threads, "_WORKER_PROCESSES", [True])
    monkeypatch.setenv(process_reader.ENV, "0")
    here = _converter(smooth=0.0).run(video, tmp_path / "thread")
    monkeypatch.setenv(process_reader.ENV, "1")
    calls: list[int] = []
    real = process_reader.ProcessFrames.__init__

    def counting(self: process_reader.ProcessFrames, *a: object, **k: object) -> None:
        calls.append(1)
        real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(process_reader.ProcessFrames, "__init__", counting)
    child = _converter(smooth=0.0).run(video, tmp_path / "process")
    assert calls == [1]  # the child process did the decoding
    assert (child.frames, child.frames_swapped, child.skipped) == (here.frames, here.frames_swapped, here.skipped)
    for x, y in zip(_pngs(tmp_path / "thread"), _pngs(tmp_path / "process"), strict=True):
        np.testing.assert_array_equal(x, y)


class EnlargingTint(TintModel):
    """TintModel behind a 2x 'detail stage': the same tinted face, enlarged bilinearly."""

    output_resolution = 2 * R

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        f, m = super().__call__(crops)
        size = (2 * R, 2 * R)
        return (np.stack([cv2.resize(x, size, interpolation=cv2.INTER_LINEAR) for x in f]),
                np.stack([cv2.resize(x, size, interpolation=cv2.INTER_LINEAR) for x in m]))


def test_faces_larger_than_the_crops_are_pasted_in_the_same_place(video: Path, tmp_path: Path) -> None:
    """A swapper that returns faces 2x the crop's size (a detail stage) pastes them where the crop came from,
    with the mask's feather in the model's crop pixels: the frames match the 1x swapper's within interpolation
    error."""
    one = _pngs(_converter(smooth=0.0).run(video, tmp_path / "one").output)
    two = _pngs(_converter(smooth=0.0, swapper=EnlargingTint()).run(video, tmp_path / "two").output)
    src, _ = decode_all(video)
    for i in range(N):
        if i in NO_FACE:
            continue
        changed = np.any(one[i] != src[i], axis=2)
        assert changed.sum() > 200  # the face really was swapped
        diff = np.abs(one[i].astype(int) - two[i].astype(int))
        assert diff[changed].mean() < 3.0 and np.percentile(diff, 99) < 30
