"""Running a trained segmenter: aligned face crops in, visible-face masks out, at the crops' own size."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from changeling.occlusion.net import OcclusionNet, SegmenterConfig
from changeling.occlusion.store import LoadedSegmenter, SegmenterInfo, read_segmenter


class Segmenter:
    """A loaded segmenter for inference. Call it with (N, R, R, 3) uint8 RGB aligned crops of any size R; get
    (N, R, R) float32 probabilities in [0, 1] that each pixel is face that nothing covers."""

    def __init__(self, loaded: LoadedSegmenter, device: torch.device | str = "cpu", batch: int = 32) -> None:
        self.info: SegmenterInfo = loaded.info
        self.path: Path = loaded.path
        self.device = torch.device(device)
        self.batch = batch
        net = OcclusionNet(loaded.info.config)
        net.load_state_dict(loaded.weights)
        self.net = net.to(self.device).to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        self._lock = threading.Lock()  # one caller at a time: torch modules are not re-entrant across threads

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> Segmenter:
        return cls(read_segmenter(path), device)

    @classmethod
    def untrained(cls, config: SegmenterConfig, device: torch.device | str = "cpu", seed: int = 0) -> Segmenter:
        """A randomly initialised segmenter: for speed measurements (its speed does not depend on its weights)."""
        torch.manual_seed(seed)
        info = SegmenterInfo(config=config, face_type="whole", face_size=256, sources=[], step=0, target_step=0)
        return cls(LoadedSegmenter(info, OcclusionNet(config).state_dict(), {}, Path("untrained")), device)

    @property
    def resolution(self) -> int:
        return self.info.config.resolution

    @torch.inference_mode()
    def __call__(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        x = np.asarray(crops)
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2] or x.dtype != np.uint8:
            raise ValueError(f"expected (N, R, R, 3) uint8 crops, got {x.shape} {x.dtype}")
        n, r = x.shape[0], x.shape[1]
        if n == 0:
            return np.zeros((0, r, r), np.float32)
        s = self.resolution
        outs = []
        with self._lock:
            for i in range(0, n, self.batch):
                t = torch.from_numpy(np.ascontiguousarray(x[i:i + self.batch])).to(self.device)
                t = t.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, R, R)
                if r != s:
                    t = F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False, antialias=r > s)
                p = torch.sigmoid(self.net(t.contiguous(memory_format=torch.channels_last)))  # (B, 1, S, S)
                if r != s:
                    p = F.interpolate(p, size=(r, r), mode="bilinear", align_corners=False, antialias=s > r)
                outs.append(p[:, 0].float().cpu().numpy())
        return np.clip(np.concatenate(outs), 0.0, 1.0).astype(np.float32)
