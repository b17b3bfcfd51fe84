"""Batched face landmarks: the ported face-mesh network (468 points) plus, optionally, the iris network that
refines the 71 points around each eye and adds 5 iris points per eye (478 in all, MediaPipe's layout: 468–472
the iris of the eye on the image's left in a frontal face, 473–477 the other).

Points come back in frame pixels; z is relative depth in pixels at the ROI's scale (MediaPipe's z times the
frame width), smaller is nearer the camera.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from changeling.detect import iris as iris_spec
from changeling.detect.facemesh import INPUT_SIZE as MESH_SIZE
from changeling.detect.facemesh import FaceMeshNet
from changeling.detect.frames import as_device, chunks, exact_fp32, stack_frames
from changeling.detect.graphs import graphed
from changeling.detect.iris import IrisNet
from changeling.detect.roi import (
    FrameStack,
    Roi,
    crop_rois,
    roi_matrices,
    rois_from_landmarks,
    rois_from_point_pairs,
)
from changeling.detect.weights import load_network
from changeling.types import Frame

log = logging.getLogger(__name__)


@dataclass
class FaceLandmarks:
    """Landmarks of N faces (possibly from different frames)."""

    points: NDArray[np.float32]  # (N, 478 or 468, 3) x, y frame px, z relative depth px
    presence: NDArray[np.float32]  # (N,) face-presence probability in [0, 1]
    rois: list[Roi]  # the ROI each face was cropped from
    frame_index: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,)
    next_rois: list[Roi] = field(default_factory=list)  # ROI for the following frame (from the raw mesh)


def _project(points: torch.Tensor, matrices: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Crop-space points (N, P, 3) -> frame space with (N, 2, 3) affines; z multiplied by ``scale`` (N,)."""
    xy = points[..., :2] @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]
    return torch.cat([xy, points[..., 2:3] * scale[:, None, None]], dim=-1)


class FaceLandmarker:
    """Face mesh (and iris) landmarks for given ROIs, batched on ``device`` (replayed from CUDA graphs there
    unless ``cuda_graphs`` is False)."""

    def __init__(self, device: str | torch.device = "cpu", iris: bool = True, batch_size: int = 64,
                 cuda_graphs: bool = True) -> None:
        self.device = as_device(device)
        self.iris, self.batch_size = iris, batch_size
        self.mesh_net = load_network(FaceMeshNet(), "face_landmark", self.device)
        self.iris_net = load_network(IrisNet(), "iris_landmark", self.device) if iris else None
        self._run_mesh = graphed(self.mesh_net, self.device, cuda_graphs, batch_size)
        self._run_iris = graphed(self.iris_net, self.device, cuda_graphs, 2 * batch_size) if self.iris_net else None

    @property
    def num_points(self) -> int:
        return 478 if self.iris else 468

    def mesh_raw(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face-mesh network on (B, 3, 192, 192) crops in [0, 1]: points (B, 468, 3) crop px, logits (B,)."""
        with torch.inference_mode(), exact_fp32(self.device):
            out = self._run_mesh(crops.to(self.device).contiguous(memory_format=torch.channels_last))
        return out.points, out.presence_logit

    def iris_raw(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Iris network on (B, 3, 64, 64) eye crops in [0, 1]: contour (B, 71, 3), iris (B, 5, 3) crop px."""
        if self._run_iris is None:
            raise RuntimeError("this landmarker was built with iris=False")
        with torch.inference_mode(), exact_fp32(self.device):
            out = self._run_iris(crops.to(self.device).contiguous(memory_format=torch.channels_last))
        return out.contour, out.iris

    def __call__(self, frames: Sequence[Frame] | FrameStack, rois: Sequence[Roi],
                 frame_index: Sequence[int] | None = None) -> FaceLandmarks:
        """Landmarks for each ROI; ``frame_index[i]`` names the frame ROI i lies in (default: frame i)."""
        stack = stack_frames(frames, self.device)
        if frame_index is None:
            if len(rois) != len(stack):
                raise ValueError(f"{len(rois)} ROIs for {len(stack)} frames: pass frame_index")
            frame_index = list(range(len(rois)))
        if len(frame_index) != len(rois):
            raise ValueError(f"frame_index has {len(frame_index)} entries for {len(rois)} ROIs")
        if any(not 0 <= f < len(stack) for f in frame_index):
            raise ValueError(f"frame_index out of range for {len(stack)} frames")
        parts = [self._landmark(stack, list(rois[s]), list(frame_index[s]))
                 for s in chunks(len(rois), self.batch_size)]
        if not parts:
            return FaceLandmarks(np.zeros((0, self.num_points, 3), np.float32), np.zeros(0, np.float32), [],
                                 np.zeros(0, np.int64), [])
        return FaceLandmarks(np.concatenate([p.points for p in parts]), np.concatenate([p.presence for p in parts]),
                             [r for p in parts for r in p.rois], np.asarray(frame_index, np.int64),
                             [r for p in parts for r in p.next_rois])

    def _landmark(self, stack: FrameStack, rois: list[Roi], frame_index: list[int]) -> FaceLandmarks:
        device = self.device
        with torch.inference_mode():
            crops = crop_rois(stack, rois, frame_index, MESH_SIZE, "replicate").mul_(1 / 255)
            raw, logits = self.mesh_raw(crops)
            matrices = torch.from_numpy(roi_matrices(rois, MESH_SIZE)).to(device, torch.float32)
            sizes = torch.tensor([r.size / MESH_SIZE for r in rois], device=device)
            mesh = _project(raw, matrices, sizes)  # (N, 468, 3) frame px
            presence = torch.sigmoid(logits)
            mesh_np = mesh.cpu().numpy()
            next_rois = rois_from_landmarks(mesh_np)
            points = self._refine_eyes(stack, mesh, mesh_np, frame_index) if self.iris else mesh
            return FaceLandmarks(points.cpu().numpy().astype(np.float32), presence.cpu().numpy().astype(np.float32),
                                 rois, np.asarray(frame_index, np.int64), next_rois)

    def _refine_eyes(self, stack: FrameStack, mesh: torch.Tensor, mesh_np: NDArray[np.float32],
                     frame_index: list[int]) -> torch.Tensor:
        """Run the iris model on both eyes of every face; return (N, 478, 3) points."""
        n = iris_spec.INPUT_SIZE
        (a, b), (c, d) = iris_spec.LEFT_EYE_CORNERS, iris_spec.RIGHT_EYE_CORNERS
        starts = np.stack([mesh_np[:, a], mesh_np[:, c]], 1).reshape(-1, 3)  # left, right, left, right, ...
        ends = np.stack([mesh_np[:, b], mesh_np[:, d]], 1).reshape(-1, 3)
        eye_rois = rois_from_point_pairs(starts, ends, iris_spec.ROI_SCALE)
        flips = [False, True] * len(mesh_np)
        eye_frames = [f for f in frame_index for _ in range(2)]
        crops = crop_rois(stack, eye_rois, eye_frames, n, "replicate", flips).mul_(1 / 255)
        contour, iris = self.iris_raw(crops)
        matrices = torch.from_numpy(roi_matrices(eye_rois, n, flips)).to(mesh.device, torch.float32)
        sizes = torch.tensor([r.size / n for r in eye_rois], device=mesh.device)
        contour = _project(contour, matrices, sizes).view(-1, 2, iris_spec.NUM_CONTOUR, 3)
        iris = _project(iris, matrices, sizes).view(-1, 2, iris_spec.NUM_IRIS, 3)
        points = mesh.clone()
        left = torch.from_numpy(iris_spec.CONTOUR_TO_MESH_LEFT).to(mesh.device)
        right = torch.from_numpy(iris_spec.CONTOUR_TO_MESH_RIGHT).to(mesh.device)
        points[:, left] = contour[:, 0]
        points[:, right] = contour[:, 1]
        return torch.cat([points, iris[:, 0], iris[:, 1]], dim=1)
