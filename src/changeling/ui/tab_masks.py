"""The Masks tab: hand corrections of the occlusion mask, as XSeg allows. A gallery of one side's faces (what
covers them in red), a mask editor for the face clicked (paint the visible face, erase what covers it), saved as
that face's hand correction with ``masks import``'s checks, and a job that trains the project's occlusion
segmenter or fine-tunes it on the corrections (``changeling masks train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import gradio as gr

from changeling.config import MasksSettings
from changeling.errors import UserError
from changeling.project import Project
from changeling.ui.commands import masks_train_args
from changeling.ui.forms import Form
from changeling.ui.masks import (
    BRUSHES,
    SEGMENTERS,
    OpenedFace,
    masks_sig,
    open_face,
    save_painted,
    segmenter_summary,
)
from changeling.ui.page import Page, Refresh, Snapshot, dir_sig, user_errors
from changeling.ui.tab_extract import face_page
from changeling.ui.workspace import Workspace
from changeling.vocab import SIDES

FIELDS = (  # the MasksSettings fields this tab shows, in order
    "max_steps",
    "finetune_steps",
    "max_time",
    "device",
)
PICK_FIRST = "Click a face in the gallery to edit its mask."
BRUSH_SHARE = 24  # the brush's size: the face's side over this (Gradio's "auto" is far too wide on a small face)


def editor_update(opened: OpenedFace) -> Any:
    """The editor showing ``opened``, with a brush sized for the face."""
    size = max(1, opened.base.shape[0] // BRUSH_SHARE)
    value: Any = opened.value  # Gradio's EditorValue: this dict's keys
    return gr.ImageEditor(value=value, brush=brush(size), eraser=gr.Eraser(default_size=size))


def brush(size: int | Literal["auto"] = "auto") -> Any:
    """The editor's brush: the overlay's green (visible face) and red (covered: the one it starts with)."""
    return gr.Brush(colors=list(BRUSHES), default_color=BRUSHES[1], color_mode="fixed", default_size=size)


def confined_face(ws: Workspace, side: str, face: str) -> Path:
    """``face`` resolved inside the open project's faces folder of ``side``; :class:`UserError` otherwise."""
    if side not in SIDES:
        raise UserError(f"side must be A or B, got {side!r}")
    if not face:
        raise UserError(PICK_FIRST)
    return ws.inside(face, ws.project().faces_dir(side), "face file")


def open_for_editing(ws: Workspace, side: str, face: str) -> OpenedFace:
    """The editor's content for a face of the open project (confined to its faces folder of ``side``)."""
    return open_face(ws.project(), side, confined_face(ws, side, face), SEGMENTERS.get(ws.project()).segmenter)


def save_edit(ws: Workspace, side: str, face: str, key: str, base: Any, value: Any) -> OpenedFace:
    """Store the mask the editor opened with (``base``), changed by what was painted, as the face's hand
    correction; the face as the editor now shows it."""
    path = confined_face(ws, side, face)
    save_painted(ws.project(), side, path, key, base, value)
    return open_for_editing(ws, side, face)


class MasksTab:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.form = Form("masks", MasksSettings, FIELDS)
        with gr.Tab("Masks", id="masks", elem_id="tab-masks"):
            # per page: the face files in the gallery, the face in the editor and its identity when opened
            self.shown = gr.State([])
            self.face = gr.State("")
            self.key = gr.State("")
            self.base = gr.State(None)
            gr.Markdown("Fix the **occlusion mask** of a few faces where something covers the face (a hand, a "
                        "microphone, glasses, hair): click a face, paint green where the face is visible and red "
                        "over what covers it, save. Then train the segmenter: it learns from your corrections, "
                        "and training and convert keep what covers the face in front of the swap.")
            self.summary_md = gr.Markdown("", elem_id="masks-summary")
            with gr.Row():
                with gr.Column(scale=2):
                    self.side = gr.Radio(list(SIDES), value=SIDES[0], label="person", elem_id="masks-side")
                    self.count = gr.Markdown("", elem_id="masks-count")
                    self.gallery = gr.Gallery(label="faces (click one to edit its mask)", columns=5, height=420,
                                              allow_preview=False, format="png", elem_id="masks-gallery",
                                              interactive=False)
                    self.page_no = gr.Number(label="page", value=1, precision=0, minimum=1, elem_id="masks-page")
                with gr.Column(scale=3):
                    self.note = gr.Markdown(PICK_FIRST, elem_id="masks-note")
                    self.editor = gr.ImageEditor(
                        label="mask (green: visible face, red: covered)", type="numpy", image_mode="RGBA",
                        sources=(), transforms=(), layers=False, format="png", height=480, elem_id="masks-editor",
                        brush=brush(), eraser=gr.Eraser(), buttons=["fullscreen"])
                    self.save_btn = gr.Button("Save this mask as the face's correction", variant="primary",
                                              elem_id="masks-save")
            with gr.Row():
                self.form.build()
            self.train_btn = gr.Button("Train the segmenter (again: fine-tune it on the corrections)",
                                       elem_id="masks-train")
        page.restorable(self.form.components, lambda p: self.form.initial(page.settings_of(p).masks,
                                                                           page.ws.remembered(p)))
        page.live([self.gallery, self.shown, self.count, self.summary_md], self.refresh,
                  inputs=[self.side, self.page_no])

    def refresh(self, r: Refresh, snap: Snapshot, side: str, page_no: Any) -> None:
        project = snap.project
        if project is None:
            return
        sig = (side, dir_sig(project.faces_dir(side)) if side in SIDES else 0, int(page_no or 1), masks_sig(project))
        if r.new.get("masks_faces") != sig:
            r.new["masks_faces"] = sig
            i = r.outputs.index(self.gallery)
            r.values[i:i + 3] = face_page(project, side, page_no)
        r.put(self.summary_md, "masks_summary", masks_sig(project), lambda: self.summary(project))

    def summary(self, project: Project) -> str:
        return segmenter_summary(project, SEGMENTERS.get(project))

    def bind(self) -> None:
        page, ws = self.page, self.page.ws

        def masks_page(side: str, page_no: Any) -> list[Any]:
            return list(face_page(ws.current, side, page_no))

        self.page_no.change(masks_page, [self.side, self.page_no], [self.gallery, self.shown, self.count])

        def masks_side(side: str, page_no: Any) -> list[Any]:  # the face in the editor was of the other side
            return [*face_page(ws.current, side, page_no), None, "", "", None, PICK_FIRST]

        self.side.change(masks_side, [self.side, self.page_no], [self.gallery, self.shown, self.count, self.editor,
                                                                  self.face, self.key, self.base, self.note])

        @user_errors
        def masks_pick(side: str, shown: list[str], evt: gr.SelectData) -> list[Any]:
            i = evt.index if isinstance(evt.index, int) else -1
            if not 0 <= i < len(shown):
                return [gr.skip()] * 5  # one per output: a short list is an error in Gradio
            opened = open_for_editing(ws, side, shown[i])
            return [editor_update(opened), shown[i], opened.key, opened.base, opened.note]

        self.gallery.select(masks_pick, [self.side, self.shown],
                            [self.editor, self.face, self.key, self.base, self.note])

        @user_errors
        def masks_save(side: str, face: str, key: str, base: Any, value: Any) -> list[Any]:
            opened = save_edit(ws, side, face, key, base, value)
            gr.Info("correction saved; train the segmenter to learn from it")
            return [editor_update(opened), opened.base, opened.note]

        self.save_btn.click(masks_save, [self.side, self.face, self.key, self.base, self.editor],
                            [self.editor, self.base, self.note])

        @user_errors
        def masks_train(*values: Any) -> str:
            project = ws.project()
            settings = self.form.read(page.settings_of(project).masks, values)
            ws.remember(project, **self.form.remember(settings))
            ws.runner(project).start("masks train", masks_train_args(project, settings, FIELDS))
            return page.header(project)

        self.train_btn.click(masks_train, self.form.components, [page.status_md])
