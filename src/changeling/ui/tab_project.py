"""The Project tab: create or open a project folder, fetch the sample clips, see the project's state."""

from __future__ import annotations

from typing import Any

import gradio as gr

from changeling.project import Project
from changeling.ui import state
from changeling.ui.page import Page, Refresh, Snapshot, dir_sig, user_errors


class ProjectTab:
    def __init__(self, page: Page) -> None:
        ws = page.ws
        self.page = page
        with gr.Tab("Project", id="project", elem_id="tab-project"):
            gr.Markdown(f"Project folders live in `{ws.home}`. Type a name to create one, or pick one.")
            with gr.Row():
                self.name_box = gr.Textbox(label="project folder", placeholder="myswap", elem_id="project-name",
                                           scale=3)
                self.create_btn = gr.Button("Create", variant="primary", elem_id="create-project", scale=1)
                self.existing = gr.Dropdown(label="or open an existing project", choices=[], elem_id="open-project",
                                            allow_custom_value=False, scale=3)
            with gr.Row():
                self.samples_btn = gr.Button("Use sample clips", elem_id="sample-clips")
                gr.Markdown("Two animated public-domain portraits (A: astronaut, B: Grace Hopper) to try the whole "
                            "workflow with.")
            self.summary_md = gr.Markdown("No project is open.", elem_id="project-summary")
        page.live([self.existing, self.summary_md], self.refresh)
        page.restorable([self.name_box], lambda project: [ws.name_of(project)])

    def refresh(self, r: Refresh, snap: Snapshot) -> None:
        ws, project = self.page.ws, snap.project
        r.put(self.existing, "projects", tuple(state.find_projects(ws.home)),
              lambda: gr.Dropdown(choices=state.find_projects(ws.home),
                                  value=ws.name_of(project) if project is not None else None))
        if project is None:
            return
        sig = (dir_sig(project.faces_dir("A")), dir_sig(project.faces_dir("B")), dir_sig(project.output_dir),
               dir_sig(state.inputs_dir(project)), dir_sig(project.model_dir / "checkpoints"),
               (snap.job.pid, snap.job.returncode))
        r.put(self.summary_md, "summary", sig, lambda: state.summarize(project).markdown())

    def bind(self) -> None:
        page, ws = self.page, self.page.ws
        open_outputs = [*page.restore_outputs(), page.seen]

        def opened(project: Project) -> list[Any]:
            return [*page.restore(project), {}]  # {}: the next refresh sends everything again

        @user_errors
        def create(name: str) -> list[Any]:
            project = ws.open(name, create=True)
            gr.Info(f"project {project.root} is open")
            return opened(project)

        @user_errors
        def open_existing(name: str | None) -> list[Any]:
            current = ws.current
            if not name or (current is not None and ws.name_of(current) == name):
                return [gr.skip()] * len(open_outputs)
            return opened(ws.open(name, create=False))

        self.create_btn.click(create, [self.name_box], open_outputs)
        self.name_box.submit(create, [self.name_box], open_outputs)
        self.existing.input(open_existing, [self.existing], open_outputs)

        @user_errors
        def use_samples() -> list[Any]:
            clips = ws.sample_clips()
            project = ws.project()
            ws.remember(project, **{"inputs.A": [clips["A"].name], "inputs.B": [clips["B"].name],
                                    "convert.source": clips["test"].name})
            gr.Info("sample clips are in the project's inputs folder")
            return [*page.restore(project, selections=True), {}]

        self.samples_btn.click(use_samples, [], [*page.restore_outputs(selections=True), page.seen])
