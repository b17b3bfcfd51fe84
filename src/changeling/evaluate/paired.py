"""The paired benchmark. The same seeded motion drives both portraits, so the ideal swap of A's frame t is B's
portrait under motion t. A model trained on other motions is scored on a held-out motion: its A->B output in
A's aligned face space is compared with B's frame aligned the same way, inside the face mask."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from changeling.detect.align import face_affine, transform_points, warp_face
from changeling.evaluate.metrics import is_recognisable, masked_psnr, masked_ssim, temporal_jitter
from changeling.masks.masks import face_masks
from changeling.masks.raster import polygon_mask
from changeling.synth import make_motion, render_frames

log = logging.getLogger(__name__)

RECOGNISABLE_FRACTION = 0.9


@dataclass(frozen=True)
class PairedSpec:
    """The held-out sequence. Training clips use other seeds (see :mod:`changeling.demo`)."""

    source: str = "astronaut"  # A
    target: str = "grace_hopper"  # B
    seed: int = 9001
    seconds: float = 4.0
    fps: float = 12.0
    size: int = 256


@dataclass
class PairedData:
    """Aligned crops at the model's resolution R: A (the source), B (the truth) and the face masks."""

    a: np.ndarray  # (T, R, R, 3) float32 [0, 1]
    b: np.ndarray  # (T, R, R, 3) float32 [0, 1]
    masks: np.ndarray  # (T, R, R) float32 [0, 1]: A's and B's hull masks intersected
    a_points: np.ndarray  # (T, 468, 2) landmarks of A in the crop
    b_points: np.ndarray  # (T, 468, 2) landmarks of B in the crop


@dataclass
class Scores:
    ssim: float  # mean masked SSIM of the A->B output against the truth B
    psnr: float  # mean masked PSNR (dB) against B
    ssim_to_source: float  # mean masked SSIM of the output against A (what a non-swap scores)
    recognisable: float  # fraction of frames closer to B than to A
    jitter: float  # temporal jitter against the truth (0 = moves exactly like the truth)
    landmark_error: float  # mean landmark distance output vs truth, in inter-ocular distances (nan: not run)
    frames: int
    baseline_ssim: float  # masked SSIM of A itself against B: the floor a swap must beat

    @property
    def is_recognisable(self) -> bool:
        return self.recognisable >= RECOGNISABLE_FRACTION

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["is_recognisable"] = self.is_recognisable
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def make_paired_data(spec: PairedSpec, resolution: int, face_type: str) -> PairedData:
    """Render the held-out motion for both portraits and align both with their true landmarks."""
    motion = make_motion(seed=spec.seed, duration=spec.seconds)
    seqs = []
    for portrait in (spec.source, spec.target):
        crops, points, masks = [], [], []
        for f in render_frames(portrait, motion, spec.size, spec.fps):
            aff = face_affine(f.landmarks, face_type, resolution)  # type: ignore[arg-type]
            crops.append(warp_face(f.image, aff, resolution).astype(np.float32) / 255.0)
            pts = transform_points(f.landmarks[:, :2], aff).astype(np.float32)
            points.append(pts)
            masks.append(polygon_mask(resolution, [face_masks(pts, resolution)["hull"]]))
        seqs.append((np.stack(crops), np.stack(points), np.stack(masks)))
    (a, ap, am), (b, bp, bm) = seqs
    return PairedData(a=a, b=b, masks=np.minimum(am, bm), a_points=ap, b_points=bp)


@torch.inference_mode()
def swap_faces(model: torch.nn.Module, faces: np.ndarray, to: str = "B", batch: int = 32) -> np.ndarray:
    """Run (T, R, R, 3) float faces through ``model.swap``; returns (T, R, R, 3) float32 [0, 1]."""
    outs = []
    for i in range(0, len(faces), batch):
        x = torch.from_numpy(np.ascontiguousarray(faces[i:i + batch])).permute(0, 3, 1, 2).float()
        y = model.swap(x, to=to).face  # type: ignore[operator]
        outs.append(y.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(outs).astype(np.float32)


LANDMARK_SIZE = 256  # crops are upscaled to this before the landmarker sees them


def landmark_error(outputs: np.ndarray, truths: np.ndarray, truth_points: np.ndarray) -> float:
    """Expression and pose fidelity: our landmarker on the output and on the truth (the same region of interest,
    placed by the truth's known landmarks), mean point distance over the 468 mesh points divided by the
    inter-ocular distance (outer eye corners), averaged over frames."""
    import cv2

    from changeling.detect import FaceLandmarker
    from changeling.detect.roi import roi_from_landmarks

    r = outputs.shape[1]
    scale = LANDMARK_SIZE / r

    def up(imgs: np.ndarray) -> list[np.ndarray]:
        return [cv2.resize(np.clip(i * 255 + 0.5, 0, 255).astype(np.uint8), (LANDMARK_SIZE, LANDMARK_SIZE),
                           interpolation=cv2.INTER_CUBIC) for i in imgs]

    rois = [roi_from_landmarks(p * scale) for p in truth_points]
    marker = FaceLandmarker("cpu", iris=False)
    got = marker(up(outputs), rois).points[:, :468, :2]
    ref = marker(up(truths), rois).points[:, :468, :2]
    iod = np.linalg.norm(ref[:, 33] - ref[:, 263], axis=1)
    return float(np.mean(np.linalg.norm(got - ref, axis=2).mean(axis=1) / np.maximum(iod, 1e-6)))


def identity_scores(outputs: np.ndarray, data: PairedData, frames: int = 12) -> dict[str, Any] | None:
    """Who the swap looks like (``changeling[identity]``): the dlib embedding distance of the outputs to B's
    and to A's aligned faces (``to_B`` low and ``to_A`` high for a good swap). ``None`` without the extra."""
    import cv2

    from changeling.errors import UserError

    try:
        from changeling.identity import FaceEmbedder, identity_score
        embedder = FaceEmbedder()
    except (ImportError, UserError):
        return None
    idx = np.linspace(0, len(outputs) - 1, min(frames, len(outputs))).round().astype(int)
    scale = LANDMARK_SIZE / outputs.shape[1]

    def faces(imgs: np.ndarray, points: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for t in idx:
            img = cv2.resize(np.clip(imgs[t] * 255 + 0.5, 0, 255).astype(np.uint8), (LANDMARK_SIZE,) * 2,
                             interpolation=cv2.INTER_CUBIC)
            pts = np.concatenate([points[t] * scale, np.zeros((len(points[t]), 1), np.float32)], axis=1)
            x0, y0 = pts[:, :2].min(axis=0)
            x1, y1 = pts[:, :2].max(axis=0)
            out.append((img, np.array([x0, y0, x1, y1], np.float32), pts))
        return out

    # the output sits in A's aligned space and carries A's expression: locate it by B's truth landmarks,
    # which follow the same motion
    return identity_score(faces(outputs, data.b_points), faces(data.a, data.a_points), faces(data.b, data.b_points),
                          embedder=embedder)


def score_outputs(outputs: np.ndarray, data: PairedData, *, landmarks: bool = True) -> Scores:
    """Scores of A->B outputs against the truth (``landmarks=False`` skips the landmarker)."""
    n = len(outputs)
    ssim = [masked_ssim(outputs[t], data.b[t], data.masks[t]) for t in range(n)]
    to_a = [masked_ssim(outputs[t], data.a[t], data.masks[t]) for t in range(n)]
    psnr = [masked_psnr(outputs[t], data.b[t], data.masks[t]) for t in range(n)]
    rec = [is_recognisable(outputs[t], data.b[t], data.a[t], data.masks[t]) for t in range(n)]
    base = [masked_ssim(data.a[t], data.b[t], data.masks[t]) for t in range(n)]
    jitter = temporal_jitter(list(outputs), list(data.b), list(data.masks)) if n > 1 else 0.0
    finite = [p for p in psnr if math.isfinite(p)]
    return Scores(ssim=float(np.mean(ssim)), psnr=float(np.mean(finite)) if finite else float("inf"),
                  ssim_to_source=float(np.mean(to_a)), recognisable=float(np.mean(rec)), jitter=jitter,
                  landmark_error=landmark_error(outputs, data.b, data.b_points) if landmarks else float("nan"),
                  frames=n, baseline_ssim=float(np.mean(base)))


def evaluate_model(model: torch.nn.Module, data: PairedData, *, identity: bool = False
                   ) -> tuple[Scores, dict[str, Any] | None]:
    """Scores of the model's A->B swap of the held-out sequence, and its identity score when asked for."""
    was_training = model.training
    model.eval()
    try:
        outputs = swap_faces(model, data.a, "B")
        return score_outputs(outputs, data), identity_scores(outputs, data) if identity else None
    finally:
        model.train(was_training)


def write_report(results: Sequence[dict[str, Any]], json_path: Path, plot_path: Path | None = None) -> None:
    """JSON of every scored checkpoint and a quality-versus-training-time plot (PNG)."""
    tmp = json_path.with_suffix(".json.part")
    tmp.write_text(json.dumps(list(results), indent=2), encoding="utf-8")
    os.replace(tmp, json_path)
    if plot_path is None or not results:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["train_seconds"] / 60 for r in results]
    fig, ax1 = plt.subplots(figsize=(7, 4), dpi=100)
    ax1.plot(xs, [r["ssim"] for r in results], "o-", label="masked SSIM vs truth (B)")
    ax1.plot(xs, [r["ssim_to_source"] for r in results], "s--", label="masked SSIM vs source (A)")
    ax1.plot(xs, [r["recognisable"] for r in results], "^:", label="recognisable fraction")
    ax1.axhline(RECOGNISABLE_FRACTION, color="grey", lw=0.8)
    ax1.set_xlabel("training time (minutes)")
    ax1.set_ylim(0, 1.02)
    ax1.set_title("paired benchmark: swap quality over training")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    tmp_png = plot_path.with_name(f".{plot_path.name}.part")
    fig.savefig(tmp_png, format="png")
    plt.close(fig)
    os.replace(tmp_png, plot_path)
