"""Issue 16, fourth stop: levers against the swap's generalisation gap that the quality bench's variants cannot
name, because they change the model's shape or the training footage rather than a training setting.

    python bench/quality_levers.py --root DIR --budget 600 demo demo-liae demo-clips60at5 ...
    python bench/quality_levers.py --diagnose PROJECT/model

``--diagnose`` splits one trained model's swap loss on the held-out motion: B's truth at the model's resolution
(the ceiling), B->B (B in the unseen motion: rendering without crossing identities), A->B (the swap) and A->B
after an oracle colour match (each channel's gain and offset fitted to the truth inside the mask, per frame).

Each variant trains from scratch with the demo's settings (``DEMO_TRAIN["tiny"]``), the same seed and the same
wall-time budget, one after another, and is scored like ``python -m changeling.bench.quality`` (it calls that
module's ``run_variant``). What a variant changes:

- ``demo``: nothing (the control: the demo's faces, 12 s of training motion at 25 fps, 300 faces per side).
- ``demo-clips60at5``: the training clips cover 60 s of motion at 5 fps, so the same 300 faces per side show five
  times as many distinct poses, expressions and lights.
- ``demo-liae``: tiny's widths and kernels in the LIAE arrangement (one shared decoder; per-identity inter layers),
  where the decoder that renders B also learns from A's codes.
- ``demo-lite-liae``: the same for the ``lite`` preset's 128 px shape (now the ``lite-liae`` preset; it ran in the
  ``original`` slot before that existed).
- ``demo-lite-liae-b8``: that, with 8 faces per side per step.
- ``demo-lite-liae-b8-ema``: that, scored with an exponential moving average of the weights (0.995), against its
  jitter.
- ``demo-lite-liae-b8-ema-clips24at25``, ``...-clips60at5``: what the demo trains now (``lite-liae`` with 8 faces
  per side and EMA) on twice the training motion at the demo's 25 fps (600 faces per side), and on five times
  the motion in 300 faces.
- ``demo-ae64``, ``demo-b8``: a narrower bottleneck (64), and 8 faces per side per step instead of 16.
- ``demo-conf0.3``: an identity critic on the bottleneck's code. A small classifier learns, on detached codes,
  to tell A's from B's; the encoder learns to make it answer one half for both (cross-entropy against 0.5 through
  the critic's frozen weights), so that A's codes look to B's decoder like the codes it was trained on. Weight
  0.3 on the sum of both terms.
- ``demo-rev0.3``: the same critic through a gradient reversal (the encoder maximises the critic's loss). It
  diverges: the encoder makes the critic confidently wrong without bound (loss 4e3 by step 300).

The experimental shape (tiny as LIAE) and the critic live in this file only. The shape is registered for this
process in the slot of ``liae`` (the same arch; the checkpoint stores its full config, which is what scoring
loads); the critic replaces the trainer's loss function for its variants, in float32 (it ignores the trainer's
autocast; the quality bench trains in float32 on the CPU anyway). Neither is part of changeling.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changeling.bench import quality
from changeling.config.demo import DEMO_TRAIN
from changeling.models import registry
from changeling.models.pair import ModelConfig

log = logging.getLogger("quality_levers")


def _liae_of(build: Callable[[registry.Dims], ModelConfig]) -> Callable[[registry.Dims], ModelConfig]:
    """A preset's shape with the LIAE arrangement instead of DF."""
    def make(d: registry.Dims) -> ModelConfig:
        from dataclasses import replace
        return replace(build(d), arch="liae")
    return make


# preset slot -> the experimental shape registered there for this process (the slot's arch must match)
SHAPES: dict[str, registry.Preset] = {
    "liae": registry.Preset("tiny's shape as LIAE (experiment)", registry.PRESETS["tiny"].defaults,
                            _liae_of(registry.PRESETS["tiny"].build), 256),
}
DEMO = DEMO_TRAIN["tiny"]
# variant -> (training overrides, training clips as (seconds, fps) or None for the demo's)
LEVERS: dict[str, tuple[dict[str, Any], tuple[float, float] | None]] = {
    "demo": (DEMO, None),
    "demo-clips60at5": (DEMO, (60.0, 5.0)),
    "demo-liae": ({**DEMO, "preset": "liae"}, None),
    "demo-lite-liae": ({**DEMO, "preset": "lite-liae"}, None),
    "demo-lite-liae-b8": ({**DEMO, "preset": "lite-liae", "batch_size": 8}, None),
    "demo-lite-liae-b8-ema": ({**DEMO, "preset": "lite-liae", "batch_size": 8, "ema": 0.995}, None),
    # sixth stop: more training motion for what the demo trains now (LIAE crosses identities better than tiny)
    "demo-lite-liae-b8-ema-clips24at25": ({**DEMO, "preset": "lite-liae", "batch_size": 8, "ema": 0.995},
                                          (24.0, 25.0)),
    "demo-lite-liae-b8-ema-clips60at5": ({**DEMO, "preset": "lite-liae", "batch_size": 8, "ema": 0.995},
                                         (60.0, 5.0)),
    "demo-ae64": ({**DEMO, "ae_dims": 64}, None),
    "demo-b8": ({**DEMO, "batch_size": 8}, None),
    "demo-conf0.3": ({**DEMO, "critic": 0.3}, None),
    "demo-rev0.3": ({**DEMO, "critic": -0.3}, None),  # negative: the gradient reversal
}


class _Reverse(torch.autograd.Function):
    """Identity forward; the gradient's sign flipped backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return -g


def critic_loss_fn(weight: float) -> Callable[..., Any]:
    """A replacement for the trainer's ``make_loss_fn`` (DF models on the CPU): each side's loss plus half of
    ``|weight|`` times the identity critic's terms. ``weight > 0``: the critic learns on detached codes and the
    encoder is scored by cross-entropy against 0.5 through the critic's detached weights; ``weight < 0``: one
    cross-entropy through a gradient reversal. The critic (dense code -> 64 -> 1) steps its own Adam at the
    start of the next call, from the gradients the trainer's backward left on it."""
    from changeling.train.losses import face_loss

    def make(model: Any, weights: Any, amp: bool, channels_last: bool) -> Callable[..., Any]:
        torch.manual_seed(1234)
        critic = nn.Sequential(nn.Linear(model.config.dense, 64), nn.LeakyReLU(0.1), nn.Linear(64, 1))
        opt = torch.optim.Adam(critic.parameters(), lr=1e-3)

        def frozen(code: torch.Tensor) -> torch.Tensor:
            hidden = F.leaky_relu(F.linear(code, critic[0].weight.detach(), critic[0].bias.detach()), 0.1)
            return F.linear(hidden, critic[2].weight.detach(), critic[2].bias.detach()).squeeze(1)

        def losses(a_in: torch.Tensor, b_in: torch.Tensor, a_tgt: torch.Tensor, b_tgt: torch.Tensor,
                   a_masks: torch.Tensor, b_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if critic[0].weight.grad is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
            n, inter = a_in.shape[0], model.inter
            code = inter.fc1(model.encoder(torch.cat([a_in, b_in], 0)))
            z = inter.up(inter.fc2(code).view(-1, inter.channels, inter.seed, inter.seed))
            labels = torch.cat([torch.zeros(n), torch.ones(len(code) - n)])
            if weight > 0:
                adv = (F.binary_cross_entropy_with_logits(critic(code.detach()).squeeze(1), labels)
                       + F.binary_cross_entropy_with_logits(frozen(code), torch.full_like(labels, 0.5)))
            else:
                adv = F.binary_cross_entropy_with_logits(critic(_Reverse.apply(code)).squeeze(1), labels)
            adv = adv * abs(weight) / 2
            return (face_loss(model.decoder_a(z[:n]), a_tgt, a_masks, weights) + adv,
                    face_loss(model.decoder_b(z[n:]), b_tgt, b_masks, weights) + adv)
        return losses
    return make


def prepare_clips(root: Path, seconds: float, fps: float) -> Path:
    """The demo's clips rendered with ``seconds`` of training motion at ``fps`` and extracted (made once)."""
    from changeling.config import ExtractSettings
    from changeling.demo import sample_clips
    from changeling.evaluate.paired import PairedSpec
    from changeling.extract import extract
    from changeling.project import init_project

    project = init_project(root / f"faces-clips{seconds:g}at{fps:g}")
    clips = sample_clips(project, PairedSpec(), progress=False, seconds=seconds, fps=fps)
    for side in ("A", "B"):
        extract(project, side, [clips[side]], ExtractSettings(device="cpu"), progress=False)
    return project.root


def diagnose(model_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``--diagnose`` (see the module docstring) for the model in ``model_dir``."""
    import numpy as np

    from changeling.evaluate.paired import PairedSpec, make_paired_data, score_outputs, swap_faces
    from changeling.models.load import load_for_inference

    model, info = load_for_inference(model_dir, "cpu")
    data = make_paired_data(PairedSpec(), info.resolution, info.face_type)
    swap = swap_faces(model, data.a, "B")
    matched = swap.copy()
    for t in range(len(matched)):
        inside = data.masks[t] > 0.5
        for c in range(3):
            x = matched[t][..., c]
            gain, offset = np.polyfit(x[inside], data.b[t][..., c][inside], 1)
            matched[t][..., c] = np.clip(x * gain + offset, 0, 1)
    rows = []
    for name, out in (("truth", data.b), ("B->B", swap_faces(model, data.b, "B")), ("A->B", swap),
                      ("A->B, oracle colour", matched)):
        sc = score_outputs(out, data, landmarks=False)
        rows.append({"output": name, "view_ssim": round(sc.view_ssim, 3), "ssim": round(sc.ssim, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="*", help=f"any of: {', '.join(LEVERS)}")
    p.add_argument("--root", type=Path, help="folder for the faces and the trained projects")
    p.add_argument("--diagnose", type=Path, metavar="MODEL_DIR", help="split this model's swap loss instead")
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per variant")
    p.add_argument("--seed", type=int, default=0, help="the training seed of every variant")
    p.add_argument("--steps", type=int, default=0, help="train each variant this many steps (0: by --budget)")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    registry.PRESETS.update(SHAPES)
    if args.diagnose is not None:
        print(json.dumps(diagnose(args.diagnose), indent=1))
        return 0
    if not args.variants or args.root is None:
        p.error("name the variants and --root (or --diagnose MODEL_DIR)")
    unknown = [v for v in args.variants if v not in LEVERS]
    if unknown:
        p.error(f"unknown variants {', '.join(unknown)}; known: {', '.join(LEVERS)}")
    faces: dict[tuple[float, float] | None, Path] = {}
    for name in args.variants:  # every set of faces first, so no extraction runs between trainings
        clips = LEVERS[name][1]
        if clips not in faces:
            faces[clips] = quality.prepare(args.root, "cpu") if clips is None else prepare_clips(args.root, *clips)
    from changeling.train import loop

    plain = loop.make_loss_fn
    rows = []
    for name in args.variants:
        overrides, clips = LEVERS[name]
        critic = overrides.get("critic", 0.0)
        loop.make_loss_fn = critic_loss_fn(critic) if critic else plain  # type: ignore[assignment]
        log.info("levers: training %s for %s", name, f"{args.steps} steps" if args.steps else f"{args.budget:.0f} s")
        rows.append(quality.run_variant(name, {k: v for k, v in overrides.items() if k != "critic"}, faces[clips],
                                        args.root, budget_s=0.0 if args.steps else args.budget, device="cpu",
                                        seed=args.seed, steps=args.steps))
        log.info("levers: %s", rows[-1])
    quality.emit(rows, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
