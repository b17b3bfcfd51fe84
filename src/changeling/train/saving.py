"""A trainer's checkpoints: saving the whole state of a run, restoring it exactly (resume), and rolling back to
the newest checkpoint when the loss or the weights stop being finite."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import torch

from changeling.errors import ChangelingError
from changeling.models import checkpoint as mck
from changeling.train import checkpoint as ck
from changeling.train.distributed import barrier
from changeling.train.logs import plot_losses
from changeling.train.state import NonFiniteLoss, TrainerState

log = logging.getLogger(__name__)

MAX_ROLLBACKS = 6  # consecutive rollbacks before giving up


class Checkpointing(TrainerState):
    """Save, restore and roll back a :class:`~changeling.train.loop.Trainer`."""

    def _check_finite(self) -> None:
        """Raise :class:`NonFiniteLoss` if any weight is not finite (one sync)."""
        params = list(self.model.parameters()) + (list(self.detail.stage.parameters()) if self.detail else [])
        if not bool(torch.stack([p.detach().isfinite().all() for p in params]).all()):
            raise NonFiniteLoss(f"weights are not finite at step {self.step}")

    def save(self) -> Path | None:
        """Write a checkpoint of the current state (not if the weights are not finite)."""
        self._check_finite()
        trainer = {"lr_scale": self.lr_scale, "history": [list(h) for h in self.history],
                   "samplers": {"A": self.sampler_a.state(), "B": self.sampler_b.state()},
                   "elapsed": self.elapsed_before + (time.perf_counter() - self._t_start),
                   "batch_size": self.batch_size, "micro_batch": self.micro_batch, "rollbacks": self.rollbacks,
                   "amp": self.amp}
        path: Path | None = None
        if self.is_main:  # with several processes rank 0 writes; the weights are the same on every rank
            req = ck.SaveRequest(step=self.step, weights=self.model.state_dict(),
                                 optimizer={**ck.optimizer_tensors(self.optimizer, self.model), **ck.rng_tensors()},
                                 ema=self.ema.state_dict() if self.ema is not None else None, trainer=trainer,
                                 settings=dataclasses.asdict(self.settings), detail=self._detail_save())
            path = ck.save_checkpoint(self.paths.model_dir, self.preset, self.config, self.face_type, req,
                                      keep_last=self.settings.keep_last, snapshot_every=self.settings.snapshot_every)
            try:
                plot_losses(self.history, self.paths.logs_dir / "loss.png")
            except OSError as exc:
                log.warning("could not write the loss plot (%s)", exc.strerror or exc)
        barrier(self.dist)  # the other ranks may read this checkpoint (rollback) only once it exists
        if path is None:
            path = mck.latest_checkpoint(self.paths.model_dir)
        self.last_saved_step, self.last_saved_path = self.step, path
        return path

    def _detail_save(self) -> ck.DetailSave | None:
        if self.detail is None:
            return None
        stage = self.detail.stage
        return ck.DetailSave(config=stage.config, weights=stage.state_dict(),
                             optimizer=ck.optimizer_tensors(self.detail.optimizer, stage))

    def _restore(self, loaded: mck.LoadedCheckpoint, *, first: bool) -> None:
        """Load weights, optimizer, RNG and trainer state from a verified checkpoint."""
        path = loaded.info.path
        mck.load_weights(self.model, loaded.weights, path / mck.WEIGHTS)
        ck.load_optimizer_tensors(self.optimizer, self.model, loaded.optimizer, path / mck.OPTIMIZER)
        ck.restore_rng(loaded.optimizer)
        self.ema = None
        if self.settings.ema > 0:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
            if loaded.ema is not None:
                mck.load_weights(self.ema, loaded.ema, path / mck.EMA)
        if self.detail is not None and loaded.detail is not None:
            mck.load_weights(self.detail.stage, loaded.detail.weights, path / mck.DETAIL)
            ck.load_optimizer_tensors(self.detail.optimizer, self.detail.stage, loaded.detail.optimizer,
                                      path / mck.DETAIL_OPTIMIZER)
        trainer = loaded.state.get("trainer", {})
        self.step = loaded.info.step
        saved_settings = loaded.state.get("settings", {})
        self.lr_scale = float(trainer.get("lr_scale", 1.0))
        if first and saved_settings.get("lr") != self.settings.lr:
            self.lr_scale = 1.0  # the user chose a new learning rate: use it as given
        self.history = [(int(h[0]), float(h[1]), float(h[2])) for h in trainer.get("history", [])]
        self.elapsed_before = float(trainer.get("elapsed", 0.0))
        samplers = trainer.get("samplers", {})
        if "A" in samplers:
            self.sampler_a.load_state(samplers["A"])
        if "B" in samplers:
            self.sampler_b.load_state(samplers["B"])
        if first:
            now = dataclasses.asdict(self.settings)
            self.changed = {k: (saved_settings[k], v) for k, v in now.items()
                            if k in saved_settings and saved_settings[k] != v and k not in ("max_steps", "max_time")}
            if self.changed:
                log.info("settings changed on resume: %s",
                         ", ".join(f"{k} {a} -> {b}" for k, (a, b) in self.changed.items()))
            log.info("resuming at step %d from %s", self.step, path)

    def rollback(self, reason: str) -> None:
        """Return to the newest checkpoint and halve the learning rate."""
        self.rollbacks += 1
        self.pending, self.pending_detail = [], []
        self.optimizer.zero_grad(set_to_none=True)
        if self.rollbacks > MAX_ROLLBACKS:
            raise ChangelingError(f"{reason}; {MAX_ROLLBACKS} rollbacks did not help (learning rate now "
                                  f"{self.lr():.2e}); lower --lr or check the faces")
        latest = mck.latest_checkpoint(self.paths.model_dir)
        if latest is None:
            raise ChangelingError(f"{reason} and there is no checkpoint to roll back to")
        scale = self.lr_scale
        bad_step = self.step
        now = time.perf_counter()
        elapsed = self.elapsed_before + (now - self._t_start)  # training time counts the lost steps too
        self._restore(mck.read_checkpoint(latest), first=False)
        self.elapsed_before, self._t_start = elapsed, now
        self.lr_scale = min(scale, self.lr_scale) * 0.5
        log.warning("%s at step %d: rolled back to step %d and lowered the learning rate to %.2e", reason, bad_step,
                    self.step, self.lr())
