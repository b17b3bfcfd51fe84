"""The web UI in a real browser: Debian's Chromium driven by Playwright, against the server started in this
process. One test walks from nothing to a rendered, verified swap (with a page reload while training runs);
the others check what the server refuses: files outside the project, oversized uploads, no login, a page
reached through another name (DNS rebinding) and requests that another site's page starts.

Without /usr/bin/chromium these tests skip, unless CI=true, where they fail (CI installs Chromium). Each test
saves a screenshot (CHANGELING_SCREENSHOT_DIR, default: pytest's temporary folder; the path is printed), and
with CHANGELING_UPDATE_SCREENSHOTS=1 the Train tab's screenshot also replaces docs/ui-train.png.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from changeling.faces.facefile import list_faces, read_meta
from changeling.synth import load_portrait
from changeling.ui.paths import REFUSED

CHROMIUM = Path("/usr/bin/chromium")
REBOUND = "rebind.test"
ROOT = Path(__file__).resolve().parents[1]
UPLOAD_LIMIT_MB = 5
pytestmark = [
    pytest.mark.slow,
    # Gradio's queue calls pandas in ways pandas 3 deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:DeprecationWarning"),
]


def _need_browser() -> None:
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import gradio  # noqa: F401
            import playwright  # noqa: F401
        except ImportError as exc:
            reason = f"the UI test needs gradio and playwright: {exc}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port``, read from the kernel's tables (IPv4 and IPv6)."""
    found = set()
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def http_request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
                 body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send exactly ``path`` (no client-side normalisation of '..') to 127.0.0.1:``port``; ``headers`` may
    replace ``Host``. Returns (status, headers with lower-case names, body)."""
    headers = dict(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=any(k.lower() == "host" for k in headers),
                        skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def raw_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET exactly ``path``; (status, body)."""
    code, _, body = http_request(port, "GET", path, headers)
    return code, body


def session_cookie(url: str) -> dict[str, str]:
    """Open the address the server printed (it carries the launch token) as a browser would: the answer is a
    redirect that sets the session cookie. Returns the ``Cookie`` header that later requests send; empty when
    no cookie came (a server without the launch token)."""
    parts = urlsplit(url)
    assert parts.port is not None
    _, headers, _ = http_request(parts.port, "GET", f"{parts.path or '/'}?{parts.query}")
    cookie = headers.get("set-cookie", "").split(";", 1)[0]
    return {"Cookie": cookie} if cookie else {}


def upload(port: int, name: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    boundary = "changelingboundary7d1"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    code, _, answer = http_request(port, "POST", "/gradio_api/upload", body=body, headers={
        **(headers or {}), "Content-Type": f"multipart/form-data; boundary={boundary}"})
    return code, answer


class Server:
    def __init__(self, home: Path, auth: tuple[str, str] | None = None) -> None:
        from changeling.evaluate.paired import PairedSpec
        from changeling.ui.app import ServeOptions, serve
        from changeling.ui.workspace import Workspace

        self.home = home
        self.ws = Workspace(home, sample_spec=PairedSpec(seconds=2.0))
        self.port = free_port()
        self.blocks, self.url = serve(self.ws, ServeOptions(port=self.port, auth=auth,
                                                            max_upload=f"{UPLOAD_LIMIT_MB}mb"))
        self.base = f"http://127.0.0.1:{self.port}"  # the address without the launch token
        self.cookie = session_cookie(self.url)

    def close(self) -> None:
        for root, _ in self.ws.running_jobs():
            self.ws.runner(_project(root)).stop(timeout=30)
        self.blocks.close()


def _project(root: Path) -> Any:
    from changeling.project import Project

    return Project(root)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _need_browser()
    from changeling import demo

    with pytest.MonkeyPatch.context() as mp:
        # short, small sample clips for the test (the UI uses the demo's clip maker and its sizes)
        mp.setattr(demo, "TRAIN_SECONDS", 2.0)
        mp.setattr(demo, "CLIP_SIZE", 128)  # the smallest frame the provenance watermark fits (convert previews)
        srv = Server(tmp_path_factory.mktemp("ui-home"))
        try:
            yield srv
        finally:
            srv.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # rebind.test resolves to 127.0.0.1, as an attacker's name would after DNS rebinding
        b = pw.chromium.launch(executable_path=str(CHROMIUM),
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                     f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(os.environ.get("CHANGELING_SCREENSHOT_DIR") or tmp_path_factory.getbasetemp() / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


class Page:
    """A browser page that records every request it makes and saves named screenshots."""

    def __init__(self, browser: Any, folder: Path, test: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.folder, self.test = folder, test
        self.shots: list[Path] = []

    def shot(self, name: str) -> Path:
        path = self.folder / f"{self.test}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path


@pytest.fixture
def page(browser: Any, screenshot_dir: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    p = Page(browser, screenshot_dir, request.node.name)
    try:
        yield p
    finally:
        try:
            p.shot("last")  # a failing test leaves the page as it was when it failed
        finally:
            print("screenshots:", *map(str, p.shots), sep="\n  ")
            p.context.close()


# ---- helpers on the page ----
def tab(p: Page, name: str) -> None:
    p.page.get_by_role("tab", name=name).click()


def status(p: Page) -> str:
    return str(p.page.locator("#job-status").inner_text())


def wait_status(p: Page, pattern: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = status(p)
        if re.search(pattern, text):
            return text
        if re.search(r"job \S+( [AB])?: failed \(exit", text):
            break
        time.sleep(0.25)
    log = p.page.locator("#job-log textarea").input_value()
    raise AssertionError(f"status never matched {pattern!r}; last: {text!r}\njob log:\n{log}")


def fill_number(p: Page, elem_id: str, value: float) -> None:
    box = p.page.locator(f"#{elem_id} input").first
    box.fill(str(value))
    box.press("Tab")


def choose(p: Page, elem_id: str, option: str) -> None:
    p.page.locator(f"#{elem_id} input").first.click()
    p.page.get_by_role("option", name=option, exact=True).click()


def test_from_nothing_to_a_verified_swap(server: Server, page: Page, tmp_path: Path) -> None:
    pg = page.page
    pg.goto(server.url)
    pg.locator("#project-name textarea, #project-name input").first.fill("swap")
    pg.locator("#create-project").click()
    wait_status(page, r"Project\s+swap")
    pg.locator("#sample-clips").click()
    pg.wait_for_function("() => document.querySelector('#project-summary').innerText.includes('A_heldout.mp4')",
                         timeout=60_000)
    page.shot("1-project")
    project = server.home / "swap"
    assert sorted(p.name for p in (project / "inputs").iterdir()) == ["A_heldout.mp4", "A_train.mp4",
                                                                     "B_train.mp4"]

    # Extract: the sample clips are chosen for A and B; small faces keep the test fast
    tab(page, "Extract")
    assert "A_train.mp4" in pg.locator("#inputs-A").inner_text()
    assert "B_train.mp4" in pg.locator("#inputs-B").inner_text()
    fill_number(page, "extract-size", 64)
    # an uploaded photo joins A's inputs (copied into the project) and is chosen with the clip
    photo = tmp_path / "astronaut photo.png"
    Image.fromarray(load_portrait("astronaut").image).save(photo)
    pg.locator("#upload-A input[type=file]").set_input_files(str(photo))
    pg.wait_for_function("() => document.querySelector('#inputs-A').innerText.includes('astronaut photo.png')")
    assert (project / "inputs" / "astronaut photo.png").read_bytes() == photo.read_bytes()
    pg.locator("#extract-A").click()
    wait_status(page, r"job extract A: finished")
    pg.locator("#extract-B").click()
    wait_status(page, r"job extract B: finished")
    faces_a = list_faces(project / "faces" / "A")
    n_a, n_b = len(faces_a), len(list_faces(project / "faces" / "B"))
    assert n_a > 10 and n_b > 10
    assert {read_meta(f).source for f in faces_a} == {str(project / "inputs" / n)
                                                     for n in ("A_train.mp4", "astronaut photo.png")}
    pg.wait_for_function(f"() => document.querySelector('#faces-count-A').innerText.includes('{n_a} faces')")
    pg.wait_for_function("() => document.querySelectorAll('#gallery-B img').length > 0")
    # delete a bad face: click it, then delete; the file is gone and the count drops
    pg.locator("#gallery-A button:has(img)").first.click()
    pg.locator("#delete-face-A").click()
    pg.wait_for_function(f"() => document.querySelector('#faces-count-A').innerText.includes('{n_a - 1} faces')")
    assert len(list_faces(project / "faces" / "A")) == n_a - 1
    page.shot("2-extract")

    # Train: tiny preset, batch 4, no step limit; reload the page while it runs; stop it from the page
    tab(page, "Train")
    choose(page, "train-preset", "tiny")
    fill_number(page, "train-batch-size", 4)
    fill_number(page, "train-steps", 0)
    fill_number(page, "train-preview-every", 5)
    pg.locator("#train-start").click()
    wait_status(page, r"job train: running")
    pg.reload()
    wait_status(page, r"job train: running", timeout=30)  # the reopened page shows the job again
    tab(page, "Train")
    pg.wait_for_selector("#train-preview img", timeout=120_000)
    pg.wait_for_selector("#train-loss img", timeout=120_000)
    pg.locator("#train-stop").click()
    wait_status(page, r"job train: stopped")
    pg.wait_for_function("() => /step \\d+/.test(document.querySelector('#train-stats').innerText)")
    time.sleep(TICK_WAIT)  # one more refresh: the final preview and stats
    stats = pg.locator("#train-stats").inner_text()
    step = int(re.search(r"step (\d+)", stats).group(1))  # type: ignore[union-attr]
    from changeling.models.checkpoint import latest_checkpoint, read_state

    latest = latest_checkpoint(project / "model")
    assert latest is not None and read_state(latest)[0].step == step >= 5
    assert "examples/s" in stats and "elapsed" in stats
    shot = page.shot("3-train")
    if os.environ.get("CHANGELING_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "ui-train.png")

    # Convert: preview one frame of the held-out clip, then render it
    tab(page, "Convert")
    assert pg.locator("#convert-source input").first.input_value() == "A_heldout.mp4"  # kept across the reload
    pg.locator("#convert-preview").click()
    pg.wait_for_selector("#convert-preview-image img", timeout=120_000)
    assert list((project / "previews" / "convert").glob("A_heldout_f*_rct.png"))
    pg.locator("#convert-render").click()
    wait_status(page, r"job convert: finished", timeout=180)
    pg.wait_for_selector("#convert-video video", timeout=30_000)
    output = project / "output" / "A_heldout_swap.mp4"
    assert output.is_file()
    page.shot("4-convert")

    # Verify: drop the rendered file (marked), then an input clip (not marked)
    tab(page, "Verify")
    pg.locator("#verify-upload input[type=file]").set_input_files(str(output))
    pg.wait_for_function("() => document.querySelector('#verify-upload').innerText.includes('A_heldout_swap')")
    pg.locator("#verify-run").click()
    pg.wait_for_function("() => document.querySelector('#verify-verdict').innerText.includes('MARKED')")
    verdict = pg.locator("#verify-verdict").inner_text()
    assert verdict.startswith("MARKED") and "watermark" in verdict
    page.shot("5-verify")
    pg.locator("#verify-upload button[aria-label='Clear']").first.click()
    pg.locator("#verify-upload input[type=file]").set_input_files(str(project / "inputs" / "A_train.mp4"))
    pg.wait_for_function("() => document.querySelector('#verify-upload').innerText.includes('A_train')")
    pg.locator("#verify-run").click()
    pg.wait_for_function("() => document.querySelector('#verify-verdict').innerText.includes('NOT MARKED')")
    assert "A_train.mp4" in pg.locator("#verify-report textarea").input_value()

    # every tab was opened and each is there once (a stray child of gr.Tabs makes the page repeat them)
    assert pg.get_by_role("tab").all_inner_texts() == ["Project", "Extract", "Masks", "Train", "Convert", "Live",
                                                         "Verify"]

    # the page fetched nothing from anywhere but this server
    assert page.requests
    outside = [u for u in page.requests if not u.startswith(f"http://127.0.0.1:{server.port}/")]
    assert outside == []


TICK_WAIT = 2.5


def test_a_mask_painted_in_the_editor_is_saved_as_the_faces_correction(server: Server, page: Page) -> None:
    from changeling.occlusion.corrections import correction_path
    from changeling.occlusion.project import outline_mask
    from changeling.train.testfaces import make_faces

    project = server.ws.open("masked", create=True)
    face = make_faces(project.faces_dir("A"), "A", 3, size=64)[1]
    outline = int((outline_mask(read_meta(face), 64) > 0.5).sum())
    pg = page.page
    pg.goto(server.url)
    wait_status(page, r"Project\s+masked")
    tab(page, "Masks")
    pg.wait_for_function("() => document.querySelectorAll('#masks-gallery img').length === 3")
    pg.locator("#masks-gallery button:has(img)").nth(1).click()
    pg.wait_for_function(f"() => document.querySelector('#masks-note').innerText.includes('{face.name}')")
    # the editor has drawn the face once it zooms the 64 px face to fit (over 100%)
    pg.wait_for_function("() => +(/(\\d+)%/.exec(document.querySelector('#masks-editor').innerText) || [0, 0])[1] > 100")
    # one stroke of the red brush (covered) across the face's upper half, then save
    box = pg.locator("#masks-editor canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.4
    pg.mouse.move(x - box["height"] * 0.25, y)
    pg.mouse.down()
    pg.mouse.move(x + box["height"] * 0.25, y, steps=4)  # each move redraws the canvas (slow without a GPU)
    pg.mouse.up()
    # The editor hands its layer over some time after the stroke ends (longer on a slow machine): save until
    # the stored correction carries the stroke, each save waited for by the file changing, within a minute.
    stored = correction_path(project.faces_dir("A"), read_meta(face))
    deadline, visible, last = time.monotonic() + 60, outline, None
    while visible >= outline and time.monotonic() < deadline:
        pg.wait_for_timeout(500)
        pg.locator("#masks-save").click()
        pg.wait_for_function("() => document.querySelector('#masks-note').innerText.includes('hand correction')")
        while time.monotonic() < deadline and (not stored.is_file() or stored.stat().st_mtime_ns == last):
            time.sleep(0.1)
        last = stored.stat().st_mtime_ns
        visible = int((np.asarray(Image.open(stored)) > 127).sum())
    assert 0.5 * outline < visible < outline  # the stroke took a band out of the face's outline
    pg.wait_for_function("() => document.querySelector('#masks-summary').innerText.includes('1 of A')")
    page.shot("1-saved")


def test_server_refuses_files_outside_the_project_and_big_uploads(server: Server, page: Page) -> None:
    # bound to this machine only
    assert listening_addresses(server.port) == {"127.0.0.1"}
    project = server.ws.open("guarded", create=True)
    inside = project.root / "inputs" / "note.png"
    inside.write_bytes(b"\x89PNG\r\n\x1a\n")
    secret = server.home / "secret.txt"
    secret.write_text("not for the page")
    assert raw_get(server.port, f"/gradio_api/file={inside}", server.cookie)[0] == 200  # the guard lets them through
    link = project.root / "inputs" / "link.txt"
    link.symlink_to(secret)  # Gradio alone would serve this (it does not follow links); the guard does not
    refused = [
        f"/gradio_api/file={link}",
        "/gradio_api/file=../../../../../../etc/passwd",
        "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/gradio_api/file=/etc/passwd",
        f"/gradio_api/file={secret}",
        f"/gradio_api/file={project.root}/../secret.txt",
        f"/gradio_api/file/{secret}",
        "/gradio_api/file=http://example.com/x.png",
        "/gradio_api/proxy=http://example.com/x.png",
    ]
    for path in refused:
        code, body = raw_get(server.port, path, server.cookie)
        assert code == 403, (path, code)
        assert body == REFUSED, (path, body)  # refused by the guard, before Gradio (which would fetch URLs)
    # uploads: under the limit accepted, over it refused
    code, body = upload(server.port, "small.bin", b"x" * 1000, server.cookie)
    assert code == 200 and Path(json.loads(body)[0]).is_file()
    code, _ = upload(server.port, "big.bin", b"x" * ((UPLOAD_LIMIT_MB + 1) * 1024 * 1024), server.cookie)
    assert code == 413
    page.page.goto(server.url)
    page.page.wait_for_selector("#tab-project, #project-name")
    page.page.goto(f"{server.base}/gradio_api/file=/etc/passwd")
    assert "root:" not in page.page.content()


def test_mistakes_are_reported_on_the_page(server: Server, page: Page) -> None:
    server.ws.open("empty", create=True)
    pg = page.page
    pg.goto(server.url)
    wait_status(page, r"Project\s+empty")
    tab(page, "Extract")
    pg.locator("#extract-A").click()  # nothing chosen: refused at once, with the reason
    pg.wait_for_selector("text=choose or upload videos or images of A first")
    tab(page, "Train")
    pg.locator("#train-start").click()  # no faces: the job fails, and the page says why
    text = wait_status(page, r"job train: failed \(exit 2\)")
    assert "faces" in text.split("\n", 1)[1], text
    page.shot("1-failed")


def test_auth_requires_login(tmp_path: Path, browser: Any, screenshot_dir: Path) -> None:
    srv = Server(tmp_path, auth=("ada", "analytical engine"))
    p = Page(browser, screenshot_dir, "test_auth_requires_login")
    try:
        # with the launch token's cookie, Gradio's login is still required, for files too
        assert raw_get(srv.port, "/config", srv.cookie)[0] == 401
        inside = srv.ws.open("locked", create=True).root / "changeling.toml"
        assert raw_get(srv.port, f"/gradio_api/file={inside}", srv.cookie)[0] == 401
        pg = p.page
        pg.goto(srv.url)
        pg.wait_for_selector("input[type=password]")
        assert pg.locator("#project-name").count() == 0
        p.shot("1-login")
        def login(user: str, password: str) -> None:
            pg.locator("input[type=text], input:not([type])").first.fill(user)
            pg.locator("input[type=password]").fill(password)
            pg.get_by_role("button", name=re.compile("login", re.I)).click()

        login("ada", "wrong")
        pg.wait_for_selector("text=/incorrect|invalid|wrong/i")
        assert pg.locator("#project-name").count() == 0
        login("ada", "analytical engine")
        pg.wait_for_selector("#project-name")
        p.shot("2-logged-in")
    finally:
        p.shot("last")
        print("screenshots:", *map(str, p.shots), sep="\n  ")
        p.context.close()
        srv.close()


ATTACK_PAGE = """<!doctype html><title>elsewhere</title><script>
const form = new FormData();
form.append("files", new Blob(["planted"]), "%(name)s");
fetch("http://127.0.0.1:%(port)d/gradio_api/upload", {method: "POST", body: form, mode: "no-cors",
                                                     credentials: "include"})
  .finally(() => { document.title = "sent"; });
</script>"""


def _serve_page(html: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Another site: a server on another port that answers every GET with ``html``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, int(httpd.server_address[1])


def test_another_site_cannot_use_the_server(server: Server, page: Page) -> None:
    pg = page.page
    token = server.url.split("token=", 1)[1]
    # DNS rebinding: the same server reached through another name is refused, even with the token
    answer = pg.goto(f"http://{REBOUND}:{server.port}/?token={token}")
    assert answer is not None and answer.status == 421
    assert "DNS rebinding" in pg.content()
    # without the token, the page is refused; the printed address opens it (and leaves no token in the URL)
    assert pg.goto(server.base).status == 401  # type: ignore[union-attr]
    pg.goto(server.url)
    pg.wait_for_selector("#project-name")
    assert "token" not in pg.url
    # a page of another site, opened in the same browser (which holds the session cookie), uploads a file
    name = f"cross-site-{os.getpid()}-{time.monotonic_ns()}.bin"
    statuses: list[int] = []
    pg.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/gradio_api/upload") else None)
    httpd, other_port = _serve_page(ATTACK_PAGE % {"name": name, "port": server.port})
    try:
        pg.goto(f"http://{REBOUND}:{other_port}/")
        pg.wait_for_function("() => document.title === 'sent'")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert statuses and all(s in (401, 403) for s in statuses), statuses
    assert not [p for root in server.ws.upload_roots for p in root.rglob(name)]  # nothing was stored
    page.shot("1-refused")
