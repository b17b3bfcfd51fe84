"""What the tabs of the web UI share: the workspace, the job's status line and log above the tabs, the live
refresh and what a newly opened project fills in.

Each tab (``tab_*.py``) builds its widgets inside the page's Blocks and tells the :class:`Page` what the live
refresh updates in it (:meth:`Page.live`) and which of its widgets take their value from the open project
(:meth:`Page.restorable`); :meth:`Page.wire` then binds the timer and the page load to all of them.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gradio as gr

from changeling.errors import UserError
from changeling.project import Project
from changeling.ui import paths, state
from changeling.ui.jobs import JobState
from changeling.ui.workspace import Workspace

log = logging.getLogger(__name__)

TICK_SECONDS = 2.0


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show a user mistake (:class:`UserError`) as an error message on the page instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    return wrapper


def dir_sig(p: Path) -> int:
    """A signature that changes when ``p`` (a file, or a folder's list of entries) changes; 0 when missing."""
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0


@dataclass(frozen=True)
class Snapshot:
    """What one live refresh shows: the open project (if any), its job and the time."""

    project: Project | None
    job: JobState
    now: float


class Refresh:
    """One live refresh of one page. A component is sent only when its signature differs from the one this
    page last got (``seen``, kept per page); everything else is skipped. Another project sends everything."""

    def __init__(self, outputs: Sequence[Any], seen: dict[str, Any], root: str) -> None:
        self.outputs = list(outputs)
        self.new: dict[str, Any] = dict(seen) if seen.get("root") == root else {"root": root}
        self.values: list[Any] = [gr.skip()] * len(self.outputs)

    def put(self, comp: Any, key: str, sig: Any, make: Callable[[], Any]) -> None:
        if self.new.get(key) != sig:
            self.new[key] = sig
            self.values[self.outputs.index(comp)] = make()


LiveFn = Callable[..., None]  # (refresh, snapshot, *the values of its inputs) -> None


class Tab(Protocol):
    """A tab: made inside the page's ``gr.Tabs`` (its widgets, and what it registers with the page), then
    bound once every tab exists (its event handlers)."""

    def bind(self) -> None: ...


class Page:
    """The page of one UI server, bound to ``ws``. Made inside ``gr.Blocks``: it builds the header."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.seen = gr.State({})  # per page: what the live refresh last sent (so unchanged parts are skipped)
        gr.Markdown("# changeling\nFace swap from two people's footage; every output is marked as synthetic.")
        self.status_md = gr.Markdown("", elem_classes=["job-status"], elem_id="job-status")
        with gr.Accordion("Job output", open=False):
            self.log_box = gr.Textbox(label="last lines of the running or last job", lines=10, max_lines=10,
                                      interactive=False, elem_id="job-log")
            self.stop_any = gr.Button("Stop the job", variant="stop", size="sm")
        self._live: list[tuple[list[Any], list[Any], LiveFn]] = [([self.status_md, self.log_box], [], self._status)]
        self._restore: list[tuple[list[Any], Callable[[Project], list[Any]], bool]] = []

    # ---- what the tabs register -------------------------------------------------------------------------
    def live(self, outputs: Sequence[Any], fn: LiveFn, inputs: Sequence[Any] = ()) -> None:
        """``fn(refresh, snapshot, *values of inputs)`` updates ``outputs`` at each tick and on page load."""
        self._live.append((list(outputs), list(inputs), fn))

    def restorable(self, components: Sequence[Any], fn: Callable[[Project], list[Any]], *,
                   selection: bool = False) -> None:
        """``fn(project)`` gives the values of ``components`` when a project opens or the page loads;
        ``selection``: the inputs chosen from the project's files (also restored after sample clips arrive)."""
        self._restore.append((list(components), fn, selection))

    def restore_outputs(self, *, selections: bool = False) -> list[Any]:
        return [c for comps, _, sel in self._restore if sel or not selections for c in comps]

    def restore(self, project: Project | None, *, selections: bool = False) -> list[Any]:
        if project is None:
            return [gr.skip()] * len(self.restore_outputs(selections=selections))
        return [v for _, fn, sel in self._restore if sel or not selections for v in fn(project)]

    # ---- helpers --------------------------------------------------------------------------------------------
    def settings_of(self, project: Project | None) -> Any:
        """The project's settings (the defaults when its ``changeling.toml`` is broken: its jobs say why)."""
        from changeling.config import Settings

        if project is None:
            return Settings()
        try:
            return project.settings()
        except UserError as exc:
            log.warning("%s; the forms show the defaults", exc)
            return Settings()

    def header(self, project: Project, now: float | None = None) -> str:
        """The status line above the tabs: the project, its job, and the job's last output line while it
        runs (progress) or when it failed (the reason)."""
        runner = self.ws.runner(project)
        job = runner.poll()
        text = f"**Project** `{self.ws.name_of(project)}` · **job** {job.status_line(now)}"
        last_line = runner.tail(1)
        if last_line and (job.running or job.returncode not in (0, 130)):
            text += f"  \n`{last_line[-200:]}`"
        return text

    def input_names(self, project: Project | None, *, images: bool = True) -> list[str]:
        if project is None:
            return []
        return [p.name for p in state.media_files(state.inputs_dir(project), images=images)]

    def shown_file(self, project: Project, path: Path) -> str | None:
        """``path`` as the page may get it: resolved, if it is a file inside the project."""
        real = paths.servable(project.root, path)
        return str(real) if real is not None else None

    @user_errors
    def stop_job(self) -> str:
        self.ws.runner().stop()
        return self.header(self.ws.project())

    # ---- the live refresh and the page load ----------------------------------------------------------------
    def _status(self, r: Refresh, snap: Snapshot) -> None:
        if snap.project is None:
            r.put(self.status_md, "status", "none", lambda: "**No project open.** Create or open one below.")
            return
        tail = self.ws.runner(snap.project).tail(30)
        status = self.header(snap.project, snap.now)
        r.put(self.status_md, "status", status, lambda: status)
        r.put(self.log_box, "log", tail, lambda: tail)

    def wire(self, blocks: Any, timer: Any) -> None:
        """Bind the timer's live refresh and the page load to what the tabs registered, and the stop button
        above the tabs."""
        self.stop_any.click(self.stop_job, [], [self.status_md])
        outputs = [c for outs, _, _ in self._live for c in outs]
        inputs = [c for _, ins, _ in self._live for c in ins]
        restore_outputs = self.restore_outputs()

        def tick(seen: dict[str, Any], *values: Any) -> list[Any]:
            project = self.ws.current
            r = Refresh(outputs, seen, str(project.root) if project is not None else "")
            snap = Snapshot(project, self.ws.runner(project).poll() if project is not None else JobState(),
                            time.time())
            i = 0
            for _, ins, fn in self._live:
                fn(r, snap, *values[i:i + len(ins)])
                i += len(ins)
            return [*r.values, r.new]

        def safe_tick(seen: dict[str, Any], *values: Any) -> list[Any]:
            try:
                return tick(seen, *values)
            except Exception:  # noqa: BLE001 - a refresh must not raise an error box every two seconds
                log.exception("live refresh failed")
                return [gr.skip()] * (len(outputs) + 1)

        timer.tick(safe_tick, inputs=[self.seen, *inputs], outputs=[*outputs, self.seen], show_progress="hidden",
                   queue=True)
        extra = [c for c in restore_outputs if c not in outputs]

        def on_load(*values: Any) -> list[Any]:
            out = tick({}, *values)
            added = []
            for comp, value in zip(restore_outputs, self.restore(self.ws.current), strict=True):
                if comp in outputs:
                    out[outputs.index(comp)] = value
                else:
                    added.append(value)
            return [*out, *added]

        blocks.load(on_load, inputs=inputs, outputs=[*outputs, self.seen, *extra], show_progress="hidden")
