"""The UI server's state: the folder projects live in (``home``), the open project and one job runner per
project. Everything a page does to files goes through here, confined by :mod:`changeling.ui.paths`: project
folders inside ``home``, every other file inside the open project."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from changeling.errors import UserError
from changeling.evaluate.paired import PairedSpec
from changeling.project import CONFIG_NAME, Project, init_project, open_project
from changeling.ui import paths
from changeling.ui.jobs import JobRunner
from changeling.ui.state import MetricsTail, inputs_dir
from changeling.vocab import SIDES

log = logging.getLogger(__name__)

FORM = "ui_form.json"  # PROJECT/logs: what the page's forms last held, so a reopened page shows it again


class Workspace:
    """Thread-safe: Gradio runs handlers of several pages at once."""

    def __init__(self, home: Path, project: str | None = None, *, sample_spec: PairedSpec | None = None,
                 job_command: Sequence[str] | None = None) -> None:
        self.home = Path(home).resolve()
        self.sample_spec = sample_spec or PairedSpec()
        self.job_command = job_command
        self._lock = threading.RLock()
        self._runners: dict[Path, JobRunner] = {}
        self._metrics: dict[Path, MetricsTail] = {}
        self._project: Project | None = None
        self.upload_roots: list[Path] = []  # where Gradio keeps uploads (set by the server)
        self.on_open: Callable[[], None] | None = None  # called after another project is opened
        if project is not None:
            self.open(project, create=True)

    # ---- the open project -------------------------------------------------------------------------------
    @property
    def current(self) -> Project | None:
        return self._project

    def project(self) -> Project:
        """The open project; :class:`UserError` when none is open yet."""
        p = self._project
        if p is None:
            raise UserError("no project is open: create or open one on the Project tab first")
        return p

    def open(self, name: str, *, create: bool) -> Project:
        """Open (or with ``create``, create) the project folder ``name`` inside ``home``."""
        root = paths.project_folder(self.home, name)
        if create:
            project = init_project(root)
        else:
            if not (root / CONFIG_NAME).is_file():
                raise UserError(f"not a changeling project (no {CONFIG_NAME}); use Create to make one", root)
            project = open_project(root)
        project.ensure_dirs()
        inputs_dir(project).mkdir(exist_ok=True)
        with self._lock:
            self._project = project = Project(root)
        if self.on_open is not None:
            self.on_open()
        log.info("project %s is open", root)
        return project

    def name_of(self, project: Project) -> str:
        rel = project.root.relative_to(self.home)
        return str(rel) if str(rel) != "." else "."

    def roots(self) -> list[Path]:
        """Folders the file routes may serve from: the open project and the upload folders."""
        p = self._project
        return ([p.root] if p is not None else []) + list(self.upload_roots)

    # ---- jobs ---------------------------------------------------------------------------------------------
    def runner(self, project: Project | None = None) -> JobRunner:
        project = project or self.project()
        with self._lock:
            r = self._runners.get(project.root)
            if r is None:
                r = self._runners[project.root] = JobRunner(project.root, self.job_command)
            return r

    def metrics(self, project: Project) -> MetricsTail:
        with self._lock:
            m = self._metrics.get(project.root)
            if m is None:
                m = self._metrics[project.root] = MetricsTail(project.logs_dir / "metrics.jsonl")
            return m

    def running_jobs(self) -> list[tuple[Path, str]]:
        with self._lock:
            runners = list(self._runners.values())
        return [(r.project, r.state.kind) for r in runners if r.poll().running]

    # ---- the page's forms, remembered per project ----------------------------------------------------------
    def remembered(self, project: Project) -> dict[str, Any]:
        try:
            data = json.loads((project.logs_dir / FORM).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remember(self, project: Project, **values: Any) -> None:
        """Merge ``values`` into the project's remembered form values (written atomically)."""
        with self._lock:
            data = {**self.remembered(project), **values}
            path = project.logs_dir / FORM
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{FORM}.tmp")
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, path)

    # ---- files --------------------------------------------------------------------------------------------
    def inside(self, candidate: str | Path, folder: Path | None = None, what: str = "file") -> Path:
        """``candidate`` resolved inside ``folder`` (default: the open project), else :class:`UserError`."""
        return paths.confine(folder if folder is not None else self.project().root, candidate, what)

    def add_inputs(self, uploaded: Sequence[str | Path]) -> list[Path]:
        """Copy uploaded files (from Gradio's upload folder) into ``PROJECT/inputs``; returns the new paths."""
        project = self.project()
        target = inputs_dir(project)
        target.mkdir(parents=True, exist_ok=True)
        out = []
        for src in uploaded:
            src = Path(src)
            if not any(paths.is_within(src, root) for root in self.upload_roots):
                raise UserError("is not an upload of this page", src)
            dest = target / paths.safe_filename(src.name)
            tmp = dest.with_name(f".{dest.name}.part")
            shutil.copyfile(src, tmp)
            tmp.replace(dest)
            out.append(dest)
        return out

    def sample_clips(self) -> dict[str, Path]:
        """The demo's sample clips (two public-domain portraits) in ``PROJECT/inputs``: A_train, B_train and
        A_heldout; clips already there are kept."""
        from changeling.demo import sample_clips

        return sample_clips(self.project(), self.sample_spec, progress=False)

    def delete_face(self, side: str, path: str | Path) -> Path:
        """Delete one face file of ``side``; it drops out of training."""
        if side not in SIDES:
            raise UserError(f"side must be A or B, got {side!r}")
        folder = self.project().faces_dir(side)
        face = self.inside(path, folder, "face file")
        if face.suffix.lower() != ".png" or not face.is_file():
            raise UserError("is not a face file", face)
        face.unlink()
        return face
