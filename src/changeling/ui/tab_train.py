"""The Train tab: settings, start / stop / resume, the live preview grid, a loss curve, examples per second and
the elapsed time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from changeling.config import TrainSettings
from changeling.config.core import settings_field
from changeling.ui import state
from changeling.ui.commands import train_args
from changeling.ui.forms import Form
from changeling.ui.page import Page, Refresh, Snapshot, dir_sig, user_errors

FIELDS = (  # the TrainSettings fields this tab shows, in order
    "preset",
    "batch_size",
    "lr",
    "preview_every",
    "save_every",
    "device",
)


@dataclass(frozen=True)
class TrainRun:
    """What the tab asks of one run besides the settings; it becomes ``--max-steps`` (which counts all steps)
    and ``--max-time``."""

    steps: int = settings_field(0, min=0, label="steps this run", help="0: no limit")
    minutes: float = settings_field(0.0, min=0.0, label="minutes this run", help="0: no limit")


class TrainTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.form = Form("train", TrainSettings, FIELDS)
        self.run_form = Form("train", TrainRun, ("steps", "minutes"))
        with gr.Tab("Train", id="train", elem_id="tab-train"):
            with gr.Row():
                self.form.build()
            with gr.Row():
                self.run_form.build()
                self.start = gr.Button("Start / resume training", variant="primary", elem_id="train-start")
                self.stop = gr.Button("Stop (saves the model)", variant="stop", elem_id="train-stop")
            self.stats_md = gr.Markdown("", elem_id="train-stats")
            with gr.Row():
                with gr.Column(scale=3):
                    gr.Markdown("**Preview** (columns: A, A→A, A→B, B, B→B, B→A; updated every *preview every* "
                                "steps and when training stops)")
                    self.preview_img = gr.Image(show_label=False, type="filepath", interactive=False, format="png",
                                                elem_id="train-preview", height=460, buttons=["download", "fullscreen"])
                with gr.Column(scale=2):
                    gr.Markdown("**Loss** (A and B, from the training log)")
                    self.loss_img = gr.Image(show_label=False, type="numpy", interactive=False, format="png",
                                             elem_id="train-loss", buttons=["download"])
        page.restorable([*self.form.components, *self.run_form.components], self.initial)
        page.live([self.preview_img, self.loss_img, self.stats_md], self.refresh)

    def initial(self, project: Any) -> list[Any]:
        saved = self.page.ws.remembered(project)
        return [*self.form.initial(self.page.settings_of(project).train, saved),
                *self.run_form.initial(TrainRun(), saved)]

    def refresh(self, r: Refresh, snap: Snapshot) -> None:
        project = snap.project
        if project is None:
            return
        grid = project.root.joinpath(*state.PREVIEW_GRID)
        r.put(self.preview_img, "grid", dir_sig(grid), lambda: self.page.shown_file(project, grid))
        records = self.page.ws.metrics(project).read()
        last = records[-1] if records else {}
        r.put(self.loss_img, "loss", (len(records), last.get("step")), lambda: state.loss_curve(records))
        checkpoints = dir_sig(project.model_dir / "checkpoints")
        model = state.model_state(project) if r.new.get("model_sig") != checkpoints else None
        if model is not None or "model" not in r.new:
            r.new["model"] = model
            r.new["model_sig"] = checkpoints
        training = snap.job.running and snap.job.kind == "train"
        stats = state.train_stats(records, r.new.get("model"), snap.job.started if training else None, snap.now)
        r.put(self.stats_md, "stats", stats, stats.markdown)

    def bind(self) -> None:
        page, ws = self.page, self.page.ws
        n = len(self.form.components)

        @user_errors
        def start_training(*values: Any) -> str:
            project = ws.project()
            settings = self.form.read(page.settings_of(project).train, values[:n])
            run = self.run_form.read(TrainRun(), values[n:])
            model = state.model_state(project)
            args = train_args(project, settings, FIELDS, model.step if model else 0, run.steps, run.minutes)
            ws.remember(project, **self.form.remember(settings), **self.run_form.remember(run))
            ws.runner(project).start("train", args)
            return page.header(project)

        self.start.click(start_training, [*self.form.components, *self.run_form.components], [page.status_md])
        self.stop.click(page.stop_job, [], [page.status_md])
