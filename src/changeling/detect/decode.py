"""Turning raw BlazeFace outputs into detections, as MediaPipe's TensorsToDetections and weighted
NonMaxSuppression calculators do.

Coordinates here are normalized to the detector input square ([0, 1] spans the letterboxed input); the detector
maps them to frame pixels afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0  # logits are clipped to ±100 before the sigmoid
NMS_IOU = 0.3  # min_suppression_threshold of the face detection graphs


@dataclass(frozen=True)
class RawDetections:
    """Candidates of one image before suppression, normalized input coordinates."""

    boxes: NDArray[np.float32]  # (n, 4) x0, y0, x1, y1
    keypoints: NDArray[np.float32]  # (n, 6, 2) x, y
    scores: NDArray[np.float32]  # (n,) in (0, 1)


def decode_boxes(regressors: torch.Tensor, anchors: torch.Tensor, input_size: int) -> torch.Tensor:
    """Decode (B, A, 16) regressors against anchor centres (A, 2) into (B, A, 16) normalized values:
    x0, y0, x1, y1 of the box, then six (x, y) keypoints. Anchors are 1×1 (fixed size)."""
    scaled = regressors / input_size
    center = scaled[..., 0:2] + anchors
    half = scaled[..., 2:4] / 2
    keypoints = scaled[..., 4:].unflatten(-1, (NUM_KEYPOINTS, 2)) + anchors[:, None, :]
    return torch.cat([center - half, center + half, keypoints.flatten(-2)], dim=-1)


def scores_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid of the clipped logits, (B, A) -> (B, A)."""
    return torch.sigmoid(logits.clamp(-SCORE_CLIP, SCORE_CLIP))


def select_candidates(decoded: torch.Tensor, scores: torch.Tensor, min_score: float) -> list[RawDetections]:
    """Keep, per image, anchors scoring at least ``min_score`` whose box has non-negative width and height."""
    out = []
    for d, s in zip(decoded, scores, strict=True):
        keep = (s >= min_score) & (d[:, 2] >= d[:, 0]) & (d[:, 3] >= d[:, 1])
        d_np = d[keep].float().cpu().numpy()
        out.append(RawDetections(d_np[:, :4].copy(), d_np[:, 4:].reshape(-1, NUM_KEYPOINTS, 2).copy(),
                                 s[keep].float().cpu().numpy()))
    return out


def box_iou(box: NDArray[np.float32], boxes: NDArray[np.float32]) -> NDArray[np.float32]:
    """IoU of one (4,) box with (n, 4) boxes; 0 where the union is empty."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float32)


def weighted_nms(raw: RawDetections, iou_threshold: float = NMS_IOU) -> RawDetections:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Repeatedly take the best remaining candidate; every remaining candidate overlapping it by more than
    ``iou_threshold`` (itself included) is removed, and the kept detection's box and keypoints become the
    score-weighted mean of that cluster. Its score stays the best one's.
    """
    order = np.argsort(-raw.scores, kind="stable")
    remaining = order
    boxes, keypoints, scores = [], [], []
    while remaining.size:
        top = remaining[0]
        iou = box_iou(raw.boxes[top], raw.boxes[remaining])
        cluster, rest = remaining[iou > iou_threshold], remaining[iou <= iou_threshold]
        if cluster.size:
            w = raw.scores[cluster][:, None]
            total = w.sum()
            boxes.append((raw.boxes[cluster] * w).sum(0) / total)
            keypoints.append((raw.keypoints[cluster] * w[:, :, None]).sum(0) / total)
        else:
            boxes.append(raw.boxes[top])
            keypoints.append(raw.keypoints[top])
        scores.append(raw.scores[top])
        if rest.size == remaining.size:
            break
        remaining = rest
    if not scores:
        return RawDetections(np.zeros((0, 4), np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32),
                             np.zeros(0, np.float32))
    return RawDetections(np.stack(boxes).astype(np.float32), np.stack(keypoints).astype(np.float32),
                         np.asarray(scores, np.float32))
