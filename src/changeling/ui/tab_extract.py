"""The Extract tab: inputs for A and B (uploads are copied into ``PROJECT/inputs``), an extract job per side,
and galleries of the faces where a bad one is deleted."""

from __future__ import annotations

from typing import Any

import gradio as gr

from changeling.config import ExtractSettings
from changeling.errors import UserError
from changeling.project import Project
from changeling.ui import paths, state
from changeling.ui.commands import extract_args
from changeling.ui.forms import Form
from changeling.ui.masks import SEGMENTERS, ProjectSegmenter, SegmenterCache, gallery_images, masks_sig
from changeling.ui.page import Page, Refresh, Snapshot, dir_sig, user_errors
from changeling.vocab import SIDES

FIELDS = (  # the ExtractSettings fields this tab shows, in order
    "size",
    "face_type",
    "detector",
    "every_nth",
)
FACES_PER_PAGE = 48


def face_page(project: Project | None, side: str, page_no: Any, segmenters: SegmenterCache | None = SEGMENTERS
              ) -> tuple[list[tuple[Any, str]], list[str], str]:
    """One gallery page of ``side``'s faces: (image, caption) pairs, the face files shown, the count line. With
    ``segmenters``, a face that something covers (as the project's segmenter or a hand correction says) shows
    that part in red."""
    from changeling.faces.facefile import list_faces

    if project is None or side not in SIDES:
        return [], [], ""
    faces = list_faces(project.faces_dir(side))
    n_pages = max(1, -(-len(faces) // FACES_PER_PAGE))
    p = min(max(1, int(page_no or 1)), n_pages)
    # a face file that is a link out of the project is left out (the page gets resolved paths)
    start = (p - 1) * FACES_PER_PAGE
    page_faces = [(f, paths.servable(project.root, f)) for f in faces[start:start + FACES_PER_PAGE]]
    shown = [(f, real) for f, real in page_faces if real is not None]
    loaded = segmenters.get(project) if segmenters is not None else ProjectSegmenter(None)
    images = gallery_images(project, side, [real for _, real in shown], loaded.segmenter)
    count = f"**{len(faces)}** faces of {side} (page {p} of {n_pages})"
    if any(not isinstance(image, str) for image, _ in images):
        count += "; red: what covers the face, as the occlusion segmenter or your correction says"
    return ([(image, f.stem + (" (corrected)" if corrected else "")) for (f, _), (image, corrected)
             in zip(shown, images, strict=True)], [str(f) for f, _ in shown],
            count + (f"  \n{loaded.note}" if loaded.note else ""))


class ExtractTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.form = Form("extract", ExtractSettings, FIELDS)
        self.inputs: dict[str, Any] = {}
        self.upload: dict[str, Any] = {}
        self.button: dict[str, Any] = {}
        self.gallery: dict[str, Any] = {}
        self.delete: dict[str, Any] = {}
        self.count: dict[str, Any] = {}
        self.page_no: dict[str, Any] = {}
        with gr.Tab("Extract", id="extract", elem_id="tab-extract"):
            # per page: the face files in each gallery, in order, and the one clicked (inside the tab: gr.Tabs
            # takes every child for a tab)
            self.shown: dict[str, Any] = {s: gr.State([]) for s in SIDES}
            self.selected: dict[str, Any] = {s: gr.State("") for s in SIDES}
            gr.Markdown("Upload videos or images of each person (they are copied into the project's `inputs/` "
                        "folder), choose them, and extract. Click a bad face, then delete it: it drops out of "
                        "training.")
            with gr.Row():
                self.form.build()
            with gr.Row():
                for side in SIDES:
                    with gr.Column():
                        self._side(side)
        page.restorable(self.form.components, lambda p: self.form.initial(page.settings_of(p).extract,
                                                                           page.ws.remembered(p)))
        page.restorable([self.inputs[s] for s in SIDES], self.selections, selection=True)
        for side in SIDES:
            page.live([self.gallery[side], self.shown[side], self.count[side], self.inputs[side]],
                      self._refresher(side), inputs=[self.page_no[side]])

    def _side(self, side: str) -> None:
        gr.Markdown(f"### Person {side}")
        self.upload[side] = gr.File(label=f"upload videos or images of {side}", file_count="multiple",
                                    elem_id=f"upload-{side}")
        self.inputs[side] = gr.Dropdown(label=f"inputs of {side}", multiselect=True, choices=[],
                                        elem_id=f"inputs-{side}")
        self.button[side] = gr.Button(f"Extract {side}", variant="primary", elem_id=f"extract-{side}")
        self.count[side] = gr.Markdown("", elem_id=f"faces-count-{side}")
        self.gallery[side] = gr.Gallery(label=f"faces of {side}", columns=5, height=380, allow_preview=False,
                                        format="png", elem_id=f"gallery-{side}", interactive=False)
        with gr.Row():
            self.page_no[side] = gr.Number(label="page", value=1, precision=0, minimum=1, scale=1)
            self.delete[side] = gr.Button("Delete selected face", variant="stop", scale=2,
                                          elem_id=f"delete-face-{side}")

    def selections(self, project: Project) -> list[Any]:
        saved = self.page.ws.remembered(project)
        names = self.page.input_names(project)

        def keep(key: str) -> list[str]:
            value = saved.get(key)
            return [v for v in value if v in names] if isinstance(value, list) else []

        return [gr.Dropdown(choices=names, value=keep(f"inputs.{side}")) for side in SIDES]

    def _refresher(self, side: str) -> Any:
        def refresh(r: Refresh, snap: Snapshot, page_no: Any) -> None:
            project = snap.project
            if project is None:
                return
            sig = (dir_sig(project.faces_dir(side)), int(page_no or 1), masks_sig(project))
            if r.new.get(f"faces{side}") != sig:
                r.new[f"faces{side}"] = sig
                i = r.outputs.index(self.gallery[side])
                r.values[i:i + 3] = face_page(project, side, page_no)
            r.put(self.inputs[side], f"inputs{side}", (dir_sig(state.inputs_dir(project)),),
                  lambda: gr.Dropdown(choices=self.page.input_names(project)))

        return refresh

    def bind(self) -> None:
        for side in SIDES:
            self._bind_side(side)

    def _bind_side(self, side: str) -> None:
        page, ws = self.page, self.page.ws

        @user_errors
        def uploaded(files: list[str] | None, chosen: list[str] | None) -> list[Any]:
            if not files:
                return [gr.skip(), gr.skip()]
            added = ws.add_inputs(files)
            value = sorted({*(chosen or []), *(p.name for p in added)})
            return [gr.Dropdown(choices=page.input_names(ws.current), value=value), None]

        self.upload[side].upload(uploaded, [self.upload[side], self.inputs[side]],
                                 [self.inputs[side], self.upload[side]])

        @user_errors
        def run_extract(chosen: list[str] | None, *values: Any) -> str:
            project = ws.project()
            inputs = [ws.inside(n, state.inputs_dir(project), "input") for n in (chosen or [])]
            settings = self.form.read(page.settings_of(project).extract, values)
            args = extract_args(project, side, inputs, settings, FIELDS)
            ws.remember(project, **{f"inputs.{side}": list(chosen or [])}, **self.form.remember(settings))
            ws.runner(project).start(f"extract {side}", args)
            return page.header(project)

        self.button[side].click(run_extract, [self.inputs[side], *self.form.components], [page.status_md])

        def select(shown: list[str], evt: gr.SelectData) -> str:
            i = evt.index if isinstance(evt.index, int) else -1
            return shown[i] if 0 <= i < len(shown) else ""

        self.gallery[side].select(select, [self.shown[side]], [self.selected[side]])

        @user_errors
        def delete(path: str, page_no: Any) -> list[Any]:
            if not path:
                raise UserError(f"click a face of {side} first, then delete it")
            face = ws.delete_face(side, path)
            gr.Info(f"deleted {face.name}")
            return [*face_page(ws.current, side, page_no), ""]

        self.delete[side].click(delete, [self.selected[side], self.page_no[side]],
                                [self.gallery[side], self.shown[side], self.count[side], self.selected[side]])

        def change_page(page_no: Any) -> list[Any]:
            return list(face_page(ws.current, side, page_no))

        self.page_no[side].change(change_page, [self.page_no[side]],
                                  [self.gallery[side], self.shown[side], self.count[side]])
