"""The UI's settings widgets come from the settings fields a tab declares: label, help, range and choices as the
field has them; the form reads back checked settings, remembers them, and refills from the project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from changeling.config import ConvertSettings, ExtractSettings, MasksSettings, TrainSettings
from changeling.config.schema import format_value, setting_specs
from changeling.errors import UserError

gr = pytest.importorskip("gradio")


def _widgets(home: Path) -> dict[str, Any]:
    """The components of a freshly built page, by elem_id."""
    from changeling.ui.app import build_blocks
    from changeling.ui.workspace import Workspace

    blocks = build_blocks(Workspace(home))
    return {c.elem_id: c for c in blocks.blocks.values() if getattr(c, "elem_id", None)}


def _tabs() -> list[tuple[str, type, tuple[str, ...]]]:
    from changeling.ui import tab_convert, tab_extract, tab_masks, tab_train

    return [("extract", ExtractSettings, tab_extract.FIELDS), ("train", TrainSettings, tab_train.FIELDS),
            ("train", tab_train.TrainRun, ("steps", "minutes")), ("convert", ConvertSettings, tab_convert.FIELDS),
            ("masks", MasksSettings, tab_masks.FIELDS)]


def _check_widget(comp: Any, cls: type, name: str) -> None:
    spec = setting_specs(cls, [name])[0]
    assert (comp.label, comp.info) == (spec.label, spec.help), name
    if spec.kind == "duration":  # typed as text, such as 4m or 90s
        assert isinstance(comp, gr.Textbox) and comp.value == format_value(spec, getattr(cls(), name)), name
        return
    assert comp.value == getattr(cls(), name), name
    if spec.kind == "choice":
        assert isinstance(comp, gr.Dropdown) and [v for _, v in comp.choices] == list(spec.choices), name
    elif spec.kind == "bool":
        assert isinstance(comp, gr.Checkbox), name
    else:
        assert isinstance(comp, (gr.Number, gr.Slider)), name
        assert (comp.minimum, comp.maximum) == (spec.min, spec.max), name
        if isinstance(comp, gr.Number):
            assert (comp.precision == 0) == (spec.kind == "int"), name
        else:
            assert comp.step == spec.step, name


def test_each_tab_builds_its_widgets_from_the_fields_it_declares(tmp_path: Path) -> None:
    widgets = _widgets(tmp_path)
    for section, cls, names in _tabs():
        for name in names:
            _check_widget(widgets[f"{section}-{name.replace('_', '-')}"], cls, name)


def test_a_field_added_to_a_tab_gets_its_widget_and_its_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one line that shows a setting on a tab: its name in the tab's FIELDS."""
    from changeling.cli import build_parser
    from changeling.project import init_project
    from changeling.ui import tab_extract
    from changeling.ui.commands import extract_args

    monkeypatch.setattr(tab_extract, "FIELDS", (*tab_extract.FIELDS, "min_score", "iris"))
    widgets = _widgets(tmp_path)
    for name in ("min_score", "iris"):
        _check_widget(widgets[f"extract-{name.replace('_', '-')}"], ExtractSettings, name)
    project = init_project(tmp_path / "p")
    settings = ExtractSettings(min_score=0.35, iris=True)
    ns = build_parser().parse_args(extract_args(project, "A", [Path("a.mp4")], settings, tab_extract.FIELDS))
    assert (ns.min_score, ns.iris) == (0.35, True)


CONVERT_FIELDS = ("color", "mask", "erode", "blur", "smooth", "direction")


def test_a_form_reads_checked_settings_and_remembers_them() -> None:
    from changeling.ui.forms import Form

    form = Form("convert", ConvertSettings, CONVERT_FIELDS)
    base = ConvertSettings(blur=12)
    # as Gradio hands them over: a float from a number box, an empty box (None keeps the project's value)
    got = form.read(base, ["hist", "hull", -3.0, None, 0.25, "b2a"])
    assert got == ConvertSettings(color="hist", mask="hull", erode=-3, blur=12, smooth=0.25, direction="b2a")
    assert isinstance(got.erode, int)
    assert form.remember(got) == {"convert.color": "hist", "convert.mask": "hull", "convert.erode": -3,
                                  "convert.blur": 12, "convert.smooth": 0.25, "convert.direction": "b2a"}
    with pytest.raises(UserError, match=r"'erode': must be from -64 to 64"):
        form.read(base, ["hist", "hull", 99, 8, 0.5, "a2b"])
    with pytest.raises(UserError, match=r"'color'"):
        form.read(base, ["purple", "hull", 0, 8, 0.5, "a2b"])
    with pytest.raises(UserError, match="'erode'"):
        form.read(base, ["hist", "hull", 2.5, 8, 0.5, "a2b"])


def test_a_form_refills_from_what_was_remembered_when_it_is_still_valid() -> None:
    from changeling.ui.forms import Form

    form = Form("convert", ConvertSettings, CONVERT_FIELDS)
    base = ConvertSettings(mask="hull", smooth=0.75)
    # the remembered form is a project file: a stale or planted value falls back to the project's setting
    saved = {"convert.color": "mkl", "convert.mask": "<script>", "convert.erode": 5, "convert.blur": 1e9,
             "convert.smooth": None}
    assert form.initial(base, saved) == ["mkl", "hull", 5, base.blur, 0.75, base.direction]
