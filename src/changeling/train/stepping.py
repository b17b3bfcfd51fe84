"""The parts of one training step around its forward and backward (which :mod:`changeling.train.loop` runs):
the augmented batch of a step, the pair model's reconstruction the detail stage learns from, and the update
(clip, optimizer step, EMA), compiled on GPUs with an eager fallback."""

from __future__ import annotations

import logging

import torch

from changeling.models.pair import PairModel
from changeling.train.augment import Augmented, augment
from changeling.train.distributed import rank_slice
from changeling.train.losses import LossWeights, face_loss
from changeling.train.state import LossFn, TrainerState
from changeling.types import Side

log = logging.getLogger(__name__)


def step_seed(seed: int, step: int) -> int:
    """Seed of the augmentation generator for one step."""
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63)


def rank_seed(seed: int, rank: int) -> int:
    """A step's seed for one of several processes: each rank augments its own slice with its own numbers."""
    return (seed + 1_000_003 * rank) % 2**63


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is running out of memory (GPU, or a CPU allocation that failed)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def chunk(x: Augmented, sl: slice) -> Augmented:
    """Faces ``sl`` of an augmented batch."""
    return Augmented(x.input[sl], x.target[sl], x.masks[sl])


def make_loss_fn(model: PairModel, weights: LossWeights, amp: bool, channels_last: bool) -> LossFn:
    """The forward pass and both sides' losses as one function (what ``torch.compile`` compiles)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def losses(a_in: torch.Tensor, b_in: torch.Tensor, a_tgt: torch.Tensor, b_tgt: torch.Tensor,
               a_masks: torch.Tensor, b_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(a_in.device.type, dtype=torch.bfloat16, enabled=amp):
            out_a, out_b = model.forward_pair(a_in.contiguous(memory_format=fmt), b_in.contiguous(memory_format=fmt))
        return face_loss(out_a, a_tgt, a_masks, weights), face_loss(out_b, b_tgt, b_masks, weights)

    return losses


class StepParts(TrainerState):
    """The batch, the detail stage's input and the update of a :class:`~changeling.train.loop.Trainer`."""

    def _batch_of(self, ia: torch.Tensor, ib: torch.Tensor, step: int) -> tuple[Augmented, Augmented]:
        """Faces ``ia`` of A and ``ib`` of B, augmented with the draws of ``step``."""
        xa, ma = self.faces_a.gather(ia, self.device)
        xb, mb = self.faces_b.gather(ib, self.device)
        seed = step_seed(self.settings.seed, step)
        if self.dist is not None:
            seed = rank_seed(seed, self.dist.rank)
        self.gen.manual_seed(seed)
        out = augment(torch.cat([xa, xb]), torch.cat([ma, mb]), self.augment, self.gen, self.apply_augment)
        n = xa.shape[0]
        return chunk(out, slice(0, n)), chunk(out, slice(n, None))

    def next_batch(self) -> tuple[Augmented, Augmented]:
        """The augmented batch of the next step (advances the samplers)."""
        n = self.batch_size * self.world  # the global batch: every rank draws it and takes its own slice
        ia, ib = self.sampler_a.next(n), self.sampler_b.next(n)
        return self._batch_of(rank_slice(ia, self.dist), rank_slice(ib, self.dist), self.step)

    def _reconstruct(self, faces: torch.Tensor, side: Side) -> torch.Tensor:
        """The pair model's rendering of ``faces`` as ``side`` (the detail stage's input; no gradients)."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.no_grad(), torch.autocast(faces.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model(faces.contiguous(memory_format=fmt), side).face

    def _first_update(self) -> None:
        """The first compiled update; from then on the compiled one, or the eager one if it cannot compile."""
        before = self._optimizer_steps()
        try:
            self._compiled_update()
            self._update_fn = self._compiled_update
        except Exception as exc:  # noqa: BLE001 - compiler failures have many types; memory errors do not fall back
            if is_oom(exc):
                raise
            log.warning("the compiled optimizer step failed (%s: %s); using the eager one", type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
            self._update_fn = self._update
            # the compiled code runs in pieces: if the optimizer's piece ran before the failure, this step's
            # update is in (the EMA may lag one step); else do it eagerly
            if self._optimizer_steps() == before:
                self._update()

    def _optimizer_steps(self) -> float:
        """The optimizer's step count summed over its parameters (a sync; read once, at the first update)."""
        return sum(float(st["step"]) for st in self.optimizer.state.values() if "step" in st)

    def _update(self) -> None:
        """Clip the gradients, step the optimizer, follow with the EMA weights (compiled with the step on GPUs)."""
        if self.settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip, foreach=True)
        self.optimizer.step()
        if self.ema is not None:
            ema_p: list[torch.Tensor] = list(self.ema.parameters())
            torch._foreach_lerp_(ema_p, [p.detach() for p in self.model.parameters()], 1 - self.settings.ema)
