"""TensorBoard event files in the project's ``logs/`` folder, when a writer is installed (``pip install
'changeling[tensorboard]'`` gives tensorboardX; the ``tensorboard`` package's own writer is used when that is
present instead). Without one nothing is written and nothing fails: ``logs/metrics.jsonl`` stays the record
that is always kept. View them with ``tensorboard --logdir PROJECT/logs``.

Training writes its losses, learning rate and speed, and the preview grid; ``changeling evaluate`` writes the
view-size scores of each checkpoint at that checkpoint's step.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _writer_class() -> Any:
    """The first SummaryWriter that imports: PyTorch's (needs ``tensorboard``), then tensorboardX's; else None."""
    try:
        import tensorboard  # noqa: F401 - PyTorch's writer needs it
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    try:
        from tensorboardX import SummaryWriter as XWriter

        return XWriter
    except ImportError:
        return None


def available() -> bool:
    """Whether event files can be written here."""
    return _writer_class() is not None


class EventLog:
    """Scalars and images for TensorBoard under ``logs_dir``; every call is a no-op without a writer, and a
    write error is logged once and never stops training."""

    def __init__(self, logs_dir: Path, *, enabled: bool = True) -> None:
        self._writer: Any = None
        self._failed = False
        cls = _writer_class() if enabled else None
        if cls is None:
            return
        try:
            Path(logs_dir).mkdir(parents=True, exist_ok=True)
            self._writer = cls(str(logs_dir))
        except Exception as exc:  # noqa: BLE001 - logs are never worth failing a run for
            log.warning("no TensorBoard events (%s)", exc)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "") -> None:
        """One scalar per finite number in ``values`` (others are skipped), tagged ``prefix + name``."""
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            self._call("add_scalar", prefix + name, float(value), int(step))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 RGB image."""
        self._call("add_image", tag, np.ascontiguousarray(image), int(step), dataformats="HWC")

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")
        self._writer = None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._writer is None:
            return
        try:
            getattr(self._writer, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop training
            if not self._failed:
                log.warning("could not write TensorBoard events (%s)", exc)
            self._failed = True
