"""Swap quality per minute of training: the demo's pair (sample clips of the two portraits, extracted once per face
type) trained under named variants of the training settings with the same seed, the same time budget and the same machine,
one after another in one run, each scored on the paired benchmark's held-out motion at the view size.

``changeling bench quality-ab`` runs the default variants with the demo's 10-minute budget (200 s with
``--quick``); ``python -m changeling.bench.quality --variants ... --budget SECONDS`` runs any of them. The
training time counts everything a user's run spends (previews and checkpoints included), as the demo does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from changeling.config.demo import DEMO_PRESET, DEMO_TRAIN
from changeling.evaluate.paired import PairedSpec

log = logging.getLogger(__name__)

LR2E3: dict[str, Any] = {"lr": 2e-3, "detail": "off"}
# name -> TrainSettings overrides (and ExtractSettings' face_type); "default" is TrainSettings' own defaults, "demo"
# is `tiny` with the demo's settings for tiny (the name is older than the demo's move to lite-liae, and the recorded
# commands use it), "demo-lite-liae" what the demo trains now (DEMO_VARIANT)
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "demo": DEMO_TRAIN["tiny"],
    "demo+detail": {**DEMO_TRAIN["tiny"], "detail": "auto"},
    "no-detail": {"detail": "off"},
    "lr1e-3": {"lr": 1e-3},
    "lr1e-3-no-detail": {"lr": 1e-3, "detail": "off"},
    "lr2e-3": {"lr": 2e-3},
    "lr2e-3-no-detail": {"lr": 2e-3, "detail": "off"},
    "lr4e-3-no-detail": {"lr": 4e-3, "detail": "off"},
    "lr1e-3-gan": {"lr": 1e-3, "detail_gan": 0.1},
    "lr1e-3-detail-every-2": {"lr": 1e-3, "detail_every": 2},
    # pixels where they matter, and the learning rate's end: on the demo's choice before the anneal (lr 2e-3, no
    # detail stage); these ran as demo-full, demo-full-96, demo-anneal, ... before the demo took the anneal
    "lr2e-3-full": {**LR2E3, "face_type": "full"},
    "lr2e-3-full-96": {**LR2E3, "face_type": "full", "resolution": 96},
    "lr2e-3-96": {**LR2E3, "resolution": 96},
    "lr2e-3-anneal": {**LR2E3, "lr_anneal": 0.3},
    "lr2e-3-full-anneal": {**LR2E3, "face_type": "full", "lr_anneal": 0.3},
    "lr2e-3-full-96-anneal": {**LR2E3, "face_type": "full", "resolution": 96, "lr_anneal": 0.3},
    # third stop: the swap's generalisation to unseen motion (the training loss keeps falling while the held-out
    # view SSIM stays at ~0.51 after 800 steps): weight averaging, stronger warps, a wider bottleneck
    "demo-ema": {**DEMO_TRAIN["tiny"], "ema": 0.995},
    "demo-warp2": {**DEMO_TRAIN["tiny"], "warp": 2.0},
    "demo-ae256": {**DEMO_TRAIN["tiny"], "ae_dims": 256},
    "demo-warp0.5": {**DEMO_TRAIN["tiny"], "warp": 0.5},
    "demo-warp0": {**DEMO_TRAIN["tiny"], "warp": 0.0},
    # the lite preset: 128 px at about half tiny's speed (depthwise-separable upscales on the largest grids)
    "demo-lite": {**DEMO_TRAIN["tiny"], "preset": "lite"},
    "demo-lite-full": {**DEMO_TRAIN["tiny"], "preset": "lite", "face_type": "full"},
    # fourth stop: what `changeling demo --preset lite-liae` trains
    "demo-lite-liae": {**DEMO_TRAIN["lite-liae"], "preset": "lite-liae"},
    # sixth stop: lite-liae's learning rate (its 2e-3 was tiny's choice, taken over untested)
    "demo-lite-liae-lr1e-3": {**DEMO_TRAIN["lite-liae"], "preset": "lite-liae", "lr": 1e-3},
    "demo-lite-liae-lr3e-3": {**DEMO_TRAIN["lite-liae"], "preset": "lite-liae", "lr": 3e-3},
}
EXTRACT_KEYS = ("face_type",)  # overrides that change extraction (the faces are prepared once per value)
DEMO_VARIANT = {"tiny": "demo", "lite-liae": "demo-lite-liae"}[DEMO_PRESET]  # the variant `changeling demo` trains
AB_DEFAULT = ("demo", "demo-lite-liae")  # plain tiny with the demo's settings for it, and the demo's lite-liae
SCORE_KEYS = ("view_ssim", "view_detail", "view_psnr", "view_landmark_error", "view_jitter", "ssim",
              "landmark_error", "jitter", "recognisable", "is_convincing")


def prepare(root: Path, device: str, face_type: str = "whole") -> Path:
    """The demo's sample clips and faces extracted as ``face_type`` under ``root/faces-FACE_TYPE`` (made once,
    reused by every variant of that face type)."""
    from changeling.config import ExtractSettings
    from changeling.demo import sample_clips
    from changeling.evaluate.paired import PairedSpec
    from changeling.extract import extract
    from changeling.project import init_project

    project = init_project(root / f"faces-{face_type}")  # clips and extraction resume: a second call skips them
    clips = sample_clips(project, PairedSpec(), progress=False)
    for side in ("A", "B"):
        extract(project, side, [clips[side]], ExtractSettings(device=device, face_type=face_type),  # type: ignore[arg-type]
                progress=False)
    return project.root


def run_variant(name: str, overrides: dict[str, Any], faces_root: Path, root: Path, *, budget_s: float,
                device: str, seed: int = 0, identity: bool = True, steps: int = 0) -> dict[str, Any]:
    """Train one variant from scratch for ``budget_s`` seconds (or ``steps`` steps, whichever ends first; 0:
    no limit) on the prepared faces and score its newest checkpoint: the scores, the steps, and the training's
    wall and CPU seconds."""
    from changeling.config import ConvertSettings, TrainSettings
    from changeling.evaluate.paired import (
        PairedSpec,
        evaluate_model,
        make_paired_data,
        score_outputs,
        swap_faces,
    )
    from changeling.models.load import load_for_inference
    from changeling.project import init_project
    from changeling.train.loop import train

    project = init_project(root / name)
    for side in ("A", "B"):
        target = project.faces_dir(side)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(faces_root / "faces" / side, target)
    # fp32 fixed: with precision "auto" the trainer times bf16 against fp32 on the CPU, and on a loaded machine
    # that measurement can flip between variants (bf16 is about 5x slower on a quiet 2-core Xeon here)
    base = TrainSettings(device=device, seed=seed, max_time=budget_s, max_steps=steps, preview_every=100,  # type: ignore[arg-type]
                         save_every=100, snapshot_every=0, precision="fp32")
    settings = dataclasses.replace(base, **{k: v for k, v in overrides.items() if k not in EXTRACT_KEYS})
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(project, settings, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    model, info = load_for_inference(project.model_dir, device)
    data = make_paired_data(PairedSpec(), info.resolution, info.face_type)
    # scored as convert renders it (with its temporal face blending), and the model's raw outputs beside
    face_smooth = ConvertSettings().face_smooth
    scores, ident = evaluate_model(model, data, identity=identity, face_smooth=face_smooth)
    row = {k: v for k, v in scores.as_dict().items() if k in SCORE_KEYS}
    raw = score_outputs(swap_faces(model, data.a, "B"), data, landmarks=False)
    row.update(face_smooth=face_smooth, raw_view_ssim=raw.view_ssim, raw_view_detail=raw.view_detail,
               raw_view_jitter=raw.view_jitter)
    # the same person in the same unseen motion (B->B): how well the model renders B in new poses at all, so
    # that what the swap loses beyond it is the cost of crossing identities
    same = score_outputs(swap_faces(model, data.b, "B"), data, landmarks=False)
    row.update(b_to_b_view_ssim=same.view_ssim, b_to_b_ssim=same.ssim)
    row.update(is_convincing=scores.is_convincing(ident), variant=name, overrides=overrides, steps=result.step,
               train_s=round(wall, 1), cpu_s=round(cpu, 1), detail=info.detail.scale if info.detail is not None else 1,
               closer_to_B=ident["closer_to_B"] if ident else None)
    return row


def compare(variants: list[str], *, budget_s: float, device: str, seed: int = 0, identity: bool = True,
            keep: Path | None = None, cpu_clock: bool = False, steps: int = 0) -> list[dict[str, Any]]:
    """Every variant in turn, same seed and budget, on faces prepared once per face type; one row each. With ``cpu_clock``
    the budget is the process's CPU seconds (all threads) instead of wall seconds, so that variants run one
    after another on a machine others are loading get the same compute."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    from changeling.train import loop

    wall_clock = loop.BUDGET_CLOCK
    if cpu_clock:
        loop.BUDGET_CLOCK = time.process_time
    tmp = None if keep is not None else tempfile.TemporaryDirectory(prefix="changeling-quality-")
    root = Path(keep if keep is not None else tmp.name)  # type: ignore[union-attr]
    try:
        rows = []
        prepared: dict[str, Path] = {}  # face type -> its prepared faces, made once per run
        for name in variants:
            face_type = VARIANTS[name].get("face_type", "whole")
            if face_type not in prepared:
                prepared[face_type] = prepare(root, device, face_type)
            faces = prepared[face_type]
            log.info("quality: training %s for %s", name, f"{steps} steps" if steps else f"{budget_s:.0f} s")
            rows.append(run_variant(name, VARIANTS[name], faces, root, budget_s=budget_s, device=device, seed=seed,
                                    identity=identity, steps=steps))
            log.info("quality: %s", rows[-1])
        return rows
    finally:
        loop.BUDGET_CLOCK = wall_clock  # later trainings in this process count wall time again
        if tmp is not None:
            tmp.cleanup()


def ceilings(face_types: list[str], resolutions: list[int], spec: PairedSpec | None = None) -> list[dict[str, Any]]:
    """What a perfect model of each face type and resolution would score at the view size: B's true face of that
    geometry as the output (on ``spec``'s held-out motion, the paired benchmark's by default). The view SSIM and
    detail a model of that shape can reach at most."""
    from changeling.evaluate.paired import PairedSpec, make_paired_data, score_outputs

    rows = []
    for face_type in face_types:
        for res in resolutions:
            data = make_paired_data(spec or PairedSpec(), res, face_type)
            s = score_outputs(data.b, data, landmarks=False)
            rows.append({"face_type": face_type, "resolution": res, "view_ssim": round(s.view_ssim, 3),
                         "view_detail": round(s.view_detail, 3), "view_psnr": round(s.view_psnr, 2)})
    return rows


def quality_ab(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    """The bench case: the default A/B at the demo's budget; the headline is the masked SSIM at view size of what
    the demo trains (DEMO_VARIANT), every variant's figures are in the details."""
    budget = 200.0 if quick else 600.0
    rows = compare(list(AB_DEFAULT), budget_s=budget, device=device)
    by = {r["variant"]: r for r in rows}
    head = by[DEMO_VARIANT]
    out: dict[str, Any] = {"value": head["view_ssim"], "unit": "masked SSIM at 256 px", "variant": DEMO_VARIANT,
                           "target": ">= 0.90 detail, >= 0.70 SSIM after 10 min (CPU)", "budget_s": budget}
    for r in rows:
        out[r["variant"]] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                             if k not in ("variant", "overrides")}
    out["detail_keys"] = ["variant", "budget_s", *[r["variant"] for r in rows]]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(AB_DEFAULT), help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per variant (0: no limit)")
    p.add_argument("--steps", type=int, default=0, help="train each variant this many steps (0: by --budget)")
    p.add_argument("--cpu-clock", action="store_true", help="count the budget in CPU seconds of this process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="keep the projects in this folder")
    p.add_argument("--no-identity", action="store_true", help="skip the dlib identity score")
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--ceilings", action="store_true",
                   help="score the perfect output of each face type at 64, 96 and 128 px instead of training")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.ceilings:
        print(json.dumps(ceilings(["mid", "full", "whole"], [64, 96, 128]), indent=1))
        return 0
    rows = compare(args.variants, budget_s=args.budget, device=args.device, seed=args.seed,
                   identity=not args.no_identity, keep=args.keep, cpu_clock=args.cpu_clock,
                   steps=args.steps)
    emit(rows, args.json_out)
    return 0


def emit(rows: list[dict[str, Any]], json_out: Path | None) -> None:
    """Print the rows as JSON, and write them to ``json_out`` when given."""
    text = json.dumps(rows, indent=1)
    if json_out:
        json_out.write_text(text)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
