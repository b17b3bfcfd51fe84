"""The occlusion benchmark behind ``changeling bench occlusion``: a 300-face project made from the synthetic
clips, its segmenter trained with the default settings, and a held-out occluded sequence (held-out motion,
held-out occluder seeds, a kind and textures training never sees) to score it on:

- ``iou``: IoU of the predicted visible face (hull and segmenter > 0.5) with the truth (hull minus the exact
  occluder mask), on the frames where an occluder covers part of the face, in 128 px aligned crops;
- ``kept``: in convert's output (``--mask combined`` with the segmenter), the share of the occluder's pixels
  inside the face hull that stay within 4 levels of the source frame (``kept_all``: of all its pixels);
- ``ssim_clear``: on the frames without an occluder, the masked SSIM of the output to the truth (B under the
  same motion) with ``--mask occlusion`` and with ``--mask hull``; the first must not be lower by over 0.01;
- ``train_s``: the wall time of the segmenter's training, loading included.

Faces come from the synthetic clips' true landmarks (no detector, so the numbers are the masks' own), and the
convert runs use those landmarks too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from changeling.config import MasksSettings, TrainSettings
from changeling.convert.maskops import hull_mask
from changeling.convert.pipeline import DetectedFace
from changeling.detect.align import face_affine, transform_points, warp_face
from changeling.faces.facefile import FaceMeta, write_face
from changeling.masks.masks import face_masks
from changeling.project import Project, init_project
from changeling.synth import make_motion, render_frames
from changeling.synth.occluders import HELD_OUT_SEED_BASE, KINDS, OccluderPass, occlude, occluder_schedule
from changeling.types import Frame
from changeling.video.reader import FrameSource, TimedFrame

FACE_SIZE = 256
HELD_OUT_MOTION = 9001  # the paired benchmark's held-out motion (evaluate.paired.PairedSpec)
HELD_OUT_OCCLUDERS = HELD_OUT_SEED_BASE + 17
KEPT_LEVELS = 4


def synth_faces(project: Project, side: str, portrait: str, seed: int, count: int, fps: float = 25.0) -> int:
    """Write ``count`` face files of ``portrait`` under motion ``seed`` into the project's faces of ``side``,
    aligned by the true landmarks as extraction aligns detected ones ('whole', 256 px). Returns the count."""
    folder = project.faces_dir(side)
    folder.mkdir(parents=True, exist_ok=True)
    motion = make_motion(seed=seed, duration=count / fps)
    n = 0
    for f in render_frames(portrait, motion, 256, fps):
        if n >= count:
            break
        aff = face_affine(f.landmarks, "whole", FACE_SIZE)
        crop = warp_face(f.image, aff, FACE_SIZE)
        pts = transform_points(f.landmarks[:, :2], aff)
        lo, hi = f.landmarks[:, :2].min(0), f.landmarks[:, :2].max(0)
        meta = FaceMeta(source=f"{portrait}_{seed}.mp4", frame_index=f.index, face_index=0, size=FACE_SIZE,
                        face_type="whole", affine=aff.tolist(), landmarks=f.landmarks.tolist(),
                        box=[float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])], score=1.0,
                        masks=face_masks(pts, FACE_SIZE), time=f.time, side=side,
                        source_hash=f"synth{portrait}{seed}")
        write_face(folder / f"{f.index:06d}_0.png", crop, meta)
        n += 1
    return n


@dataclasses.dataclass
class OccludedSequence:
    """The held-out sequence: A's frames with the occluders, B's (the truth) with the same occluders."""

    a: list[Frame]  # (H, W, 3) uint8
    b: list[Frame]
    landmarks: list[NDArray[np.float32]]  # A's (468, 3) true landmarks per frame
    covered: list[NDArray[np.float32]]  # (H, W) exact occluder coverage per frame
    passes: list[OccluderPass]


def occluded_sequence(seconds: float = 8.0, fps: float = 12.0, size: int = 256,
                      kinds: Sequence[str] = KINDS) -> OccludedSequence:
    """Render the held-out motion for A (astronaut) and B (Grace Hopper) with held-out occluder passes, placed by
    A's landmarks in both (the same occluder in the same place: B's frames are the ideal swap's truth)."""
    motion = make_motion(seed=HELD_OUT_MOTION, duration=seconds)
    passes = occluder_schedule(HELD_OUT_OCCLUDERS, seconds, kinds, every=1.0, share=0.7)
    seq = OccludedSequence([], [], [], [], passes)
    for fa, fb in zip(render_frames("astronaut", motion, size, fps), render_frames("grace_hopper", motion, size, fps),
                      strict=True):
        a, cov = occlude(fa.image, fa.landmarks, fa.time, passes)
        b, _ = occlude(fb.image, fa.landmarks, fa.time, passes)
        seq.a.append(a)
        seq.b.append(b)
        seq.landmarks.append(fa.landmarks)
        seq.covered.append(cov)
    return seq


def mask_iou(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    union = np.count_nonzero(pred | truth)
    return float(np.count_nonzero(pred & truth) / union) if union else 1.0


def segmenter_iou(segmenter: Any, seq: OccludedSequence, resolution: int = 128) -> dict[str, float]:
    """Mean IoU of the predicted visible face with the truth over the occluded frames, in aligned crops; also
    the IoU of the covered parts of the hull (what the segmenter must find) and over the clear frames."""
    crops, truths, hulls = [], [], []
    for img, lm, cov in zip(seq.a, seq.landmarks, seq.covered, strict=True):
        aff = face_affine(lm, "whole", resolution)
        crops.append(warp_face(img, aff, resolution))
        hull = hull_mask(transform_points(lm, aff), resolution) > 0.5
        covered = warp_face((cov * 255).astype(np.uint8), aff, resolution) > 127
        hulls.append(hull)
        truths.append(hull & ~covered)
    probs = segmenter(np.stack(crops))
    occluded, clear, covered_iou = [], [], []
    for p, truth, hull in zip(probs, truths, hulls, strict=True):
        pred = hull & (p > 0.5)
        if np.count_nonzero(hull & ~truth) > 0.01 * np.count_nonzero(hull):
            occluded.append(mask_iou(pred, truth))
            covered_iou.append(mask_iou(hull & ~pred, hull & ~truth))
        else:
            clear.append(mask_iou(pred, truth))
    return {"iou": float(np.mean(occluded)) if occluded else float("nan"),
            "iou_covered_part": float(np.mean(covered_iou)) if covered_iou else float("nan"),
            "iou_clear": float(np.mean(clear)) if clear else float("nan"),
            "occluded_frames": len(occluded), "clear_frames": len(clear)}


class KnownFaces:
    """A face source that knows each frame's landmarks (the sequence's truth)."""

    def __init__(self, landmarks: Sequence[NDArray[np.float32]]) -> None:
        self.landmarks = list(landmarks)

    def open(self, source: FrameSource) -> None:
        pass

    def faces(self, frames: Sequence[TimedFrame]) -> list[list[DetectedFace]]:
        out = []
        for tf in frames:
            lm = np.asarray(self.landmarks[tf.index], np.float32)
            box = np.array([*lm[:, :2].min(0), *lm[:, :2].max(0)], np.float32)
            out.append([DetectedFace(lm, box)])
        return out


def convert_sequence(project: Project, seq: OccludedSequence, mask: str, work: Path, occlusion: Any) -> list[Frame]:
    """Convert A's occluded frames (PNG files) with the project's model and ``mask``; the output frames."""
    from PIL import Image

    from changeling.convert.color import color_matcher
    from changeling.convert.maskops import MaskBuilder
    from changeling.convert.pipeline import Converter
    from changeling.convert.sources import ModelSwapper, load_model
    from changeling.convert.writers import provenance_writer_factory
    from changeling.provenance.batch_marker import watermark_marker

    src = work / "frames"
    if not src.is_dir():
        src.mkdir(parents=True)
        for i, img in enumerate(seq.a):
            Image.fromarray(img).save(src / f"{i:06d}.png")
    model, info = load_model(project.model_dir, torch.device("cpu"))
    swapper = ModelSwapper(model, resolution=info.resolution, face_type=info.face_type, to="B",  # type: ignore[arg-type]
                           device="cpu")
    conv = Converter(faces=KnownFaces(seq.landmarks), swapper=swapper, color=color_matcher("rct"),
                     masks=MaskBuilder(mask, 0, 8),  # type: ignore[arg-type]
                     writer_factory=provenance_writer_factory("images"), marker=watermark_marker("cpu"), smooth=0.0,
                     workers=0, progress=False, occlusion=occlusion)
    out = work / f"out_{mask}_{'occ' if occlusion is not None else 'plain'}"
    conv.run(src, out)
    files = sorted(p for p in out.iterdir() if p.suffix == ".png")
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


def kept_share(outputs: Sequence[Frame], seq: OccludedSequence, marked: bool = True) -> dict[str, float]:
    """Share of occluder pixels (coverage > 0.5) within ``KEPT_LEVELS`` of the source frame: inside the face
    hull (the pixels a swap would paste over) and anywhere. With ``marked`` the source frame is first given the
    provenance watermark every output frame carries (alone it moves about a quarter of a 256 px frame's pixels
    by more than 4 levels), so the share says what the swap did."""
    from changeling.provenance.batch_marker import watermark_marker

    mark = watermark_marker("cpu")
    inside_ok = inside_n = all_ok = all_n = 0
    for out, raw, lm, cov in zip(outputs, seq.a, seq.landmarks, seq.covered, strict=True):
        src = mark(raw) if marked else raw
        occ = cov > 0.5
        if not occ.any():
            continue
        h, w = cov.shape
        hull = hull_mask(lm, max(h, w))[:h, :w] > 0.5
        ok = np.abs(out.astype(np.int16) - src.astype(np.int16)).max(axis=2) <= KEPT_LEVELS
        inside_ok += int(np.count_nonzero(ok & occ & hull))
        inside_n += int(np.count_nonzero(occ & hull))
        all_ok += int(np.count_nonzero(ok & occ))
        all_n += int(np.count_nonzero(occ))
    return {"kept": inside_ok / inside_n if inside_n else float("nan"), "kept_all": all_ok / all_n if all_n else 1.0}


def clear_ssim(outputs: Sequence[Frame], seq: OccludedSequence, size: int = 256) -> float:
    """Mean masked SSIM of the outputs to the truth on the frames without an occluder, in A's aligned crops."""
    from changeling.evaluate.metrics import masked_ssim

    scores = []
    for out, truth, lm, cov in zip(outputs, seq.b, seq.landmarks, seq.covered, strict=True):
        if cov.max() > 0:
            continue
        aff = face_affine(lm, "whole", size)
        hull = hull_mask(transform_points(lm, aff), size)
        scores.append(masked_ssim(warp_face(out, aff, size).astype(np.float32) / 255,
                                  warp_face(truth, aff, size).astype(np.float32) / 255, hull))
    return float(np.mean(scores)) if scores else float("nan")


def run(work: Path, *, faces_per_side: int = 150, masks: MasksSettings | None = None,
        pair_seconds: float = 120.0) -> dict[str, Any]:
    """The whole benchmark in ``work``: project, segmenter, pair model, held-out scores."""
    from changeling.occlusion.project import load_project_segmenter
    from changeling.occlusion.trainer import train_segmenter
    from changeling.train.loop import train

    project = init_project(work / "project")
    synth_faces(project, "A", "astronaut", 1, faces_per_side)
    synth_faces(project, "B", "grace_hopper", 2, faces_per_side)
    settings = masks or MasksSettings(device="cpu")
    t0 = time.perf_counter()
    report = train_segmenter(project, settings, progress=False)
    train_s = time.perf_counter() - t0
    segmenter = load_project_segmenter(project.root, "cpu", required=True)
    seq = occluded_sequence()
    scores: dict[str, Any] = segmenter_iou(segmenter, seq)
    train(project, TrainSettings(preset="tiny", device="cpu", max_time=pair_seconds, preview_every=0,
                                 save_every=100_000), progress=False)
    outs = {name: convert_sequence(project, seq, mask, work, occ)
            for name, mask, occ in (("combined_occ", "combined", segmenter), ("combined", "combined", None),
                                    ("occlusion", "occlusion", segmenter), ("hull", "hull", None))}
    kept = kept_share(outs["combined_occ"], seq)
    unmarked = kept_share(outs["combined_occ"], seq, marked=False)
    ssim = {name: clear_ssim(frames, seq) for name, frames in outs.items()}
    scores.update(kept=kept["kept"], kept_all=kept["kept_all"], kept_vs_unmarked_source=unmarked["kept"],
                  kept_without_segmenter=kept_share(outs["combined"], seq)["kept"],
                  ssim_clear_occlusion=ssim["occlusion"], ssim_clear_hull=ssim["hull"],
                  ssim_clear_combined_occ=ssim["combined_occ"], ssim_clear_combined=ssim["combined"],
                  train_s=round(train_s, 1), segmenter_steps=report.step, segmenter_loss=round(report.loss, 4),
                  faces=report.faces, occluder_kinds=sorted({p.kind for p in seq.passes}))
    return scores
