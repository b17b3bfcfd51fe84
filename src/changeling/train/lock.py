"""One trainer per model folder."""

from __future__ import annotations

from pathlib import Path

from changeling.locks import ProcessLock

LOCK_NAME = ".train.lock"


class TrainLock(ProcessLock):
    """An exclusive lock on a model folder (``flock``, see :mod:`changeling.locks`; released when the process
    dies)."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__(Path(model_dir) / LOCK_NAME, lambda pid: f"another trainer (process {pid}) is training "
                         "this model; stop it first or wait", Path(model_dir))

    def __enter__(self) -> TrainLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__enter__()
        return self
