"""The web UI (``changeling ui``): the whole workflow in a browser, on Gradio.

Tabs: Project (create or open a project folder, sample clips, its state), Extract (inputs for A and B, a job
per side, face galleries where bad faces are deleted), Train (settings, start / stop / resume, the live
preview grid, a loss curve, examples per second, elapsed time), Convert (a frame preview original | swapped |
mask for the chosen colour mode and mask, render, play) and Verify (a file's provenance verdict).

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

import dataclasses
import functools
import logging
import os
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import gradio as gr

from changeling.config import ConvertSettings, ExtractSettings, TrainSettings
from changeling.errors import UserError
from changeling.project import Project
from changeling.ui import paths, state
from changeling.ui.gate import Gate, Site
from changeling.ui.paths import FileGuard
from changeling.ui.workspace import SIDES, Workspace

log = logging.getLogger(__name__)

TICK_SECONDS = 2.0
FACES_PER_PAGE = 48
DEFAULT_MAX_UPLOAD = "2gb"
CSS = """
.verdict-marked {border-left: 8px solid #1a7f37; padding-left: 14px}
.verdict-unmarked {border-left: 8px solid #cf222e; padding-left: 14px}
.job-status p {margin: 0}
.job-status code {white-space: pre-wrap; word-break: break-word}
#train-preview img, #convert-preview-image img {width: 100%; height: 100%; object-fit: contain}
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


def _choices(cls: type, name: str) -> list[str]:
    tp = typing.get_type_hints(cls)[name]
    if get_origin(tp) is not Literal:
        raise TypeError(f"{cls.__name__}.{name} is not a Literal")
    return [str(a) for a in get_args(tp)]


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show a user mistake (:class:`UserError`) as an error message on the page instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    return wrapper


def _fmt_num(v: float) -> str:
    return format(v, "g")


# ---- job arguments: the same commands a user would type ------------------------------------------------------
def extract_args(project: Project, side: str, inputs: Sequence[Path], size: int, face_type: str,
                 detector: str, every_nth: int) -> list[str]:
    if side not in SIDES:
        raise UserError(f"side must be A or B, got {side!r}")
    if not inputs:
        raise UserError(f"choose or upload videos or images of {side} first")
    return ["extract", "-p", str(project.root), "--side", side, *map(str, inputs), "--size", str(int(size)),
            "--face-type", face_type, "--detector", detector, "--every-nth", str(int(every_nth))]


def train_args(project: Project, settings: TrainSettings, current_step: int, steps: int, minutes: float) -> list[str]:
    """``changeling train`` for this run: ``steps`` more steps and/or ``minutes`` of training (0: no limit)."""
    if steps < 0 or minutes < 0:
        raise UserError("steps and minutes must not be negative")
    args = ["train", "-p", str(project.root), "--preset", settings.preset,
            "--batch-size", str(settings.batch_size), "--lr", _fmt_num(settings.lr),
            "--preview-every", str(settings.preview_every), "--save-every", str(settings.save_every),
            "--device", settings.device]
    # the trainer's --max-steps counts all steps; 0 in the form means "no limit this run"
    args += ["--max-steps", str(current_step + int(steps)) if steps else "0"]
    args += ["--max-time", f"{_fmt_num(minutes * 60)}s" if minutes else "0"]
    return args


def convert_args(project: Project, source: Path, output: Path, settings: ConvertSettings) -> list[str]:
    return ["convert", "-p", str(project.root), str(source), "-o", str(output), "--color", settings.color,
            "--mask", settings.mask, "--erode", str(settings.erode), "--blur", str(settings.blur),
            "--smooth", _fmt_num(settings.smooth), "--direction", settings.direction]


# ---- the page -----------------------------------------------------------------------------------------------
def build_blocks(ws: Workspace) -> Any:
    """The Gradio Blocks of the UI, bound to ``ws``."""
    ex0, tr0, cv0 = ExtractSettings(), TrainSettings(), ConvertSettings()

    def settings_of(project: Project | None) -> Any:
        from changeling.config import Settings

        if project is None:
            return Settings()
        try:
            return project.settings()
        except UserError as exc:  # the jobs report it too, with the file and the key
            log.warning("%s; the forms show the defaults", exc)
            return Settings()

    with gr.Blocks(title="changeling", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        seen = gr.State({})  # per page: what the live refresh last sent (so unchanged parts are skipped)
        faces_shown = {s: gr.State([]) for s in SIDES}  # per page: the face files in each gallery, in order
        face_selected = {s: gr.State("") for s in SIDES}
        gr.Markdown("# changeling\nFace swap from two people's footage; every output is marked as synthetic.")
        status_md = gr.Markdown("", elem_classes=["job-status"], elem_id="job-status")
        with gr.Accordion("Job output", open=False):
            log_box = gr.Textbox(label="last lines of the running or last job", lines=10, max_lines=10,
                                 interactive=False, elem_id="job-log")
            stop_any = gr.Button("Stop the job", variant="stop", size="sm")

        with gr.Tabs(elem_id="tabs") as tabs:
            # ---- Project ----
            with gr.Tab("Project", id="project", elem_id="tab-project"):
                gr.Markdown(f"Project folders live in `{ws.home}`. Type a name to create one, or pick one.")
                with gr.Row():
                    name_box = gr.Textbox(label="project folder", placeholder="myswap", elem_id="project-name",
                                          scale=3)
                    create_btn = gr.Button("Create", variant="primary", elem_id="create-project", scale=1)
                    existing = gr.Dropdown(label="or open an existing project", choices=[], elem_id="open-project",
                                           allow_custom_value=False, scale=3)
                with gr.Row():
                    samples_btn = gr.Button("Use sample clips", elem_id="sample-clips")
                    gr.Markdown("Two animated public-domain portraits (A: astronaut, B: Grace Hopper) to try "
                                "the whole workflow with.")
                summary_md = gr.Markdown("No project is open.", elem_id="project-summary")

            # ---- Extract ----
            with gr.Tab("Extract", id="extract", elem_id="tab-extract"):
                gr.Markdown("Upload videos or images of each person (they are copied into the project's "
                            "`inputs/` folder), choose them, and extract. Click a bad face, then delete it: "
                            "it drops out of training.")
                with gr.Row():
                    ex_size = gr.Number(label="face size (px)", value=ex0.size, precision=0, minimum=32,
                                        maximum=1024, elem_id="extract-size")
                    ex_type = gr.Dropdown(label="face type", choices=_choices(ExtractSettings, "face_type"),
                                          value=ex0.face_type)
                    ex_det = gr.Dropdown(label="detector", choices=_choices(ExtractSettings, "detector"),
                                         value=ex0.detector)
                    ex_nth = gr.Number(label="every Nth frame", value=ex0.every_nth, precision=0, minimum=1)
                ex_inputs: dict[str, Any] = {}
                ex_upload: dict[str, Any] = {}
                ex_btn: dict[str, Any] = {}
                gallery: dict[str, Any] = {}
                del_btn: dict[str, Any] = {}
                count_md: dict[str, Any] = {}
                page: dict[str, Any] = {}
                with gr.Row():
                    for side in SIDES:
                        with gr.Column():
                            gr.Markdown(f"### Person {side}")
                            ex_upload[side] = gr.File(label=f"upload videos or images of {side}",
                                                      file_count="multiple", elem_id=f"upload-{side}")
                            ex_inputs[side] = gr.Dropdown(label=f"inputs of {side}", multiselect=True, choices=[],
                                                          elem_id=f"inputs-{side}")
                            ex_btn[side] = gr.Button(f"Extract {side}", variant="primary",
                                                     elem_id=f"extract-{side}")
                            count_md[side] = gr.Markdown("", elem_id=f"faces-count-{side}")
                            gallery[side] = gr.Gallery(label=f"faces of {side}", columns=5, height=380,
                                                       allow_preview=False, format="png", elem_id=f"gallery-{side}",
                                                       interactive=False)
                            with gr.Row():
                                page[side] = gr.Number(label="page", value=1, precision=0, minimum=1, scale=1)
                                del_btn[side] = gr.Button("Delete selected face", variant="stop", scale=2,
                                                          elem_id=f"delete-face-{side}")

            # ---- Train ----
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                with gr.Row():
                    tr_preset = gr.Dropdown(label="preset", choices=_choices(TrainSettings, "preset"),
                                            value=tr0.preset, elem_id="train-preset")
                    tr_batch = gr.Number(label="batch size (0: fit to memory)", value=tr0.batch_size, precision=0,
                                         minimum=0, elem_id="train-batch")
                    tr_steps = gr.Number(label="steps this run (0: no limit)", value=0, precision=0, minimum=0,
                                         elem_id="train-steps")
                    tr_minutes = gr.Number(label="minutes this run (0: no limit)", value=0, minimum=0,
                                           elem_id="train-minutes")
                with gr.Row():
                    tr_lr = gr.Number(label="learning rate", value=tr0.lr, minimum=0)
                    tr_prev = gr.Number(label="preview every (steps)", value=tr0.preview_every, precision=0,
                                        minimum=0, elem_id="train-preview-every")
                    tr_save = gr.Number(label="save every (steps)", value=tr0.save_every, precision=0, minimum=1)
                    tr_dev = gr.Dropdown(label="device", choices=_choices(TrainSettings, "device"), value=tr0.device)
                with gr.Row():
                    tr_start = gr.Button("Start / resume training", variant="primary", elem_id="train-start")
                    tr_stop = gr.Button("Stop (saves the model)", variant="stop", elem_id="train-stop")
                stats_md = gr.Markdown("", elem_id="train-stats")
                with gr.Row():
                    with gr.Column(scale=3):
                        gr.Markdown("**Preview** (columns: A, A→A, A→B, B, B→B, B→A; updated every *preview "
                                    "every* steps and when training stops)")
                        preview_img = gr.Image(show_label=False, type="filepath", interactive=False, format="png",
                                               elem_id="train-preview", height=460,
                                               buttons=["download", "fullscreen"])
                    with gr.Column(scale=2):
                        gr.Markdown("**Loss** (A and B, from the training log)")
                        loss_img = gr.Image(show_label=False, type="numpy", interactive=False, format="png",
                                            elem_id="train-loss", buttons=["download"])

            # ---- Convert ----
            with gr.Tab("Convert", id="convert", elem_id="tab-convert"):
                with gr.Row():
                    cv_source = gr.Dropdown(label="video to convert (from the project's inputs)", choices=[],
                                            elem_id="convert-source", scale=3)
                    cv_upload = gr.File(label="or upload one", file_count="single", elem_id="convert-upload",
                                        scale=2)
                cv_frame = gr.Slider(label="frame", minimum=0, maximum=1, step=1, value=0, elem_id="convert-frame")
                with gr.Row():
                    cv_color = gr.Dropdown(label="colour matching", choices=_choices(ConvertSettings, "color"),
                                           value=cv0.color, elem_id="convert-color")
                    cv_mask = gr.Dropdown(label="mask", choices=_choices(ConvertSettings, "mask"), value=cv0.mask,
                                          elem_id="convert-mask")
                    cv_erode = gr.Number(label="mask erode (px; <0 grows)", value=cv0.erode, precision=0,
                                         minimum=-64, maximum=64)
                    cv_blur = gr.Number(label="mask blur (px)", value=cv0.blur, precision=0, minimum=0, maximum=128)
                    cv_smooth = gr.Slider(label="temporal smoothing", minimum=0, maximum=1, step=0.05,
                                          value=cv0.smooth)
                    cv_dir = gr.Dropdown(label="direction", choices=_choices(ConvertSettings, "direction"),
                                         value=cv0.direction)
                with gr.Row():
                    cv_prev_btn = gr.Button("Preview this frame", elem_id="convert-preview")
                    cv_render_btn = gr.Button("Render video", variant="primary", elem_id="convert-render")
                cv_prev_img = gr.Image(label="original | swapped | mask", type="filepath", interactive=False,
                                       format="png", elem_id="convert-preview-image", height=320,
                                       buttons=["download", "fullscreen"])
                cv_video = gr.Video(label="rendered video", interactive=False, elem_id="convert-video", height=400)
                cv_out_md = gr.Markdown("", elem_id="convert-output")

            # ---- Verify ----
            with gr.Tab("Verify", id="verify", elem_id="tab-verify"):
                gr.Markdown("Drop a video or image to check it for changeling's provenance marks (invisible "
                            "watermark, synthetic-media metadata, C2PA manifest), or pick one of the project's "
                            "outputs.")
                with gr.Row():
                    vf_file = gr.File(label="file to verify", file_count="single", elem_id="verify-upload")
                    vf_pick = gr.Dropdown(label="or a project output", choices=[], elem_id="verify-pick")
                vf_btn = gr.Button("Verify", variant="primary", elem_id="verify-run")
                vf_verdict = gr.Markdown("", elem_id="verify-verdict")
                vf_report = gr.Textbox(label="report", lines=6, interactive=False, elem_id="verify-report")

        timer = gr.Timer(TICK_SECONDS)

        # ---- helpers bound to this page ----
        def face_page(project: Project | None, side: str, page_no: Any) -> tuple[list[tuple[str, str]], list[str],
                                                                                  str]:
            from changeling.faces.facefile import list_faces

            if project is None:
                return [], [], ""
            faces = list_faces(project.faces_dir(side))
            n_pages = max(1, -(-len(faces) // FACES_PER_PAGE))
            p = min(max(1, int(page_no or 1)), n_pages)
            # a face file that is a link out of the project is left out (the page gets resolved paths)
            start = (p - 1) * FACES_PER_PAGE
            page_faces = [(f, paths.servable(project.root, f)) for f in faces[start:start + FACES_PER_PAGE]]
            shown = [(f, real) for f, real in page_faces if real is not None]
            return ([(str(real), f.stem) for f, real in shown], [str(f) for f, _ in shown],
                    f"**{len(faces)}** faces of {side} (page {p} of {n_pages})")

        def dir_sig(p: Path) -> int:
            try:
                return p.stat().st_mtime_ns
            except OSError:
                return 0

        def input_names(project: Project | None, *, images: bool = True) -> list[str]:
            if project is None:
                return []
            return [p.name for p in state.media_files(state.inputs_dir(project), images=images)]

        def output_names(project: Project | None) -> list[str]:
            return [p.name for p in state.media_files(project.output_dir)] if project is not None else []

        def shown_file(project: Project, path: Path) -> str | None:
            """``path`` as the page may get it: resolved, if it is a file inside the project."""
            real = paths.servable(project.root, path)
            return str(real) if real is not None else None

        def header(project: Project, now: float | None = None) -> str:
            """The status line above the tabs: the project, its job, and the job's last output line while it
            runs (progress) or when it failed (the reason)."""
            runner = ws.runner(project)
            job = runner.poll()
            text = f"**Project** `{ws.name_of(project)}` · **job** {job.status_line(now)}"
            last_line = runner.tail(1)
            if last_line and (job.running or job.returncode not in (0, 130)):
                text += f"  \n`{last_line[-200:]}`"
            return text

        # ---- live refresh ----
        tick_outputs = [status_md, log_box, summary_md, preview_img, loss_img, stats_md,
                        gallery["A"], faces_shown["A"], count_md["A"], gallery["B"], faces_shown["B"], count_md["B"],
                        ex_inputs["A"], ex_inputs["B"], cv_source, vf_pick, existing, cv_video, cv_out_md, seen]

        def tick(seen_: dict[str, Any], page_a: Any, page_b: Any) -> list[Any]:
            project = ws.current
            now = time.time()
            new = dict(seen_)
            out: list[Any] = [gr.skip()] * len(tick_outputs)

            def put(comp: Any, key: str, sig: Any, make: Callable[[], Any]) -> None:
                if new.get(key) != sig:
                    new[key] = sig
                    out[tick_outputs.index(comp)] = make()

            root = str(project.root) if project is not None else ""
            if new.get("root") != root:  # another project: send everything again
                new = {"root": root}
            put(existing, "projects", tuple(state.find_projects(ws.home)),
                lambda: gr.Dropdown(choices=state.find_projects(ws.home),
                                    value=ws.name_of(project) if project is not None else None))
            if project is None:
                put(status_md, "status", "none", lambda: "**No project open.** Create or open one below.")
                out[-1] = new
                return out
            runner = ws.runner(project)
            job = runner.poll()
            tail = runner.tail(30)
            status = header(project, now)
            put(status_md, "status", status, lambda: status)
            put(log_box, "log", tail, lambda: tail)
            job_sig = (job.pid, job.returncode)

            dirs = (dir_sig(project.faces_dir("A")), dir_sig(project.faces_dir("B")), dir_sig(project.output_dir),
                    dir_sig(state.inputs_dir(project)), dir_sig(project.model_dir / "checkpoints"), job_sig)
            put(summary_md, "summary", dirs, lambda: state.summarize(project).markdown())

            grid = project.root.joinpath(*state.PREVIEW_GRID)
            put(preview_img, "grid", dir_sig(grid), lambda: shown_file(project, grid))
            records = ws.metrics(project).read()
            last = records[-1] if records else {}
            put(loss_img, "loss", (len(records), last.get("step")), lambda: state.loss_curve(records))
            model = state.model_state(project) if new.get("model_sig") != dirs[4] else None
            if model is not None or "model" not in new:
                new["model"] = model
                new["model_sig"] = dirs[4]
            training = job.running and job.kind == "train"
            stats = state.train_stats(records, new.get("model"), job.started if training else None, now)
            put(stats_md, "stats", stats, stats.markdown)

            for side, pg, gal in (("A", page_a, gallery["A"]), ("B", page_b, gallery["B"])):
                sig = (dirs[0 if side == "A" else 1], int(pg or 1))
                if new.get(f"faces{side}") != sig:
                    new[f"faces{side}"] = sig
                    items, paths_, text = face_page(project, side, pg)
                    i = tick_outputs.index(gal)
                    out[i], out[i + 1], out[i + 2] = items, paths_, text
            names = input_names(project)
            videos = input_names(project, images=False)
            put(ex_inputs["A"], "inputsA", (dirs[3],), lambda: gr.Dropdown(choices=names))
            put(ex_inputs["B"], "inputsB", (dirs[3],), lambda: gr.Dropdown(choices=names))
            put(cv_source, "sources", (dirs[3],), lambda: gr.Dropdown(choices=videos))
            outs = output_names(project)
            put(vf_pick, "outputs", (dirs[2],), lambda: gr.Dropdown(choices=outs))
            if job.kind == "convert" and not job.running and job.returncode == 0:
                # the job file may be planted: its output path is served only from inside the project
                found = _job_output(job.argv)
                target = paths.servable(project.root, found) if found is not None else None
                if target is not None:
                    put(cv_video, "video", (str(target), dir_sig(target)), lambda: str(target))
                    put(cv_out_md, "video_md", str(target),
                        lambda: f"Rendered `{target.relative_to(project.root)}`; check it on the Verify tab.")
            out[-1] = new
            return out

        def safe_tick(seen_: dict[str, Any], page_a: Any, page_b: Any) -> list[Any]:
            try:
                return tick(seen_, page_a, page_b)
            except Exception:  # noqa: BLE001 - a refresh must not raise an error box every two seconds
                log.exception("live refresh failed")
                return [gr.skip()] * len(tick_outputs)

        timer.tick(safe_tick, inputs=[seen, page["A"], page["B"]], outputs=tick_outputs, show_progress="hidden",
                   queue=True)

        # ---- forms: the project's settings, overlaid with what this page last used for the project ----
        form = {"extract.size": ex_size, "extract.face_type": ex_type, "extract.detector": ex_det,
                "extract.every_nth": ex_nth, "train.preset": tr_preset, "train.batch_size": tr_batch,
                "train.steps": tr_steps, "train.minutes": tr_minutes, "train.lr": tr_lr,
                "train.preview_every": tr_prev, "train.save_every": tr_save, "train.device": tr_dev,
                "convert.color": cv_color, "convert.mask": cv_mask, "convert.erode": cv_erode,
                "convert.blur": cv_blur, "convert.smooth": cv_smooth, "convert.direction": cv_dir}
        form_outputs = [name_box, *form.values()]
        selection_outputs = [ex_inputs["A"], ex_inputs["B"], cv_source]

        def form_values(project: Project | None) -> list[Any]:
            if project is None:
                return [gr.skip()] * len(form_outputs)
            s = settings_of(project)
            saved = ws.remembered(project)
            values = []
            for key in form:
                section, name = key.split(".")
                default = getattr(getattr(s, section), name, 0)
                values.append(saved.get(key, default))
            return [ws.name_of(project), *values]

        def selections(project: Project | None) -> list[Any]:
            if project is None:
                return [gr.skip()] * len(selection_outputs)
            saved = ws.remembered(project)
            names, videos = input_names(project), input_names(project, images=False)

            def keep(key: str, choices: list[str]) -> list[str]:
                value = saved.get(key)
                return [v for v in value if v in choices] if isinstance(value, list) else []

            source = saved.get("convert.source")
            return [gr.Dropdown(choices=names, value=keep("inputs.A", names)),
                    gr.Dropdown(choices=names, value=keep("inputs.B", names)),
                    gr.Dropdown(choices=videos, value=source if source in videos else None)]

        def on_load(page_a: Any, page_b: Any) -> list[Any]:
            out = tick({}, page_a, page_b)
            project = ws.current
            for comp, value in zip(selection_outputs, selections(project), strict=True):
                out[tick_outputs.index(comp)] = value
            return [*out, *form_values(project)]

        blocks.load(on_load, inputs=[page["A"], page["B"]], outputs=[*tick_outputs, *form_outputs],
                    show_progress="hidden")

        # ---- Project ----
        def opened(project: Project) -> list[Any]:
            return [*form_values(project), *selections(project), {}]

        @_user_errors
        def create(name: str) -> list[Any]:
            project = ws.open(name, create=True)
            gr.Info(f"project {project.root} is open")
            return opened(project)

        @_user_errors
        def open_existing(name: str | None) -> list[Any]:
            current = ws.current
            if not name or (current is not None and ws.name_of(current) == name):
                return [gr.skip()] * (len(form_outputs) + len(selection_outputs) + 1)
            return opened(ws.open(name, create=False))

        open_outputs = [*form_outputs, *selection_outputs, seen]
        create_btn.click(create, [name_box], open_outputs)
        name_box.submit(create, [name_box], open_outputs)
        existing.input(open_existing, [existing], open_outputs)

        @_user_errors
        def use_samples() -> list[Any]:
            clips = ws.sample_clips()
            ws.remember(ws.project(), **{"inputs.A": [clips["A"].name], "inputs.B": [clips["B"].name],
                                         "convert.source": clips["test"].name})
            gr.Info("sample clips are in the project's inputs folder")
            return [gr.Dropdown(choices=input_names(ws.current), value=[clips["A"].name]),
                    gr.Dropdown(choices=input_names(ws.current), value=[clips["B"].name]),
                    gr.Dropdown(choices=input_names(ws.current, images=False), value=clips["test"].name),
                    {}]

        samples_btn.click(use_samples, [], [ex_inputs["A"], ex_inputs["B"], cv_source, seen])

        # ---- Extract ----
        def bind_side(side: str) -> None:
            @_user_errors
            def uploaded(files: list[str] | None, chosen: list[str] | None) -> list[Any]:
                if not files:
                    return [gr.skip(), gr.skip()]
                added = ws.add_inputs(files)
                names = input_names(ws.current)
                value = sorted({*(chosen or []), *(p.name for p in added)})
                return [gr.Dropdown(choices=names, value=value), None]

            ex_upload[side].upload(uploaded, [ex_upload[side], ex_inputs[side]], [ex_inputs[side], ex_upload[side]])

            @_user_errors
            def run_extract(chosen: list[str] | None, size: Any, face_type: str, detector: str, nth: Any) -> str:
                project = ws.project()
                inputs = [ws.inside(n, state.inputs_dir(project), "input") for n in (chosen or [])]
                args = extract_args(project, side, inputs, int(size or ex0.size), face_type, detector,
                                    int(nth or 1))
                ws.remember(project, **{f"inputs.{side}": list(chosen or []), "extract.size": int(size or ex0.size),
                                        "extract.face_type": face_type, "extract.detector": detector,
                                        "extract.every_nth": int(nth or 1)})
                ws.runner(project).start(f"extract {side}", args)
                return header(project)

            ex_btn[side].click(run_extract, [ex_inputs[side], ex_size, ex_type, ex_det, ex_nth], [status_md])

            def select(shown: list[str], evt: gr.SelectData) -> str:
                i = evt.index if isinstance(evt.index, int) else -1
                return shown[i] if 0 <= i < len(shown) else ""

            gallery[side].select(select, [faces_shown[side]], [face_selected[side]])

            @_user_errors
            def delete(path: str, page_no: Any) -> list[Any]:
                if not path:
                    raise UserError(f"click a face of {side} first, then delete it")
                face = ws.delete_face(side, path)
                gr.Info(f"deleted {face.name}")
                items, shown, text = face_page(ws.current, side, page_no)
                return [items, shown, text, ""]

            del_btn[side].click(delete, [face_selected[side], page[side]],
                                [gallery[side], faces_shown[side], count_md[side], face_selected[side]])

            def change_page(page_no: Any) -> list[Any]:
                items, shown, text = face_page(ws.current, side, page_no)
                return [items, shown, text]

            page[side].change(change_page, [page[side]], [gallery[side], faces_shown[side], count_md[side]])

        for s in SIDES:
            bind_side(s)

        # ---- Train ----
        @_user_errors
        def start_training(preset: str, batch: Any, steps: Any, minutes: Any, lr: Any, prev: Any, save: Any,
                           device: str) -> str:
            project = ws.project()
            try:
                settings = dataclasses.replace(settings_of(project).train, preset=preset,  # type: ignore[arg-type]
                                               batch_size=int(batch or 0), lr=float(lr), preview_every=int(prev or 0),
                                               save_every=int(save or 1), device=device)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise UserError(f"bad training setting: {exc}") from None
            model = state.model_state(project)
            args = train_args(project, settings, model.step if model else 0, int(steps or 0), float(minutes or 0))
            ws.remember(project, **{"train.preset": preset, "train.batch_size": settings.batch_size,
                                    "train.steps": int(steps or 0), "train.minutes": float(minutes or 0),
                                    "train.lr": settings.lr, "train.preview_every": settings.preview_every,
                                    "train.save_every": settings.save_every, "train.device": device})
            ws.runner(project).start("train", args)
            return header(project)

        tr_start.click(start_training, [tr_preset, tr_batch, tr_steps, tr_minutes, tr_lr, tr_prev, tr_save, tr_dev],
                       [status_md])

        @_user_errors
        def stop_job() -> str:
            ws.runner().stop()
            return header(ws.project())

        tr_stop.click(stop_job, [], [status_md])
        stop_any.click(stop_job, [], [status_md])

        # ---- Convert ----
        @_user_errors
        def pick_source(name: str | None) -> Any:
            if not name:
                return gr.skip()
            path = ws.inside(name, state.inputs_dir(ws.project()), "video")
            n = state.frame_count(path)
            return gr.Slider(minimum=0, maximum=max(1, n - 1), value=min(n - 1, max(0, n // 2)), step=1)

        cv_source.change(pick_source, [cv_source], [cv_frame])

        @_user_errors
        def upload_source(file: str | None) -> list[Any]:
            if not file:
                return [gr.skip(), gr.skip()]
            added = ws.add_inputs([file])
            return [gr.Dropdown(choices=input_names(ws.current, images=False), value=added[0].name), None]

        cv_upload.upload(upload_source, [cv_upload], [cv_source, cv_upload])

        def convert_settings(project: Project, source: str, color: str, mask: str, erode: Any, blur: Any,
                             smooth: Any, direction: str) -> ConvertSettings:
            try:
                settings = dataclasses.replace(settings_of(project).convert, color=color,  # type: ignore[arg-type]
                                               mask=mask, erode=int(erode or 0), blur=int(blur or 0),  # type: ignore[arg-type]
                                               smooth=float(smooth or 0), direction=direction)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise UserError(f"bad convert setting: {exc}") from None
            ws.remember(project, **{"convert.source": source, "convert.color": color, "convert.mask": mask,
                                    "convert.erode": settings.erode, "convert.blur": settings.blur,
                                    "convert.smooth": settings.smooth, "convert.direction": direction})
            return settings

        @_user_errors
        def preview_frame(name: str | None, frame: Any, color: str, mask: str, erode: Any, blur: Any, smooth: Any,
                          direction: str) -> str:
            from changeling.convert import preview

            project = ws.project()
            if not name:
                raise UserError("choose a video to convert first")
            source = ws.inside(name, state.inputs_dir(project), "video")
            settings = convert_settings(project, name, color, mask, erode, blur, smooth, direction)
            if state.model_state(project) is None:
                raise UserError("there is no model yet: train one on the Train tab first")
            written = preview(project, source, int(frame or 0), settings,
                              out_dir=project.previews_dir / "convert")
            chosen = [p for p in written if p.stem.endswith(f"_{color}")]
            return str(ws.inside((chosen or written)[0], project.root, "preview"))

        cv_prev_btn.click(preview_frame, [cv_source, cv_frame, cv_color, cv_mask, cv_erode, cv_blur, cv_smooth,
                                          cv_dir], [cv_prev_img])

        @_user_errors
        def render(name: str | None, color: str, mask: str, erode: Any, blur: Any, smooth: Any,
                   direction: str) -> list[Any]:
            from changeling.convert import default_output

            project = ws.project()
            if not name:
                raise UserError("choose a video to convert first")
            source = ws.inside(name, state.inputs_dir(project), "video")
            settings = convert_settings(project, name, color, mask, erode, blur, smooth, direction)
            if state.model_state(project) is None:
                raise UserError("there is no model yet: train one on the Train tab first")
            output = default_output(project, source, "video")
            ws.runner(project).start("convert", convert_args(project, source, output, settings))
            return [header(project), f"Rendering `{output.relative_to(project.root)}`…"]

        cv_render_btn.click(render, [cv_source, cv_color, cv_mask, cv_erode, cv_blur, cv_smooth, cv_dir],
                            [status_md, cv_out_md])

        # ---- Verify ----
        @_user_errors
        def verify(file: str | None, picked: str | None) -> list[Any]:
            from changeling.provenance import verify_file

            if file:
                path = Path(file)
                if not any(_within(path, r) for r in ws.upload_roots):
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

        vf_btn.click(verify, [vf_file, vf_pick], [vf_verdict, vf_report])
        del tabs
    return blocks


def _within(path: Path, root: Path) -> bool:
    from changeling.ui.paths import is_within

    return is_within(path, root)


def _job_output(argv: Sequence[str]) -> Path | None:
    """The ``-o`` path of a convert job's command line."""
    for flag in ("-o", "--output"):
        if flag in argv:
            i = list(argv).index(flag)
            if i + 1 < len(argv):
                return Path(argv[i + 1])
    return None


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


__all__ = ["DEFAULT_MAX_UPLOAD", "ServeOptions", "build_blocks", "convert_args", "extract_args", "guarded_app",
           "serve", "theme", "train_args"]
