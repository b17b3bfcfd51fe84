"""A tab's settings widgets, built from the settings fields it declares (:mod:`changeling.config.schema`).

A :class:`Form` is one settings section and the names of the fields a tab shows. From that alone it makes the
widgets (label, choices, minimum and maximum, the help text as the info line), fills them when a project is
opened (what the page last used for the project, else the project's settings), reads them back into checked
settings (:func:`changeling.config.core.apply`: a bad value is a :class:`UserError` naming the field), and
says what to remember of them (``PROJECT/logs/ui_form.json``, keys ``section.field``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr

from changeling.config.core import apply
from changeling.config.schema import SettingSpec, format_value, setting_specs
from changeling.errors import UserError

SOURCE = "the page's form"  # where a bad value came from, in the message


def widget(spec: SettingSpec, value: Any, elem_id: str) -> Any:
    """The Gradio component that edits one setting, showing ``value``."""
    common: dict[str, Any] = {"label": spec.label, "info": spec.help or None, "elem_id": elem_id}
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=value, **common)
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if spec.kind == "float" and spec.step is not None and spec.min is not None and spec.max is not None:
        return gr.Slider(minimum=spec.min, maximum=spec.max, step=spec.step, value=value, **common)
    if spec.kind in ("int", "float"):
        return gr.Number(value=value, precision=0 if spec.kind == "int" else None, minimum=spec.min,
                         maximum=spec.max, **common)
    return gr.Textbox(value=shown(spec, value), **common)


def shown(spec: SettingSpec, value: Any) -> Any:
    """``value`` as its widget holds it (a duration as text, such as ``90s``)."""
    return format_value(spec, value) if spec.kind == "duration" else value


def _given(spec: SettingSpec, value: Any) -> Any:
    """A widget's value as the settings take it; ``None`` when the widget is empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Form:
    """The widgets of ``names`` (fields of the settings dataclass ``cls``) under the settings section
    ``section``; :meth:`build` makes them where the page's layout is."""

    def __init__(self, section: str, cls: type, names: Sequence[str]) -> None:
        self.section, self.cls = section, cls
        self.specs = setting_specs(cls, names)
        self.components: list[Any] = []

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def build(self) -> list[Any]:
        """The widgets, with the defaults of ``cls`` (a page shows the project's values once it loads)."""
        defaults = self.cls()
        # widget() shows the value as its widget holds it (a duration as text): it gets the setting's own value
        self.components = [widget(s, getattr(defaults, s.name), f"{self.section}-{s.name.replace('_', '-')}")
                           for s in self.specs]
        return self.components

    def key(self, spec: SettingSpec) -> str:
        return f"{self.section}.{spec.name}"

    def initial(self, base: Any, saved: Mapping[str, Any]) -> list[Any]:
        """The widgets' values for a project: what the page last used, where that is still a valid value
        (the file is part of the project, so it may be stale or planted), else ``base``'s."""
        values = []
        for spec in self.specs:
            value = getattr(base, spec.name)
            if self.key(spec) in saved:
                try:
                    value = getattr(apply(base, {spec.name: saved[self.key(spec)]}, SOURCE), spec.name)
                except UserError:
                    pass
            values.append(shown(spec, value))
        return values

    def read(self, base: Any, values: Sequence[Any]) -> Any:
        """``base`` with the widgets' ``values`` (in :attr:`components` order) applied; an empty widget keeps
        ``base``'s value. A bad value raises :class:`UserError`."""
        given = {s.name: _given(s, v) for s, v in zip(self.specs, values, strict=True)}
        return apply(base, {k: v for k, v in given.items() if v is not None}, SOURCE)

    def remember(self, settings: Any) -> dict[str, Any]:
        """The values of ``settings`` to remember for the project, by key."""
        return {self.key(s): getattr(settings, s.name) for s in self.specs}
