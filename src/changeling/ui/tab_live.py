"""The Live tab: the browser's camera streamed to the server, swapped with the open project's model frame by frame
(live mode's steps, :class:`changeling.live.pipeline.LiveSession`), and the watermarked frames streamed back, with
the output rate and the server's latency per frame.

Gradio's own streaming carries the frames (``gr.Image(sources=["webcam"], streaming=True)`` and ``.stream``):
they travel through the same routes as every other request, so the Host check, the launch token, same-origin
and ``--auth`` apply unchanged, and nothing is fetched from outside (docs/decisions.md, "Live mode"). The page grabs a camera frame every
``STREAM_EVERY_S`` only while no frame is on its way (Gradio's webcam does not send while its event is pending),
so frames are skipped, never queued.
The swapped frame goes back as PNG (lossless), so the watermark reaches the page intact.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from changeling.errors import UserError
from changeling.ui.page import Page
from changeling.video.reader import FrameSource

STREAM_EVERY_S = 1 / 30  # how often the page sends a camera frame (the browser's own rate caps it)
WINDOW = 60  # frames the shown rate and latency are taken over


@dataclass
class _Stream:
    """One page's live session: the project it swaps with, and live mode's session (its tracker, landmark smoothing and face blending)."""

    root: Path
    session: Any  # changeling.live.pipeline.LiveSession


class LiveTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        self._lock = threading.Lock()  # one model load at a time
        with gr.Tab("Live", id="live", elem_id="tab-live"):
            gr.Markdown("Swap your camera in real time with this project's model (convert's settings). Start the "
                        "camera on the left; the swapped stream appears on the right, watermarked as synthetic "
                        "like every output. Frames that arrive while one is being swapped are dropped, not "
                        "queued. For a virtual camera (Zoom, OBS) use `changeling live --virtual-camera`.")
            with gr.Row():
                self.camera = gr.Image(label="camera", sources=["webcam"], streaming=True, type="numpy",
                                       webcam_options=gr.WebcamOptions(mirror=False), elem_id="live-camera")
                self.output = gr.Image(label="swapped (watermarked)", format="png", interactive=False,
                                       elem_id="live-output", buttons=["fullscreen"])
            self.stats = gr.Markdown("", elem_id="live-stats")
            self.state = gr.State(None)

    def _stream(self, current: _Stream | None, shape: tuple[int, ...]) -> _Stream:
        """This page's session for the open project, built on its first frame (or when another project opens)."""
        from changeling.live.pipeline import LiveSession
        from changeling.live.project import live_converter

        project = self.page.ws.project()
        if current is not None and current.root == project.root:
            return current
        with self._lock:
            conv, _ = live_converter(project, project.settings().convert)
        h, w = int(shape[0]), int(shape[1])
        source = FrameSource(path=Path("browser camera"), kind="stream", width=w, height=h, fps=Fraction(30),
                             time_base=Fraction(1, 90_000), frame_count=0)
        return _Stream(project.root, LiveSession(conv, source))

    def bind(self) -> None:

        def swap(frame: np.ndarray | None, current: _Stream | None) -> list[Any]:
            if frame is None:
                return [gr.skip(), gr.skip(), current]
            try:
                stream = self._stream(current, frame.shape)
            except UserError as exc:  # no project, no model: said once under the stream, not a pop-up a frame
                return [gr.skip(), f"**Cannot swap:** {exc}", current]
            rendered = stream.session.step(frame[..., :3])
            frames, recent = stream.session.meter.recent(WINDOW)
            text = (f"**{frames}** frames swapped · **{recent.fps:.1f}** frames/s · server latency p50 "
                    f"**{recent.latency_ms(0.5):.0f} ms**, p95 **{recent.latency_ms(0.95):.0f} ms**")
            return [rendered.image, text, stream]

        self.camera.stream(swap, [self.camera, self.state], [self.output, self.stats, self.state],
                           stream_every=STREAM_EVERY_S, concurrency_limit=1,
                           show_progress="hidden")
