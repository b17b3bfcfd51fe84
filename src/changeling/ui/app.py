"""The web UI (``changeling ui``): the whole workflow in a browser, on Gradio.

Tabs: Project (create or open a project folder, sample clips, its state), Extract (inputs for A and B, a job
per side, face galleries where bad faces are deleted; what covers a face in red), Masks (paint hand corrections
of the occlusion mask, fine-tune the occlusion segmenter on them), Train (settings, start / stop / resume, the live
preview grid, a loss curve, examples per second, elapsed time), Convert (a frame preview original | swapped |
mask for the chosen colour mode and mask, and the occlusion mask over the frame; render, play), Live (the browser's
camera swapped frame by frame) and Verify (a file's provenance verdict), one module each (``tab_*.py``); what they
share is in :mod:`changeling.ui.page`. A tab's settings widgets are built from the settings fields it names
(:mod:`changeling.ui.forms`), and its jobs' command lines from the same fields (:mod:`changeling.ui.commands`).

Long jobs (extract, train, convert) are child processes of this server running the same CLI code a user
would type (:mod:`changeling.ui.jobs`): one per project at a time, they survive a page reload or a closed
browser, and a reopened page shows their state again. Short work (sample clips, the convert preview of one
frame, verify) runs in the server process through the Python API.

Security: the server binds 127.0.0.1 unless told otherwise; answers only to its own host names, only
requests from its own page, and only browsers that opened the address with this launch's token
(:mod:`changeling.ui.gate`); can require a login; serves only files inside the open project (and Gradio's
upload folder), and only images and videos inline (:mod:`changeling.ui.paths`); hands the page only files
inside the project, whatever a link in it says; refuses oversized uploads, sends no analytics and makes the
page fetch nothing from the internet (system fonts, no CDN).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from changeling.ui.gate import Gate, Site
from changeling.ui.page import TICK_SECONDS, Page, Tab
from changeling.ui.paths import FileGuard
from changeling.ui.tab_convert import ConvertTab
from changeling.ui.tab_extract import ExtractTab
from changeling.ui.tab_live import LiveTab
from changeling.ui.tab_masks import MasksTab
from changeling.ui.tab_project import ProjectTab
from changeling.ui.tab_train import TrainTab
from changeling.ui.tab_verify import VerifyTab
from changeling.ui.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = "2gb"
CSS = """
.verdict-marked {border-left: 8px solid #1a7f37; padding-left: 14px}
.verdict-unmarked {border-left: 8px solid #cf222e; padding-left: 14px}
.job-status p {margin: 0}
.job-status code {white-space: pre-wrap; word-break: break-word}
#train-preview img, #convert-preview-image img, #convert-occlusion-image img {width: 100%; height: 100%; object-fit: contain}
"""


@dataclass(frozen=True)
class ServeOptions:
    """How the server runs. ``auth`` is (user, password) or ``None``; ``max_upload`` is a size such as
    ``"2gb"`` (Gradio's syntax)."""

    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, str] | None = None
    max_upload: str = DEFAULT_MAX_UPLOAD
    quiet: bool = True


def build_blocks(ws: Workspace) -> Any:
    """The Gradio Blocks of the UI, bound to ``ws``: the job status above the tabs (:mod:`changeling.ui.page`),
    then one module per tab."""
    with gr.Blocks(title="changeling", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        page = Page(ws)
        with gr.Tabs(elem_id="tabs"):
            tabs: list[Tab] = [ProjectTab(page), ExtractTab(page), MasksTab(page), TrainTab(page), ConvertTab(page),
                               LiveTab(page),
                               VerifyTab(page)]
        timer = gr.Timer(TICK_SECONDS)
        for tab in tabs:
            tab.bind()
        page.wire(blocks, timer)
    return blocks


def theme() -> Any:
    """Gradio's default theme with system fonts only, so the page fetches no web fonts."""
    return gr.themes.Default(font=("ui-sans-serif", "system-ui", "sans-serif"),
                             font_mono=("ui-monospace", "monospace"))


def guarded_app(site: Site, roots: Callable[[], Sequence[Path]]) -> Any:
    """Gradio's FastAPI app with :class:`~changeling.ui.gate.Gate` and :class:`~changeling.ui.paths.FileGuard`
    around everything Gradio adds, its CORS handling included, so both see every request first and the last
    word on every response is theirs."""
    from gradio.routes import App, ORJSONResponse

    class GuardedApp(App):  # type: ignore[misc]
        def build_middleware_stack(self) -> Any:
            return Gate(FileGuard(super().build_middleware_stack(), roots=roots), site)

    return GuardedApp(docs_url=None, redoc_url=None, openapi_url=None, default_response_class=ORJSONResponse)


def serve(ws: Workspace, options: ServeOptions = ServeOptions()) -> tuple[Any, str]:
    """Build the UI for ``ws`` and start the server in a thread; returns (blocks, the address to open, with
    this launch's token). ``blocks.block_thread()`` waits until Ctrl+C; ``blocks.close()`` stops the server."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no usage statistics
    from gradio.utils import get_upload_folder

    ws.upload_roots = [Path(get_upload_folder()).resolve()]
    site = Site.for_bind(options.host, options.port)
    blocks = build_blocks(ws)
    blocks.queue(default_concurrency_limit=4)
    allowed = [str(ws.current.root)] if ws.current is not None else []
    _, url, _ = blocks.launch(
        server_name=options.host, server_port=options.port, auth=[options.auth] if options.auth else None,
        max_file_size=options.max_upload, allowed_paths=allowed, blocked_paths=None, ssr_mode=False, share=False,
        quiet=options.quiet, show_error=False, prevent_thread_lock=True, inbrowser=False, footer_links=[],
        run_history=False, enable_monitoring=False, mcp_server=False, pwa=False, theme=theme(), css=CSS,
        num_workers=0,  # Gradio's static-file workers would serve files past the guards (GRADIO_NUM_WORKERS)
        _app=guarded_app(site, ws.roots),
        auth_message="changeling: log in with the user and password given to --auth")

    def follow_project() -> None:
        # Gradio's own check (for files a handler returns) must follow the open project too
        blocks.allowed_paths[:] = [str(p) for p in ws.roots()]

    ws.on_open = follow_project
    follow_project()
    return blocks, site.url(str(url))


__all__ = ["DEFAULT_MAX_UPLOAD", "ServeOptions", "build_blocks", "guarded_app", "serve", "theme"]
