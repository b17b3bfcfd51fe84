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
from typing import Any, cast

import numpy as np
import torch

from changeling.detect.align import FACE_TYPES, face_affine, transform_points, warp_face
from changeling.evaluate.metrics import (
    detail_ratio,
    is_recognisable,
    masked_psnr,
    masked_ssim,
    temporal_jitter,
)
from changeling.evaluate.view import VIEW_FACE_TYPE, VIEW_SIZE, to_view
from changeling.masks.masks import face_masks
from changeling.masks.raster import polygon_mask
from changeling.synth import SynthFrame, make_motion, render_frames
from changeling.types import FaceType

log = logging.getLogger(__name__)

RECOGNISABLE_FRACTION = 0.9


@dataclass(frozen=True)
class PairedSpec:
    """The held-out sequence. Training clips use other seeds (see :mod:`changeling.demo`).

    ``size``: side of the rendered frames, 0 for twice the view size: the ``whole`` face then spans about the
    view size (250 px in 512 px frames), so B's truth carries real detail there (a face rendered smaller and
    enlarged would be soft in the truth itself)."""

    source: str = "astronaut"  # A
    target: str = "grace_hopper"  # B
    seed: int = 9001
    seconds: float = 4.0
    fps: float = 12.0
    size: int = 0
    view_size: int = VIEW_SIZE

    @property
    def frame_size(self) -> int:
        return self.size or 2 * self.view_size


@dataclass
class Aligned:
    """Aligned crops of the held-out sequence in one geometry (side S): A (the source), B (the truth), masks."""

    a: np.ndarray  # (T, S, S, 3) float32 [0, 1]
    b: np.ndarray  # (T, S, S, 3) float32 [0, 1]
    masks: np.ndarray  # (T, S, S) float32 [0, 1]: A's and B's hull masks intersected
    a_points: np.ndarray  # (T, 468, 2) landmarks of A in the crop
    b_points: np.ndarray  # (T, 468, 2) landmarks of B in the crop


@dataclass
class PairedData(Aligned):
    """The sequence at the model's resolution R and face type, and in the fixed view geometry (``view``: the
    ``whole`` face type at the view size), where every model is scored on the same pixels."""

    face_type: FaceType = "whole"
    view: Aligned | None = None


@dataclass(frozen=True)
class ConvincingBar:
    """When a swap counts as convincing (README, "The demo and the paired benchmark"): at view size its masked
    SSIM to the ideal swap reaches ``ssim`` and its detail ratio lies in [``detail_min``, ``detail_max``] (as
    sharp as the truth, not noisy), it is recognisable, and with the identity extra at least ``closer_to_b`` of
    its frames are nearer to B than to A by the embedding."""

    ssim: float = 0.70
    detail_min: float = 0.90
    detail_max: float = 1.15
    closer_to_b: float = 0.90


CONVINCING = ConvincingBar()


@dataclass
class Scores:
    ssim: float  # mean masked SSIM of the A->B output against the truth B (model resolution)
    psnr: float  # mean masked PSNR (dB) against B
    ssim_to_source: float  # mean masked SSIM of the output against A (what a non-swap scores)
    recognisable: float  # fraction of frames closer to B than to A
    jitter: float  # temporal jitter against the truth (0 = moves exactly like the truth)
    landmark_error: float  # mean landmark distance output vs truth, in inter-ocular distances (nan: not run)
    frames: int
    baseline_ssim: float  # masked SSIM of A itself against B: the floor a swap must beat
    # the same output warped into the fixed view geometry (whole face type, view_size px); nan: not scored
    view_size: int = 0
    view_ssim: float = math.nan
    view_psnr: float = math.nan
    view_detail: float = math.nan  # mean gradient magnitude over the truth's inside the mask (1 = as sharp)
    view_jitter: float = math.nan
    view_landmark_error: float = math.nan
    view_baseline_ssim: float = math.nan
    face_smooth: float = 0.0  # the temporal face blending the outputs were scored with (convert's setting)

    @property
    def is_recognisable(self) -> bool:
        return self.recognisable >= RECOGNISABLE_FRACTION

    def is_convincing(self, identity: dict[str, Any] | None = None, bar: ConvincingBar = CONVINCING) -> bool:
        """The convincing verdict (see :class:`ConvincingBar`); ``identity`` from :func:`identity_scores`."""
        ok = (self.is_recognisable and self.view_ssim >= bar.ssim
              and bar.detail_min <= self.view_detail <= bar.detail_max)
        if identity is not None:
            ok = ok and identity["closer_to_B"] >= bar.closer_to_b
        return bool(ok)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["is_recognisable"] = self.is_recognisable
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _align(frames: Sequence[SynthFrame], face_type: FaceType, size: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    crops, points, masks = [], [], []
    for f in frames:
        aff = face_affine(f.landmarks, face_type, size)
        crops.append(warp_face(f.image, aff, size).astype(np.float32) / 255.0)
        pts = transform_points(f.landmarks[:, :2], aff).astype(np.float32)
        points.append(pts)
        masks.append(polygon_mask(size, [face_masks(pts, size)["hull"]]))
    return np.stack(crops), np.stack(points), np.stack(masks)


def _aligned(seqs: dict[str, list[SynthFrame]], face_type: FaceType, size: int) -> Aligned:
    a, ap, am = _align(seqs["A"], face_type, size)
    b, bp, bm = _align(seqs["B"], face_type, size)
    return Aligned(a=a, b=b, masks=np.minimum(am, bm), a_points=ap, b_points=bp)


def make_paired_data(spec: PairedSpec, resolution: int, face_type: str, *, view: bool = True) -> PairedData:
    """Render the held-out motion for both portraits and align both with their true landmarks, at the model's
    resolution and face type, and (``view``) in the fixed view geometry."""
    if face_type not in FACE_TYPES:
        raise ValueError(f"face_type must be one of {', '.join(FACE_TYPES)}, got {face_type!r}")
    ft = cast(FaceType, face_type)
    motion = make_motion(seed=spec.seed, duration=spec.seconds)
    seqs = {side: list(render_frames(portrait, motion, spec.frame_size, spec.fps))
            for side, portrait in (("A", spec.source), ("B", spec.target))}
    m = _aligned(seqs, ft, resolution)
    return PairedData(a=m.a, b=m.b, masks=m.masks, a_points=m.a_points, b_points=m.b_points, face_type=ft,
                      view=_aligned(seqs, VIEW_FACE_TYPE, spec.view_size) if view else None)


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


def identity_scores(outputs: np.ndarray, data: Aligned, frames: int = 12) -> dict[str, Any] | None:
    """Who the swap looks like (``changeling[identity]``): the dlib embedding distance of the outputs to B's
    and to A's aligned faces (``to_B`` low and ``to_A`` high for a good swap). ``outputs`` lie in the geometry of
    ``data`` (the view, or the model's crops). ``None`` without the extra."""
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
            img = np.clip(imgs[t] * 255 + 0.5, 0, 255).astype(np.uint8)
            if img.shape[0] != LANDMARK_SIZE:
                img = cv2.resize(img, (LANDMARK_SIZE,) * 2, interpolation=cv2.INTER_CUBIC)
            pts = np.concatenate([points[t] * scale, np.zeros((len(points[t]), 1), np.float32)], axis=1)
            x0, y0 = pts[:, :2].min(axis=0)
            x1, y1 = pts[:, :2].max(axis=0)
            out.append((img, np.array([x0, y0, x1, y1], np.float32), pts))
        return out

    # the output sits in A's aligned space and carries A's expression: locate it by B's truth landmarks,
    # which follow the same motion
    return identity_score(faces(outputs, data.b_points), faces(data.a, data.a_points), faces(data.b, data.b_points),
                          embedder=embedder)


def _at(images: np.ndarray, size: int) -> np.ndarray:
    """(T, S, S, 3) float crops at side ``size`` (area-reduced or bilinear-enlarged; unchanged when S == size)."""
    import cv2

    if images.shape[1] == size:
        return images
    interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(i, (size, size), interpolation=interp) for i in images]).astype(np.float32)


def view_outputs(outputs: np.ndarray, data: PairedData) -> tuple[np.ndarray, np.ndarray]:
    """Outputs (T, S, S, 3) in the model's face type, as a viewer sees them in the view: (T, V, V, 3) images
    with A's own pixels wherever the model's crop does not reach (as convert leaves them), and the (T, V, V)
    scoring masks. A tighter face type is scored on the whole face too, and pays for what it leaves out."""
    if data.view is None:
        raise ValueError("this paired data was made without the view geometry (view=False)")
    images, cover = to_view(outputs, data.face_type, data.view.b.shape[1])
    c = cover[None, :, :, None]
    return images * c + data.view.a * (1 - c), data.view.masks


def score_outputs(outputs: np.ndarray, data: PairedData, *, landmarks: bool = True, view: bool = True) -> Scores:
    """Scores of A->B outputs against the truth (``landmarks=False`` skips the landmarker, ``view=False`` the
    view-size scores). ``outputs`` (T, S, S, 3) float in [0, 1] lie in the model's face type at any side S: the
    model's own resolution, or a detail stage's larger one (reduced to the model's for its scores)."""
    n = len(outputs)
    at_model = _at(outputs, data.a.shape[1])
    ssim = [masked_ssim(at_model[t], data.b[t], data.masks[t]) for t in range(n)]
    to_a = [masked_ssim(at_model[t], data.a[t], data.masks[t]) for t in range(n)]
    psnr = [masked_psnr(at_model[t], data.b[t], data.masks[t]) for t in range(n)]
    rec = [is_recognisable(at_model[t], data.b[t], data.a[t], data.masks[t]) for t in range(n)]
    base = [masked_ssim(data.a[t], data.b[t], data.masks[t]) for t in range(n)]
    jitter = temporal_jitter(list(at_model), list(data.b), list(data.masks)) if n > 1 else 0.0
    scores = Scores(ssim=float(np.mean(ssim)), psnr=_mean_finite(psnr), ssim_to_source=float(np.mean(to_a)),
                    recognisable=float(np.mean(rec)), jitter=jitter,
                    landmark_error=landmark_error(at_model, data.b, data.b_points) if landmarks else float("nan"),
                    frames=n, baseline_ssim=float(np.mean(base)))
    if view and data.view is not None:
        v = data.view
        images, masks = view_outputs(outputs, data)
        scores.view_size = int(v.b.shape[1])
        scores.view_ssim = float(np.mean([masked_ssim(images[t], v.b[t], masks[t]) for t in range(n)]))
        scores.view_psnr = _mean_finite([masked_psnr(images[t], v.b[t], masks[t]) for t in range(n)])
        scores.view_detail = float(np.nanmean([detail_ratio(images[t], v.b[t], masks[t]) for t in range(n)]))
        scores.view_baseline_ssim = float(np.mean([masked_ssim(v.a[t], v.b[t], v.masks[t]) for t in range(n)]))
        scores.view_jitter = temporal_jitter(list(images), list(v.b), list(masks)) if n > 1 else 0.0
        if landmarks:
            scores.view_landmark_error = landmark_error(images, v.b, v.b_points)
    return scores


def _mean_finite(values: Sequence[float]) -> float:
    finite = [p for p in values if math.isfinite(p)]
    return float(np.mean(finite)) if finite else float("inf")


def swap_sequence(model: torch.nn.Module, faces: np.ndarray, to: str = "B", face_smooth: float = 0.0
                  ) -> np.ndarray:
    """:func:`swap_faces` of one face's consecutive frames, blended over time as convert blends them
    (``face_smooth``: :class:`~changeling.config.ConvertSettings`' setting; 0: the model's raw outputs)."""
    from changeling.convert.temporal import blend_sequence

    return blend_sequence(swap_faces(model, faces, to), faces, face_smooth)


def evaluate_model(model: torch.nn.Module, data: PairedData, *, identity: bool = False, face_smooth: float = 0.0
                   ) -> tuple[Scores, dict[str, Any] | None]:
    """Scores of the model's A->B swap of the held-out sequence, and its identity score when asked for (on the
    view-size faces when the data has the view geometry). ``face_smooth``: the temporal face blending convert
    applies (:mod:`changeling.convert.temporal`), so that the scores are of the faces convert renders (in the
    aligned view, before colour matching and pasting)."""
    was_training = model.training
    model.eval()
    try:
        outputs = swap_sequence(model, data.a, "B", face_smooth)
        ident = None
        if identity:
            ident = (identity_scores(view_outputs(outputs, data)[0], data.view) if data.view is not None
                     else identity_scores(outputs, data))
        scores = score_outputs(outputs, data)
        scores.face_smooth = face_smooth
        return scores, ident
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
    view = [r for r in results if r.get("view_ssim") is not None]
    if view:
        vx = [r["train_seconds"] / 60 for r in view]
        size = view[-1]["view_size"]
        ax1.plot(vx, [r["view_ssim"] for r in view], "o-", color="C3", label=f"masked SSIM vs truth at {size} px")
        ax1.plot(vx, [r["view_detail"] for r in view], "D-", color="C4",
                 label=f"detail ratio at {size} px (1 = as sharp as the truth)")
        ax1.axhline(CONVINCING.ssim, color="C3", lw=0.8, ls=":")
        ax1.axhline(CONVINCING.detail_min, color="C4", lw=0.8, ls=":")
    ax1.plot(xs, [r["ssim"] for r in results], "o--", color="C0", alpha=0.6,
             label="masked SSIM vs truth (model resolution)")
    ax1.plot(xs, [r["ssim_to_source"] for r in results], "s--", color="C1", alpha=0.6,
             label="masked SSIM vs source A (model resolution)")
    ax1.plot(xs, [r["recognisable"] for r in results], "^:", color="C2", label="recognisable fraction")
    ax1.axhline(RECOGNISABLE_FRACTION, color="grey", lw=0.8)
    ax1.set_xlabel("training time (minutes)")
    top = max([1.02] + [r["view_detail"] * 1.05 for r in view if r.get("view_detail") is not None])
    ax1.set_ylim(0, min(top, 2.0))
    ax1.set_title("paired benchmark: swap quality over training")
    ax1.legend(loc="lower right", fontsize=7)
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    tmp_png = plot_path.with_name(f".{plot_path.name}.part")
    fig.savefig(tmp_png, format="png")
    plt.close(fig)
    os.replace(tmp_png, plot_path)
