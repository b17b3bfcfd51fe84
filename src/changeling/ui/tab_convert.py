"""The Convert tab: a frame preview (original | swapped | mask) for the chosen colour mode and mask, with the
occlusion mask over the frame when the occlusion segmenter ran (``convert --preview``'s marked images), a render
job, and the rendered video."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from changeling.config import ConvertSettings
from changeling.errors import UserError
from changeling.project import Project
from changeling.ui import paths, state
from changeling.ui.commands import convert_args
from changeling.ui.forms import Form
from changeling.ui.page import Page, Refresh, Snapshot, dir_sig, user_errors

FIELDS = (  # the ConvertSettings fields this tab shows, in order
    "color",
    "mask",
    "erode",
    "blur",
    "smooth",
    "face_smooth",
    "direction",
)


def preview_shown(written: Sequence[Path], color: str) -> tuple[Path, Path | None]:
    """Of the images ``convert --preview`` wrote (one per colour mode, then the occlusion overlay when the
    segmenter ran): the one of ``color`` (else the first) and the occlusion overlay, if written."""
    chosen = [p for p in written if p.stem.endswith(f"_{color}")]
    occlusion = [p for p in written if p.stem.endswith("_occlusion")]
    return (chosen or list(written))[0], (occlusion[0] if occlusion else None)


def job_output(argv: Sequence[str]) -> Path | None:
    """The ``-o`` path of a convert job's command line."""
    for flag in ("-o", "--output"):
        if flag in argv:
            i = list(argv).index(flag)
            if i + 1 < len(argv):
                return Path(argv[i + 1])
    return None


class ConvertTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.form = Form("convert", ConvertSettings, FIELDS)
        with gr.Tab("Convert", id="convert", elem_id="tab-convert"):
            with gr.Row():
                self.source = gr.Dropdown(label="video to convert (from the project's inputs)", choices=[],
                                          elem_id="convert-source", scale=3)
                self.upload = gr.File(label="or upload one", file_count="single", elem_id="convert-upload", scale=2)
            self.frame = gr.Slider(label="frame", minimum=0, maximum=1, step=1, value=0, elem_id="convert-frame")
            with gr.Row():
                self.form.build()
            with gr.Row():
                self.preview_btn = gr.Button("Preview this frame", elem_id="convert-preview")
                self.render_btn = gr.Button("Render video", variant="primary", elem_id="convert-render")
            self.preview_img = gr.Image(label="original | swapped | mask", type="filepath", interactive=False,
                                        format="png", elem_id="convert-preview-image", height=320,
                                        buttons=["download", "fullscreen"])
            self.occlusion_img = gr.Image(label="original | occlusion mask (red: covered, kept; green: swapped) | "
                                          "mask", type="filepath", interactive=False, format="png", visible=False,
                                          elem_id="convert-occlusion-image", height=320,
                                          buttons=["download", "fullscreen"])
            self.video = gr.Video(label="rendered video", interactive=False, elem_id="convert-video", height=400)
            self.out_md = gr.Markdown("", elem_id="convert-output")
        page.restorable(self.form.components, lambda p: self.form.initial(page.settings_of(p).convert,
                                                                           page.ws.remembered(p)))
        page.restorable([self.source], self.selection, selection=True)
        page.live([self.source, self.video, self.out_md], self.refresh)

    def selection(self, project: Project) -> list[Any]:
        videos = self.page.input_names(project, images=False)
        source = self.page.ws.remembered(project).get("convert.source")
        return [gr.Dropdown(choices=videos, value=source if source in videos else None)]

    def refresh(self, r: Refresh, snap: Snapshot) -> None:
        project, job = snap.project, snap.job
        if project is None:
            return
        videos = self.page.input_names(project, images=False)
        r.put(self.source, "sources", (dir_sig(state.inputs_dir(project)),), lambda: gr.Dropdown(choices=videos))
        if job.kind == "convert" and not job.running and job.returncode == 0:
            # the job file may be planted: its output path is served only from inside the project
            found = job_output(job.argv)
            target = paths.servable(project.root, found) if found is not None else None
            if target is not None:
                r.put(self.video, "video", (str(target), dir_sig(target)), lambda: str(target))
                r.put(self.out_md, "video_md", str(target),
                      lambda: f"Rendered `{target.relative_to(project.root)}`; check it on the Verify tab.")

    def settings(self, project: Project, name: str | None, values: Sequence[Any]) -> tuple[Path, ConvertSettings]:
        """The chosen video and the form's settings (remembered for the project)."""
        if not name:
            raise UserError("choose a video to convert first")
        source = self.page.ws.inside(name, state.inputs_dir(project), "video")
        settings = self.form.read(self.page.settings_of(project).convert, values)
        self.page.ws.remember(project, **{"convert.source": name}, **self.form.remember(settings))
        if state.model_state(project) is None:
            raise UserError("there is no model yet: train one on the Train tab first")
        return source, settings

    def bind(self) -> None:
        page, ws = self.page, self.page.ws

        @user_errors
        def pick_source(name: str | None) -> Any:
            if not name:
                return gr.skip()
            path = ws.inside(name, state.inputs_dir(ws.project()), "video")
            n = state.frame_count(path)
            return gr.Slider(minimum=0, maximum=max(1, n - 1), value=min(n - 1, max(0, n // 2)), step=1)

        self.source.change(pick_source, [self.source], [self.frame])

        @user_errors
        def upload_source(file: str | None) -> list[Any]:
            if not file:
                return [gr.skip(), gr.skip()]
            added = ws.add_inputs([file])
            return [gr.Dropdown(choices=page.input_names(ws.current, images=False), value=added[0].name), None]

        self.upload.upload(upload_source, [self.upload], [self.source, self.upload])

        @user_errors
        def preview_frame(name: str | None, frame: Any, *values: Any) -> list[Any]:
            from changeling.convert import preview

            project = ws.project()
            source, settings = self.settings(project, name, values)
            written = preview(project, source, int(frame or 0), settings, out_dir=project.previews_dir / "convert")
            chosen, occlusion = preview_shown(written, settings.color)
            shown = str(ws.inside(occlusion, project.root, "preview")) if occlusion is not None else None
            return [str(ws.inside(chosen, project.root, "preview")), gr.Image(value=shown, visible=shown is not None)]

        self.preview_btn.click(preview_frame, [self.source, self.frame, *self.form.components],
                               [self.preview_img, self.occlusion_img])

        @user_errors
        def render(name: str | None, *values: Any) -> list[Any]:
            from changeling.convert import default_output

            project = ws.project()
            source, settings = self.settings(project, name, values)
            output = default_output(project, source, "video")
            ws.runner(project).start("convert", convert_args(project, source, output, settings, FIELDS))
            return [page.header(project), f"Rendering `{output.relative_to(project.root)}`…"]

        self.render_btn.click(render, [self.source, *self.form.components], [page.status_md, self.out_md])
