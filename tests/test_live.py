"""Live mode: the one-frame slot, pacing, the latency report, the threaded pipeline with fakes (drops at the
input, order, errors), and a real tiny project swapped from a file played in real time to a file and to a fake
virtual camera, through the API and the command line (bad input, Ctrl+C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from changeling.cli import main
from changeling.config import ConvertSettings, LiveSettings
from changeling.convert import color
from changeling.convert.maskops import MaskBuilder
from changeling.convert.pipeline import Converter
from changeling.convert.writers import RenderedFrame, writer_factory
from changeling.errors import UserError
from changeling.live import LiveOptions, live
from changeling.live.inputs import Captured, LatestSlot, _camera_error, camera_spec, paced
from changeling.live.pipeline import LiveSession, run_live
from changeling.live.sinks import CallbackSink, VirtualCameraSink
from changeling.live.stats import LiveReport
from changeling.models.registry import Dims
from changeling.project import Project, init_project
from changeling.provenance.watermark import detect_watermark
from changeling.synth import ClipInfo, make_clip, make_motion
from changeling.video.reader import FrameSource, TimedFrame
from conftest import decode_all
from test_convert import FakeFaces, TintModel, _marker

CW, CH, FPS = 256, 192, 15  # the smallest frames the watermark survives H.264 in comfortably


# ---- pieces ---------------------------------------------------------------------------------------------------


def test_slot_keeps_only_the_newest_frame_and_counts_the_dropped() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.take(0.0) is None and not slot.ended
    for i in range(3):
        slot.offer(i)
    assert slot.take(0.0) == 2  # the newest; 0 and 1 were replaced, never queued
    assert slot.take(0.0) is None
    slot.offer(3)
    slot.end()
    assert not slot.ended  # a frame is still waiting
    assert slot.take(0.0) == 3 and slot.ended
    assert (slot.offered, slot.dropped) == (4, 2)


def test_paced_hands_each_frame_on_at_its_due_time() -> None:
    frames = [TimedFrame(i, 10.0 + i / 50, None, np.zeros((2, 2, 3), np.uint8)) for i in range(5)]
    got = []
    for c in paced(frames, lambda: False):  # type: ignore[arg-type]
        got.append((c, time.perf_counter()))
    start = got[0][0].due
    for i, (c, handed) in enumerate(got):
        assert c.frame.index == i
        assert c.due == pytest.approx(start + i / 50)  # the file's times, from the first frame on
        assert handed >= c.due  # never before it is due
    assert list(paced(frames, lambda: True)) == []  # stopped: nothing more


def test_report_quantiles_rate_and_drops() -> None:
    r = LiveReport(captured=10, dropped=2, latencies=[0.01 * (i + 1) for i in range(8)],
                   outputs=[1.0 + 0.1 * i for i in range(8)], stages={"model": 0.08})
    assert r.frames == 8 and r.drop_rate == pytest.approx(0.2)
    assert r.fps == pytest.approx(10.0)
    assert r.latency_ms(0.5) == pytest.approx(45.0)
    assert r.latency_ms(0.95) == pytest.approx(76.5)
    assert r.stage_ms() == {"model": 10.0}
    assert "10 frames in, 8 out, 2 dropped (20.0%)" in r.summary() and "p95 76 ms" in r.summary()
    assert LiveReport().fps == 0.0 and LiveReport().latency_ms(0.95) == 0.0


def test_camera_names_and_errors() -> None:
    assert camera_spec("2", "linux") .device == "/dev/video2"
    assert camera_spec("/dev/video5", "linux").format == "v4l2"
    assert camera_spec("0", "darwin").device == "0:none"
    assert camera_spec("Integrated Camera", "win32").device == "video=Integrated Camera"
    with pytest.raises(UserError, match="the camera's name"):
        camera_spec("0", "win32")
    spec = camera_spec("0", "linux")
    assert "is busy" in str(_camera_error(spec, OSError(16, "Device or resource busy")))
    assert "no such camera 0 (/dev/video0)" in str(_camera_error(spec, FileNotFoundError(2, "No such file")))


# ---- the pipeline with fakes ------------------------------------------------------------------------------


W, H = 96, 72


def _fake_converter(model: Any = None) -> Converter:
    return Converter(faces=FakeFaces(no_face={2}), swapper=model or TintModel(), color=color.none,
                     masks=MaskBuilder("hull", erode=0, blur=4), writer_factory=writer_factory("video", crf=18),
                     marker=_marker, progress=False)


def _burst(n: int, gap: float = 0.0) -> Callable[[Callable[[], bool]], Iterator[Captured]]:
    """``n`` frames (a moving gradient), each captured now, ``gap`` seconds apart."""
    def frames(stopped: Callable[[], bool]) -> Iterator[Captured]:
        for i in range(n):
            if stopped():
                return
            img = np.full((H, W, 3), 40 + 3 * i, np.uint8)
            yield Captured(TimedFrame(i, i / 30, None, img), time.perf_counter())
            time.sleep(gap)
    return frames


SOURCE = FrameSource(path=Path("fake"), kind="stream", width=W, height=H, fps=Fraction(30),
                     time_base=Fraction(1, 90_000), frame_count=0)


def test_every_frame_out_is_rendered_and_marked_in_order() -> None:
    got: list[RenderedFrame] = []
    report = run_live(_fake_converter(), _burst(8, gap=0.05), SOURCE, [CallbackSink(got.append)])
    assert report.frames + report.dropped == report.captured == 8
    assert [f.index for f in got] == sorted(f.index for f in got)
    assert all(tuple(f.image[0, 0]) == (1, 2, 3) for f in got)  # the marker ran on every frame, faces or not
    assert all(f.swapped == (f.index != 2) for f in got)
    assert len(report.latencies) == len(got) and min(report.latencies) > 0


def test_a_slow_model_makes_the_input_drop_frames_instead_of_queueing_them() -> None:
    got: list[RenderedFrame] = []
    report = run_live(_fake_converter(TintModel(delay=0.05)), _burst(40), SOURCE, [CallbackSink(got.append)])
    assert report.captured == 40 and report.dropped > 0
    assert report.frames + report.dropped == 40  # every frame either came out or was dropped at the input
    # at most one frame waits at each of the four stages, so the newest frame comes out within a few
    assert got[-1].index == 39
    assert [f.index for f in got] == sorted({f.index for f in got})


def test_a_model_error_aborts_the_sinks_and_is_raised() -> None:
    events: list[str] = []

    class Recorder(CallbackSink):
        def close(self) -> None:
            events.append("close")

        def abort(self) -> None:
            events.append("abort")

    with pytest.raises(RuntimeError, match="model exploded"):
        run_live(_fake_converter(TintModel(fail_after=2)), _burst(10, gap=0.01), SOURCE, [Recorder(lambda f: None)])
    assert events == ["abort"]


def test_an_input_error_comes_after_the_frames_before_it_and_the_sinks_are_closed() -> None:
    events: list[Any] = []

    class Recorder(CallbackSink):
        def close(self) -> None:
            events.append("close")

    def broken(stopped: Callable[[], bool]) -> Iterator[Captured]:
        yield from _burst(3, gap=0.05)(stopped)
        raise UserError("camera unplugged")

    with pytest.raises(UserError, match="camera unplugged"):
        run_live(_fake_converter(), broken, SOURCE, [Recorder(lambda f: events.append(f.index))])
    assert events[-1] == "close" and events[:-1] and set(events[:-1]) <= {0, 1, 2}


def test_stop_event_ends_the_input_and_drains() -> None:
    stop = threading.Event()
    got: list[RenderedFrame] = []

    def endless(stopped: Callable[[], bool]) -> Iterator[Captured]:
        i = 0
        while not stopped():
            yield Captured(TimedFrame(i, i / 30, None, np.full((H, W, 3), 90, np.uint8)), time.perf_counter())
            if i == 5:
                stop.set()
            i += 1
            time.sleep(0.01)

    report = run_live(_fake_converter(), endless, SOURCE, [CallbackSink(got.append)], stop=stop)
    assert 6 <= report.captured and report.frames + report.dropped == report.captured


def test_session_swaps_one_frame_at_a_time_with_the_tracker_carried() -> None:
    conv = _fake_converter()
    session = LiveSession(conv, SOURCE)
    outs = [session.step(np.full((H, W, 3), 100, np.uint8)) for _ in range(4)]
    assert [o.index for o in outs] == [0, 1, 2, 3] and [o.swapped for o in outs] == [True, True, False, True]
    assert conv.faces.opened == 1  # type: ignore[attr-defined]  # opened once, then carried
    assert len(session.meter.report(4, 0).latencies) == 4


# ---- a real project -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project with an untrained tiny model at 32 px (its swap differs from the input: enough here), and a
    synthetic clip of a moving portrait."""
    root = tmp_path_factory.mktemp("live")
    project = tiny_project(root)
    clip = make_clip("astronaut", make_motion(seed=3, duration=1.0), (CW, CH), FPS, root / "clip.mp4", audio=False)
    return {"root": root, "project": project, "clip": clip}


def tiny_project(root: Path) -> Project:
    """``root/proj``: an untrained tiny model at 32 px and two faces a side."""
    from changeling.bench.live_bench import bench_project

    return bench_project(root, "tiny", Dims(resolution=32, e_dims=4, ae_dims=16, d_dims=8))


def _face_box(clip: ClipInfo, i: int) -> tuple[slice, slice]:
    lm = clip.landmarks[i]
    x0, y0 = np.maximum(lm[:, :2].min(0).astype(int), 0)
    x1, y1 = lm[:, :2].max(0).astype(int)
    return slice(y0, y1), slice(x0, x1)


def test_file_played_live_to_a_file_is_swapped_and_marked(tiny: dict[str, Any], tmp_path: Path) -> None:
    from changeling.provenance import verify_file

    clip: ClipInfo = tiny["clip"]
    out = tmp_path / "live.mp4"
    report = live(tiny["project"], ConvertSettings(device="cpu"), LiveSettings(),
                  LiveOptions(input=clip.path, output=out))
    assert report.output == str(out) and report.captured == clip.frames
    assert report.frames + report.dropped == clip.frames and report.frames > 0  # how many: the machine's speed
    assert verify_file(out).verdict == "marked"
    got, times = decode_all(out)
    src, src_times = decode_all(clip.path)
    assert len(got) == report.frames
    changed = 0
    for image, t in zip(got, times, strict=True):
        i = int(np.argmin(np.abs(np.asarray(src_times) - t)))  # the input frame it was made from
        assert abs(src_times[i] - t) < 1e-3  # frames keep the input's times
        rows, cols = _face_box(clip, i)
        face = np.abs(image[rows, cols].astype(int) - src[i][rows, cols]).mean()
        corner = np.abs(image[:16, :16].astype(int) - src[i][:16, :16]).mean()
        changed += face > 8 and corner < 4
    assert changed >= len(got) - 1  # the first frame may come before the tracker has the face


def test_virtual_camera_gets_every_frame_marked(tiny: dict[str, Any]) -> None:
    sent: list[np.ndarray] = []
    opened: list[tuple[int, int, float]] = []

    class FakeCam:
        device = "/dev/video-fake"

        def __init__(self, w: int, h: int, fps: float) -> None:
            opened.append((w, h, fps))

        def send(self, frame: np.ndarray) -> None:
            sent.append(frame.copy())

        def close(self) -> None:
            opened.append((0, 0, 0.0))

    report = live(tiny["project"], ConvertSettings(device="cpu"), LiveSettings(),
                  LiveOptions(input=tiny["clip"].path, virtual_camera=True), camera_backend=FakeCam)
    assert opened == [(CW, CH, float(FPS)), (0, 0, 0.0)]  # opened at the input's size and rate, then closed
    assert len(sent) == report.frames > 0
    assert all(f.shape == (CH, CW, 3) and f.dtype == np.uint8 for f in sent)
    assert all(detect_watermark(f)[0] for f in sent)


def test_virtual_camera_without_a_device_or_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_device(w: int, h: int, fps: float) -> Any:
        raise RuntimeError("'v4l2loopback' backend: No v4l2 loopback device found at /dev/video[0-99].\nmore")

    with pytest.raises(UserError) as info:
        VirtualCameraSink(64, 48, 30, backend=no_device, platform="linux")
    assert "No v4l2 loopback device" in str(info.value) and "modprobe v4l2loopback" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="OBS"):
        VirtualCameraSink(64, 48, 30, backend=no_device, platform="win32")
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # not installed
    with pytest.raises(UserError, match=r"pip install 'changeling\[live\]'"):
        VirtualCameraSink(64, 48, 30)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["live", *args])
    return code, capsys.readouterr().err


def test_bad_input_is_one_line_and_exit_2(tiny: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    proj = str(tiny["project"].root)
    empty = init_project(tmp_path / "empty")
    cases = [
        (["-p", proj, "--camera", "97", "--stats"], "no such camera 97 (/dev/video97)"),
        (["-p", str(empty.root), "--input", str(tiny["clip"].path), "--stats"], "no trained model"),
        (["-p", proj, "--input", str(tmp_path / "missing.mp4"), "--stats"], "missing.mp4"),
        (["-p", proj, "--input", str(tiny["clip"].path)], "nowhere to send the frames"),
        (["-p", proj, "--input", str(tiny["clip"].path), "-o", str(tmp_path / "x.txt")], "must be a video"),
        (["-p", proj, "--input", str(tiny["clip"].path), "-o", str(tiny["clip"].path)], "is the input"),
    ]
    if sys.platform.startswith("linux"):
        # the camera check reads the device node; a machine with a camera 97 is not one this test runs on
        assert not Path("/dev/video97").exists()
    for args, says in cases:
        code, err = _cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in err, (args, err)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*partial*"))
    with pytest.raises(SystemExit) as info:  # two inputs: the parser refuses
        main(["live", "-p", proj, "--camera", "0", "--input", "x.mp4"])
    assert info.value.code == 2


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_finishes_the_file(tiny: dict[str, Any], tmp_path: Path) -> None:
    from changeling.provenance import verify_file

    # 20 s: Ctrl+C comes 3 s into it, with room to spare for a CI machine that runs everything slowly
    clip = make_clip("astronaut", make_motion(seed=4, duration=20.0), (CW, CH), FPS, tmp_path / "long.mp4",
                     audio=False)
    out = tmp_path / "out.mp4"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "changeling", "live", "-p", str(tiny["project"].root),
                             "--input", str(clip.path), "-o", str(out), "--stats", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # warmed up: frames flow
            if line.startswith("live: running"):
                break
        time.sleep(3.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert out.is_file() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
    frames, _ = decode_all(out)
    assert 0 < len(frames) < clip.frames  # stopped before the end, and what was swapped is in the file
    assert f"{out}: {len(frames)} frames" in stdout and "dropped" in stdout
    assert verify_file(out).verdict == "marked"


def test_bench_case_reports_rate_latency_drops_and_stages() -> None:
    from changeling.bench.live_bench import bench_live

    out = bench_live(CW, CH, "cpu", seconds=1.0, fps=FPS, repeats=1)
    assert out["frames_in"] == FPS and out["frames_out"] + round(out["drop_rate"] * FPS) == FPS
    assert out["frames_out"] > 0 and 0 < out["p50_ms"] <= out["p95_ms"] and out["runs"] == [round(out["fps"], 1)]
    assert {"faces", "model", "render", "render_mark", "output"} <= set(out["stages_ms"])
    assert out["input"] == f"{CW}x{CH}@{FPS}" and out["preset"] == "tiny"


def test_a_camera_through_pyav_to_a_file_until_stopped(tiny: dict[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No camera here: FFmpeg's test source stands in for the device (the same PyAV path: open, size, rate,
    frames stamped as they are read, closed at the end)."""
    from changeling.live import inputs
    from changeling.provenance import verify_file

    monkeypatch.setattr(inputs, "camera_spec", lambda camera, platform: inputs.CameraSpec(
        "lavfi", f"testsrc2=size={CW}x{CH}:rate={FPS}", f"camera {camera}"))
    cam = inputs.Camera("0")
    assert (cam.width, cam.height, cam.fps) == (CW, CH, FPS) and cam.source().kind == "stream"
    got: list[Captured] = []
    for c in cam.frames(lambda: len(got) >= 3):
        got.append(c)
    assert [c.frame.index for c in got] == [0, 1, 2] and got[0].frame.image.shape == (CH, CW, 3)
    assert got[0].due <= got[1].due <= got[2].due and got[0].frame.time == 0.0

    stop = threading.Event()
    out = tmp_path / "camera.mp4"
    timer = threading.Timer(2.0, stop.set)
    timer.start()
    report = live(tiny["project"], ConvertSettings(device="cpu"), LiveSettings(), LiveOptions(camera="0", output=out),
                  stop=stop)
    timer.join()
    assert report.output == str(out) and report.frames > 0 and report.frames + report.dropped == report.captured
    assert verify_file(out).verdict == "marked"  # no face in the test pattern: every frame marked all the same
