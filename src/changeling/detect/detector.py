"""Batched face detection with the ported BlazeFace models, following MediaPipe's face-detection graph:
letterbox the frame to the model's square input (zero border), decode against the SSD anchors, weighted NMS,
then map back to frame pixels. Registered as the detectors ``short`` and ``full``
(:mod:`changeling.detect.registry`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from changeling.detect.anchors import anchors_for
from changeling.detect.blazeface import BlazeFaceFull, BlazeFaceShort
from changeling.detect.decode import decode_boxes, scores_from_logits, select_candidates, weighted_nms
from changeling.detect.detection import Detection
from changeling.detect.frames import as_device, chunks, exact_fp32, stack_frames
from changeling.detect.graphs import graphed
from changeling.detect.roi import FrameStack, apply_matrix, crop_rois, letterbox_roi, roi_matrix
from changeling.detect.weights import load_network
from changeling.types import Frame

log = logging.getLogger(__name__)

class BlazeFaceDetector:
    """A :class:`~changeling.detect.detection.Detector`: BlazeFace ``short`` range (faces filling much of the frame, 128 px input) or ``full`` range (192 px,
    small faces too). ``min_score`` is the detection threshold (MediaPipe uses 0.5 short, 0.6 full). On CUDA
    the network is replayed from CUDA graphs unless ``cuda_graphs`` is False."""

    def __init__(self, variant: Literal["short", "full"] = "full", device: str | torch.device = "cpu",
                 min_score: float = 0.5, batch_size: int = 64, cuda_graphs: bool = True) -> None:
        if variant not in ("short", "full"):
            raise ValueError(f"variant must be 'short' or 'full', got {variant!r}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        self.variant, self.min_score, self.batch_size = variant, min_score, batch_size
        self.device = as_device(device)
        net = BlazeFaceShort() if variant == "short" else BlazeFaceFull()
        self.net = load_network(net, "face_detection_short" if variant == "short" else "face_detection_full",
                                self.device)
        self.input_size = int(net.input_size)
        self._run = graphed(self.net, self.device, cuda_graphs, batch_size)
        self.anchors = torch.from_numpy(anchors_for(variant)).to(self.device)

    def raw(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network outputs for (B, 3, S, S) inputs in [-1, 1]: regressors (B, A, 16), logits (B, A)."""
        with torch.inference_mode(), exact_fp32(self.device):
            out = self._run(inputs.to(self.device).contiguous(memory_format=torch.channels_last))
        return out.regressors, out.logits

    def detect(self, frames: Sequence[Frame] | FrameStack) -> list[list[Detection]]:
        """Faces in each frame, best score first. Frames may differ in size."""
        stack = stack_frames(frames, self.device)
        return self.detect_indices(stack, list(range(len(stack))))

    def detect_indices(self, stack: FrameStack, indices: Sequence[int]) -> list[list[Detection]]:
        """Faces in the frames ``indices`` of a prepared stack (one list per index)."""
        results: list[list[Detection]] = []
        size = self.input_size
        for part in chunks(len(indices), self.batch_size):
            idx = list(indices[part])
            rois = [letterbox_roi(*stack.size(i)) for i in idx]
            with torch.inference_mode():
                crops = crop_rois(stack, rois, idx, size, "zero").mul_(1 / 127.5).sub_(1.0)
                regressors, logits = self.raw(crops)
                decoded = decode_boxes(regressors, self.anchors, size)
                candidates = select_candidates(decoded, scores_from_logits(logits), self.min_score)
            for roi, cand in zip(rois, candidates, strict=True):
                kept = weighted_nms(cand)
                m = roi_matrix(roi, size)
                boxes = apply_matrix(m, kept.boxes.reshape(-1, 2, 2) * size).reshape(-1, 4)
                keypoints = apply_matrix(m, kept.keypoints * size)
                results.append([Detection(b.astype(np.float32), float(s), k.astype(np.float32))
                                for b, s, k in zip(boxes, kept.scores, keypoints, strict=True)])
        return results
