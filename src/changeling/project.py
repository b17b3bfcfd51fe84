"""Project folders: the layout of one swap on disk (see DESIGN.md, 'A project folder')."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from changeling.config import Settings, load_settings
from changeling.errors import UserError

CONFIG_NAME = "changeling.toml"
_SUBDIRS = ("faces/A", "faces/B", "alignments", "model", "previews", "logs", "output")

_TEMPLATE = """\
# changeling settings for this swap. Only what you change from the defaults needs to be here;
# command-line flags override these. See `changeling <command> --help` for every setting.

[extract]
# size = 256
# face_type = "whole"

[train]
# preset = "tiny"
# batch_size = 0        # 0: fit to memory

[convert]
# color = "rct"
"""


@dataclass(frozen=True)
class Project:
    """Paths of one project folder. Construct with :func:`open_project` or :func:`init_project`."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    def faces_dir(self, side: str) -> Path:
        return self.root / "faces" / side

    @property
    def alignments_dir(self) -> Path:
        return self.root / "alignments"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def previews_dir(self) -> Path:
        return self.root / "previews"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def ensure_dirs(self) -> None:
        for sub in _SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)


def init_project(root: Path) -> Project:
    """Create a project folder (or complete an existing one) with a commented ``changeling.toml``."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError("exists and is not a folder", root)
    try:
        project = Project(root)
        project.ensure_dirs()
        if not project.config_path.exists():
            tmp = project.config_path.with_suffix(".toml.tmp")
            tmp.write_text(_TEMPLATE, encoding="utf-8")
            tmp.replace(project.config_path)
    except PermissionError:
        raise UserError("cannot create the project folder here (permission denied)", root) from None
    return project


def open_project(root: Path, *, create: bool = False) -> Project:
    """Open a project folder; it is a project when it holds ``changeling.toml`` (or ``create`` is set)."""
    root = Path(root)
    project = Project(root)
    if not project.config_path.exists():
        if create:
            return init_project(root)
        raise UserError(f"not a changeling project (no {CONFIG_NAME}); create one with `changeling init {root}`",
                        root)
    project.settings()  # validate early: a bad setting is reported before any work starts
    return project
