"""What a trainer shows: the losses read every few steps (the non-finite check, the progress bar, the metrics
and event logs) and the previews (grid, timelapse frame, the full-frame hook)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from changeling.models.detail import DetailedModel
from changeling.train.distributed import mean_across
from changeling.train.precision import memory_bytes
from changeling.train.preview import sample_indices, write_preview
from changeling.train.state import NonFiniteLoss, TrainerState

log = logging.getLogger(__name__)

PREVIEW_SAMPLES = 4  # sample faces per side in the preview grid
HISTORY_KEEP = 20_000  # loss history entries kept in the checkpoint


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Reporting(TrainerState):
    """Losses, metrics and previews of a :class:`~changeling.train.loop.Trainer`."""

    def _flush(self, bar_: Any, t_mark: float, examples: int) -> None:
        """Read the pending losses (one sync); raise :class:`NonFiniteLoss` if any is not finite; log them."""
        if not self.pending and not self.pending_detail:
            return
        pair, detail = self._read_pending(self.pending), self._read_pending(self.pending_detail)
        self.pending, self.pending_detail = [], []
        dt = max(1e-9, time.perf_counter() - t_mark)
        self.examples_per_s = examples / dt
        record: dict[str, Any] = {"step": self.step, "time": time.time()}
        if pair is not None:
            la, lb = pair
            self.last_losses = (la, lb)
            self.history.append((self.step, la, lb))
            del self.history[:-HISTORY_KEEP]
            record.update(loss_a=la, loss_b=lb, lr=self.lr())
        if detail is not None:
            self.last_detail_losses = detail
            record.update(detail_a=detail[0], detail_b=detail[1])
        if self.is_main:
            record.update(examples_per_s=self.examples_per_s, batch_size=self.batch_size * self.world,
                          micro_batch=self.micro_batch, world_size=self.world,
                          memory_mb=memory_bytes(self.device) / 2**20)
            self.metrics.write(record)
            self.events.scalars(self.step, {k: v for k, v in record.items() if k not in ("step", "time")}, "train/")
        bar_.update(self.step - bar_.n)
        shown = [f"loss A {pair[0]:.4f} B {pair[1]:.4f}"] if pair is not None else []
        if detail is not None:
            shown.append(f"detail A {detail[0]:.4f} B {detail[1]:.4f}")
        bar_.set_postfix_str(" ".join(shown) + f" {self.examples_per_s:.1f} ex/s")

    def _read_pending(self, pending: list[torch.Tensor]) -> tuple[float, float] | None:
        """The mean of pending (2,) losses over the steps and ranks; :class:`NonFiniteLoss` if any is not
        finite; ``None`` when there are none."""
        if not pending:
            return None
        vals = mean_across(torch.stack(pending), self.dist).cpu()  # (k, 2), averaged over the ranks
        if not bool(torch.isfinite(vals).all()):
            raise NonFiniteLoss(f"loss is not finite by step {self.step}")
        a, b = (float(v) for v in vals.mean(0))
        return a, b

    def inference_model(self) -> torch.nn.Module:
        """What the previews render with: the EMA weights when kept, behind the detail stage when there is one."""
        model = self.ema if self.ema is not None else self.model
        return DetailedModel(model, self.detail.stage) if self.detail is not None else model

    def _preview_stored(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The preview's sample faces at the detail stage's size, as stored (None without a stage)."""
        if self.detail is None:
            return None, None
        return (self.detail.faces["A"][sample_indices(self.detail.faces["A"].shape[0], PREVIEW_SAMPLES)],
                self.detail.faces["B"][sample_indices(self.detail.faces["B"].shape[0], PREVIEW_SAMPLES)])

    def preview(self) -> None:
        """Write the preview grid and timelapse frame, then call the frame preview hook (errors there are logged)."""
        if not self.is_main:
            return
        model = self.inference_model()
        try:
            grid = write_preview(model, self.preview_a, self.preview_b, self.paths.previews_dir, self.step,
                                 *self._preview_stored())
            if self.events.active:
                from PIL import Image

                with Image.open(grid) as img:
                    self.events.image("preview", np.asarray(img.convert("RGB")), self.step)
        except OSError as exc:
            log.warning("could not write the preview of step %d (%s)", self.step, exc.strerror or exc)
        if self.frame_preview is not None:
            try:
                self.frame_preview(model, self.step, self.paths.previews_dir)
            except Exception:  # noqa: BLE001 - a preview must never stop training
                log.exception("frame preview failed at step %d", self.step)
