"""Training the detail stage beside the pair model.

Each detail step takes a few faces of each side at the stage's output size, reduces them to the model's
resolution (box averaging: the same pixels the pair model trains on), runs them through the pair model without
gradients (each person's own reconstruction, the kind of face convert will hand the stage), and teaches each
identity's network to turn a patch of that reconstruction into the same patch of the real face. Patches,
because the networks are fully convolutional: a quarter of the face teaches the same mapping at a quarter of
the cost. The only augmentation is a horizontal flip, so the targets are the stored pixels, never resampled
(a resampled target would teach softness).

Randomness comes from a generator seeded with (seed, step), so a resumed run draws the same patches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from changeling.models.detail import SCALES, DetailConfig, DetailStage
from changeling.train.losses import masked_dssim
from changeling.types import Side

PATCH = 32  # input patch side at the model's resolution (the whole face when that is smaller)
BATCH = 8  # faces per side per detail step
LR = 1e-3
CRITIC_LR = 4e-4
CRITIC_BETAS = (0.5, 0.999)
BACKGROUND = 0.25  # loss weight of the pixels outside the face mask
SCALE_FOR = ((64, 4), (128, 2))  # model resolution up to -> the largest scale "auto" picks


def auto_scale(resolution: int, stored_size: int) -> int:
    """The scale ``detail = "auto"`` gives a model of ``resolution`` px trained on faces stored at
    ``stored_size`` px: 4x up to 64 px, 2x up to 128 px, never past the stored faces; 0 (no stage) when not
    even 2x fits."""
    wanted = next((s for r, s in SCALE_FOR if resolution <= r), 0)
    return max((s for s in SCALES if s <= wanted and resolution * s <= stored_size), default=0)


def detail_config_for(choice: str, resolution: int, stored_size: int) -> DetailConfig | None:
    """The detail stage the ``detail`` setting asks for ("auto", "off", "2x", "4x"); ``None`` for none.
    ``ValueError`` when the faces are stored too small for the scale asked for."""
    if choice == "off":
        return None
    scale = auto_scale(resolution, stored_size) if choice == "auto" else int(choice.rstrip("x"))
    if scale == 0:
        return None
    if resolution * scale > stored_size:
        raise ValueError(f"a {scale}x detail stage needs faces stored at {resolution * scale} px or more, and "
                         f"these faces are {stored_size} px (extract with --size {resolution * scale})")
    return DetailConfig(resolution=resolution, scale=scale)


class BothSides(nn.Module):
    """One detail step's forward for both identities (what DistributedDataParallel wraps): each network enlarges
    its patches; with ``gan`` > 0 each critic also scores them. Returns the enlarged patches, the generators'
    adversarial terms (the critics' weights held constant for them) and the critics' hinge losses."""

    def __init__(self, stage: DetailStage) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, xa: torch.Tensor, xb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor, gan: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out_a, out_b = self.stage(xa, "A"), self.stage(xb, "B")
        zero = out_a.new_zeros(())
        if not gan:
            return out_a, out_b, zero, zero
        adv, critic = zero, zero
        for critic_net, out, real in ((self.stage.critic_a, out_a, ya), (self.stage.critic_b, out_b, yb)):
            frozen = {n: p.detach() for n, p in critic_net.named_parameters()}
            adv = adv - torch.func.functional_call(critic_net, frozen, (out,)).float().mean()
            critic = critic + F.relu(1 - critic_net(real).float()).mean() + \
                F.relu(1 + critic_net(out.detach()).float()).mean()
        return out_a, out_b, adv, critic


def detail_loss(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted L1 plus DSSIM of enlarged patches (B, 3, P, P) against the real ones, under per-pixel
    ``weights`` (B, 1, P, P); scalar float32 (each face counts the same)."""
    with torch.autocast(out.device.type, enabled=False):
        out, target, weights = out.float(), target.float(), weights.float()
        wsum = (weights.sum((1, 2, 3)) * 3).clamp_min(1e-8)
        l1 = (((out - target).abs() * weights).sum((1, 2, 3)) / wsum).mean()
        return l1 + masked_dssim(out, target, weights)


Reconstruct = Callable[[torch.Tensor, Side], torch.Tensor]  # faces (B, 3, R, R) as side -> (B, 3, R, R)


class DetailTrainer:
    """The detail stage, its optimizer and its faces; :meth:`step` is one detail step.

    ``faces[side]``: (N, 3, sR, sR) uint8 faces at the stage's output size and ``masks[side]`` (N, 1, sR, sR)
    uint8 face masks (255 inside), on any device; batches are moved to ``device``.
    """

    def __init__(self, stage: DetailStage, faces: dict[Side, torch.Tensor], masks: dict[Side, torch.Tensor],
                 device: torch.device, *, lr: float = LR, batch: int = BATCH, patch: int = PATCH,
                 wrap: Callable[[nn.Module], nn.Module] | None = None) -> None:
        size = stage.config.output_resolution
        for side in ("A", "B"):
            f, m = faces[side], masks[side]  # type: ignore[index]
            if f.ndim != 4 or f.shape[1:] != (3, size, size) or f.dtype != torch.uint8:
                raise ValueError(f"faces of {side}: expected (N, 3, {size}, {size}) uint8, got {tuple(f.shape)}")
            if m.shape != (f.shape[0], 1, size, size) or m.dtype != torch.uint8:
                raise ValueError(f"masks of {side}: expected ({f.shape[0]}, 1, {size}, {size}) uint8, "
                                 f"got {tuple(m.shape)}")
        self.stage, self.faces, self.masks, self.device = stage, faces, masks, device
        self.batch, self.patch = batch, min(patch, stage.config.resolution)
        nets = [p for m in stage.nets() for p in m.parameters()]
        critics = [p for m in stage.critics() for p in m.parameters()]
        self.optimizer = torch.optim.AdamW([{"params": nets, "lr": lr, "base_lr": lr},
                                            {"params": critics, "lr": CRITIC_LR, "base_lr": CRITIC_LR,
                                             "betas": CRITIC_BETAS}], betas=(0.9, 0.999), weight_decay=0.0)
        self.nets = nets
        both = BothSides(stage)
        self.forward = wrap(both) if wrap is not None else both
        self.gen = torch.Generator(device=device)

    def _side_batch(self, side: Side, reconstruct: Reconstruct) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input patches, target patches, weights) of one side, drawn from ``self.gen``."""
        s, p, g = self.stage.config.scale, self.patch, self.gen
        faces = self.faces[side]
        idx = torch.randint(0, faces.shape[0], (self.batch,), generator=g, device=self.device).to(faces.device)
        high = faces.index_select(0, idx).to(self.device).float() / 255  # (B, 3, sR, sR)
        mask = self.masks[side].index_select(0, idx).to(self.device).float() / 255  # (B, 1, sR, sR)
        flip = (torch.rand((self.batch,), generator=g, device=self.device) < 0.5)[:, None, None, None]
        high, mask = torch.where(flip, high.flip(3), high), torch.where(flip, mask.flip(3), mask)
        with torch.no_grad():
            low = F.avg_pool2d(high, s)  # (B, 3, R, R): box averaging, as the pair model's faces are reduced
            rec = reconstruct(low, side).float().clamp(0, 1)
        r = low.shape[-1]
        oy, ox = (int(v) for v in torch.randint(0, r - p + 1, (2,), generator=g, device=self.device).tolist())
        window = (slice(None), slice(None), slice(s * oy, s * (oy + p)), slice(s * ox, s * (ox + p)))
        weights = mask[window].clamp_min(BACKGROUND)
        return rec[:, :, oy:oy + p, ox:ox + p].contiguous(), high[window], weights

    def set_lr(self, scale: float) -> None:
        """Every parameter group at ``scale`` times its base learning rate (the trainer's rollback scale)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale

    def step(self, reconstruct: Reconstruct, seed: int, *, amp: bool = False, clip: float = 1.0,
             gan: float = 0.0) -> torch.Tensor:
        """One detail step with patches drawn from a generator seeded with ``seed``; with ``gan`` > 0 the
        adversarial term at that weight (and the critics' own step). Returns the (2,) detached reconstruction
        losses of A and B."""
        self.gen.manual_seed(seed)
        xa, ya, wa = self._side_batch("A", reconstruct)
        xb, yb, wb = self._side_batch("B", reconstruct)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            out_a, out_b, adv, critic = self.forward(xa, xb, ya, yb, gan > 0)  # type: ignore[operator]
        loss_a, loss_b = detail_loss(out_a, ya, wa), detail_loss(out_b, yb, wb)
        (loss_a + loss_b + gan * adv + critic).backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.nets, clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return torch.stack([loss_a.detach(), loss_b.detach()])
