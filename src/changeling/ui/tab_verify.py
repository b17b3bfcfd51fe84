"""The Verify tab: a file's provenance verdict (a dropped file, or one of the project's outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from changeling.errors import UserError
from changeling.ui import state
from changeling.ui.page import Page, Refresh, Snapshot, dir_sig, user_errors
from changeling.ui.paths import is_within


class VerifyTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        with gr.Tab("Verify", id="verify", elem_id="tab-verify"):
            gr.Markdown("Drop a video or image to check it for changeling's provenance marks (invisible watermark, "
                        "synthetic-media metadata, C2PA manifest), or pick one of the project's outputs.")
            with gr.Row():
                self.file = gr.File(label="file to verify", file_count="single", elem_id="verify-upload")
                self.pick = gr.Dropdown(label="or a project output", choices=[], elem_id="verify-pick")
            self.button = gr.Button("Verify", variant="primary", elem_id="verify-run")
            self.verdict = gr.Markdown("", elem_id="verify-verdict")
            self.report = gr.Textbox(label="report", lines=6, interactive=False, elem_id="verify-report")
        page.live([self.pick], self.refresh)

    def refresh(self, r: Refresh, snap: Snapshot) -> None:
        project = snap.project
        if project is None:
            return
        outputs = [p.name for p in state.media_files(project.output_dir)]
        r.put(self.pick, "outputs", (dir_sig(project.output_dir),), lambda: gr.Dropdown(choices=outputs))

    def bind(self) -> None:
        ws = self.page.ws

        @user_errors
        def verify(file: str | None, picked: str | None) -> list[Any]:
            from changeling.provenance import verify_file

            if file:
                path = Path(file)
                if not any(is_within(path, r) for r in ws.upload_roots):
                    raise UserError("is not an upload of this page", path)
                shown = path.name
            elif picked:
                project = ws.project()
                path = ws.inside(picked, project.output_dir, "output")
                shown = str(path.relative_to(project.root))
            else:
                raise UserError("drop a file or pick a project output first")
            report = verify_file(path)
            marked = report.verdict == "marked"
            verdict = (f"## {'MARKED' if marked else 'NOT MARKED'}: `{shown}`\n"
                       + ("changeling's provenance marks were found: " + ", ".join(report.evidence) + "."
                          if marked else "None of changeling's provenance marks were found in this file."))
            summary = report.summary().replace(str(path), shown, 1)
            return [gr.Markdown(verdict, elem_classes=["verdict-marked" if marked else "verdict-unmarked"]),
                    summary]

        self.button.click(verify, [self.file, self.pick], [self.verdict, self.report])
