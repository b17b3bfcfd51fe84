"""The Live tab in a real browser: Chromium's fake camera plays a synthetic clip (a y4m file written from
``changeling.synth``), the page streams it to the server, and the swapped frames that come back are checked:
they arrive, they differ from the camera's frames where the face is (and match them elsewhere), and they carry
the watermark. Skips without Chromium as tests/test_ui_browser.py does (fails under CI=true)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from changeling.provenance.watermark import detect_watermark
from changeling.synth import make_motion, render_frames
from test_live import tiny_project
from test_ui_browser import CHROMIUM, Page, Server, _need_browser, tab
from test_ui_browser import screenshot_dir as shots  # noqa: F401 - a fixture, by this name here

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:DeprecationWarning"),
]
W, H, FPS = 256, 192, 10


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """RGB frames as an uncompressed YUV4MPEG2 file (4:2:0), what Chromium's fake camera plays."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for image in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    frames = list(render_frames("astronaut", make_motion(seed=3, duration=1.0), (W, H), FPS))
    path = write_y4m(tmp_path_factory.mktemp("camera") / "clip.y4m", [f.image for f in frames], FPS)
    return path, frames


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _need_browser()
    home = tmp_path_factory.mktemp("ui-live-home")
    tiny_project(home)  # home/proj
    srv = Server(home)
    srv.ws.open("proj", create=False)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def camera_browser(camera_clip: tuple[Path, list[Any]]) -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera_clip[0]}"])
        try:
            yield b
        finally:
            b.close()


def _outputs(p: Page, done: Callable[[list[np.ndarray]], bool], timeout: float = 300) -> list[np.ndarray]:
    """The swapped frames the page shows, fetched as the page fetches them, until ``done(frames)``."""
    seen: dict[str, np.ndarray] = {}
    deadline = time.monotonic() + timeout
    while not done(list(seen.values())):
        assert time.monotonic() < deadline, f"{len(seen)} swapped frames arrived; stats: " \
                                            f"{p.page.locator('#live-stats').inner_text()}"
        img = p.page.locator("#live-output img")
        src = img.first.get_attribute("src", timeout=1000) if img.count() else None
        if src and src not in seen:
            answer = p.context.request.get(src)
            assert answer.status == 200, (src, answer.status)
            seen[src] = np.asarray(Image.open(io.BytesIO(answer.body())).convert("RGB"))
        time.sleep(0.1)
    return list(seen.values())


def _face_box(landmarks: np.ndarray, pad: int = 4) -> tuple[slice, slice]:
    x0, y0 = np.maximum(landmarks[:, :2].min(0).astype(int) - pad, 0)
    x1, y1 = landmarks[:, :2].max(0).astype(int) + pad
    return slice(y0, y1), slice(x0, x1)


def _source(out: np.ndarray, frames: list[Any]) -> tuple[int, float, float]:
    """The camera frame ``out`` was made from (the one its background matches best), how far its background is
    from that frame's (mean absolute difference, levels) and how far its face is."""
    rest = []
    for f in frames:
        mask = np.ones(out.shape[:2], bool)
        mask[_face_box(f.landmarks, pad=12)] = False
        rest.append(float(np.abs(out.astype(int) - f.image)[mask].mean()))
    i = int(np.argmin(rest))
    face = float(np.abs(out.astype(int) - frames[i].image)[_face_box(frames[i].landmarks, pad=-8)].mean())
    return i, rest[i], face


def test_live_tab_swaps_the_camera_and_marks_every_frame(live_server: Server, camera_browser: Any,
                                                        camera_clip: tuple[Path, list[Any]],
                                                        shots: Path) -> None:  # noqa: F811 - the fixture
    _, frames = camera_clip
    p = Page(camera_browser, shots, "test_live_tab")
    try:
        pg = p.page
        pg.goto(live_server.url)
        tab(p, "Live")
        pg.get_by_text("Click to Access Webcam").click()
        pg.locator("#live-camera button[aria-label='capture photo']").click()  # in streaming mode: Record
        # the fake camera's first frames may come before the clip's: frames are matched to the clip's first
        matched: dict[int, tuple[int, float, float]] = {}  # output -> (camera frame, background diff, face diff)

        def enough(got: list[np.ndarray]) -> bool:
            for k in range(len(matched), len(got)):
                matched[k] = _source(got[k], frames)
            return sum(rest < 8 for _, rest, _ in matched.values()) >= 5

        got = _outputs(p, enough)
        pg.wait_for_function("() => /\\d+ frames swapped/.test(document.querySelector('#live-stats').innerText)")
        stats = pg.locator("#live-stats").inner_text()
        assert "frames/s" in stats and "latency p50" in stats
        p.shot("1-live")
        for k, out in enumerate(got):
            assert out.shape == (H, W, 3)
            assert detect_watermark(out)[0]  # every frame the page got, the clip's or not
            _, rest, face = matched[k]
            if rest < 8:  # a frame of the clip: the camera's outside the face, swapped where the face is
                assert face > 2 * rest + 6, (k, face, rest)
        outside = [u for u in p.requests if not u.startswith(f"http://127.0.0.1:{live_server.port}/")]
        assert outside == []  # nothing was fetched from anywhere but this server
    finally:
        p.shot("last")
        print("screenshots:", *map(str, p.shots), sep="\n  ")
        p.context.close()
