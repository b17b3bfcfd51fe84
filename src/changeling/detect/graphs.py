"""CUDA-graph replay for the small detection networks.

Each network is a few hundred tiny kernels, so on a GPU the time goes into launching them from Python rather
than into the arithmetic. A captured CUDA graph launches them all at once. Graphs are captured lazily for batch
sizes 1, 2, 4, ... up to the largest batch used; a batch is padded up to the next captured size and the padding
rows are dropped from the outputs. Any failure to capture falls back to the plain network, with a warning.
Captures may happen while other threads use the GPU (convert's model and watermark threads): capture errors
are thread-local, and the graph's memory pool takes only the capturing stream's allocations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from changeling.detect.frames import exact_fp32

log = logging.getLogger(__name__)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_input: torch.Tensor
    static_output: Any  # the network's (named) tuple of tensors, living in the graph's memory


class GraphedNetwork:
    """Call ``net`` on (B, C, H, W) CUDA inputs through captured graphs; same outputs as ``net(x)``."""

    def __init__(self, net: nn.Module, max_batch: int = 64) -> None:
        self.net = net
        self.max_bucket = 1 << max(0, (max_batch - 1).bit_length())
        self._graphs: dict[tuple[int, ...], _Captured] = {}
        self._pool = torch.cuda.graph_pool_handle()
        self._broken = False

    def __call__(self, x: torch.Tensor) -> Any:
        if self._broken or x.device.type != "cuda":
            return self.net(x)
        if x.shape[0] > self.max_bucket:
            parts = [self(x[i:i + self.max_bucket]) for i in range(0, x.shape[0], self.max_bucket)]
            return type(parts[0])(*[torch.cat(items) for items in zip(*parts, strict=True)])
        bucket = 1 << max(0, (x.shape[0] - 1).bit_length())
        key = (bucket, *x.shape[1:])
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(key, x)
            if captured is None:
                return self.net(x)
        n = x.shape[0]
        captured.static_input[:n].copy_(x)
        captured.graph.replay()
        out = captured.static_output
        return type(out)(*[t[:n].clone() for t in out])

    def _capture(self, key: tuple[int, ...], like: torch.Tensor) -> _Captured | None:
        try:
            static_input = torch.zeros(key, dtype=like.dtype, device=like.device)
            static_input = static_input.contiguous(memory_format=torch.channels_last)
            side = torch.cuda.Stream(device=like.device)
            side.wait_stream(torch.cuda.current_stream(like.device))
            with torch.cuda.stream(side), exact_fp32(like.device):
                for _ in range(2):  # warm-up: cuDNN picks its algorithms outside the capture
                    self.net(static_input)
            torch.cuda.current_stream(like.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread-local: convert's model thread and the watermark thread keep using the GPU while the main
            # thread captures (the default, "global", would fail their allocations and syncs meanwhile)
            with exact_fp32(like.device), torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                static_output = self.net(static_input)
            captured = _Captured(graph, static_input, static_output)
            self._graphs[key] = captured
            return captured
        except RuntimeError as e:  # pragma: no cover - depends on the driver and the torch build
            log.warning("CUDA graph capture failed (%s); running %s without graphs", e, type(self.net).__name__)
            self._broken = True
            return None


def graphed(net: nn.Module, device: torch.device, enabled: bool, max_batch: int) -> Callable[[torch.Tensor], Any]:
    """``net`` itself, or a :class:`GraphedNetwork` around it when on CUDA and ``enabled``."""
    if enabled and device.type == "cuda":
        return GraphedNetwork(net, max_batch)
    return net
