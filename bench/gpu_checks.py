"""Correctness checks that need a CUDA device, run first by ``bench/gpu_all.sh`` (the test suite's CUDA
tests skip on the CPU machines where CI runs). Prints one line per check and exits non-zero if one fails.

- the batched GPU watermark (``BatchMarker``) from eight threads at once: every frame within one level of
  the NumPy embedder and read back with full agreement;
- the compiled augmentation (what the trainer compiles on a GPU) against the eager one, same draws;
- CUDA-graph captures of a detection network while another thread allocates, computes and synchronises on
  the GPU (convert's model thread does that while the main thread's tracker may capture a new batch size);
- convert's model wrapper, run on its own stream from another thread, against the model on the default stream.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import NamedTuple

import numpy as np
import torch


def check_batch_marker() -> str:
    from changeling.provenance.batch_marker import BatchMarker
    from changeling.provenance.watermark import detect_watermark, embed_watermark

    rng = np.random.default_rng(0)
    base = (rng.random((1080 // 8, 1920 // 8, 3)) * 255).astype(np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))  # smooth enough to read back like a real frame
    frames = [np.roll(base, 5 * i, axis=1) for i in range(16)]
    marker = BatchMarker("cuda")
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        got[i] = marker(frames[i])

    ms = 0.0
    for _ in range(2):  # the first round warms up (CUDA context, page-locked buffers); the second is timed
        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ms = 1000 * (time.perf_counter() - t0) / 16
    worst = max(int(np.abs(got[i].astype(int) - embed_watermark(f)).max()) for i, f in enumerate(frames))
    found = all(detect_watermark(got[i]) == (True, 1.0) for i in range(0, 16, 5))
    assert worst <= 1 and found, (worst, found)
    return (f"BatchMarker ok: 2 x 16 1080p frames from 16 threads in batches {list(marker.batches)}, max diff {worst}, "
            f"{ms:.2f} ms/frame warm, marking thread {({k: round(v, 3) for k, v in marker.seconds.items()})} s")


def check_compiled_augment() -> str:
    from changeling.train.augment import AugmentSettings, apply_draws, draw

    g = torch.Generator(device="cuda").manual_seed(1)
    img = torch.randint(0, 256, (64, 3, 128, 128), dtype=torch.uint8, device="cuda", generator=g)
    masks = torch.randint(0, 256, (64, 3, 128, 128), dtype=torch.uint8, device="cuda", generator=g)
    d = draw(64, AugmentSettings(), g, img.device)
    eager = apply_draws(img, masks, d.thetas, d.coarse, d.color)
    compiled = torch.compile(apply_draws)(img, masks, d.thetas, d.coarse, d.color)
    worst = max(float((e - c).abs().max()) for e, c in zip(eager, compiled, strict=True))
    assert worst < 1e-3, worst
    return f"compiled augmentation ok: max diff {worst:.2e}"


def check_graph_capture_beside_a_busy_thread() -> str:
    from torch import nn

    from changeling.detect.frames import exact_fp32
    from changeling.detect.graphs import GraphedNetwork

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1)).cuda().eval()

    class _Out(NamedTuple):  # GraphedNetwork expects a named tuple of outputs, like the detection networks
        y: torch.Tensor

    class _Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> _Out:
            return _Out(self.net(x))

    graphed = GraphedNetwork(_Named().eval(), max_batch=16)
    stop = threading.Event()
    errors: list[BaseException] = []
    rounds = [0]

    def busy() -> None:  # what the model thread does: new tensors, kernels, a synchronising download
        try:
            while not stop.is_set():
                a = torch.randn(512, 512, device="cuda")
                (a @ a).sum().cpu()
                rounds[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        worst = 0.0
        with torch.inference_mode():
            for n in (1, 2, 3, 5, 9, 16):  # each new bucket is a capture while the other thread runs
                x = torch.rand(n, 3, 64, 64, device="cuda")
                with exact_fp32(x.device):  # as the graph runs it (no TF32)
                    plain = net(x)
                worst = max(worst, float((graphed(x)[0] - plain).abs().max()))
    finally:
        stop.set()
        worker.join()
    assert not errors, errors[0]
    assert not graphed._broken and len(graphed._graphs) == 5, (graphed._broken, len(graphed._graphs))
    assert worst < 1e-4, worst
    return f"graph captures beside a busy thread ok: 5 buckets, max diff {worst:.1e}, {rounds[0]} rounds of other work"


def check_model_swapper_on_its_stream() -> str:
    from changeling.convert.sources import ModelSwapper
    from changeling.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("tiny").cuda().eval()
    r = model.resolution
    crops = (np.random.default_rng(0).random((8, r, r, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(crops).cuda().permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.swap(x, to="B")  # on the default stream, in this thread
    expected = out.face.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    swapper = ModelSwapper(model, resolution=r, face_type="whole", to="B", device="cuda")
    got: list[np.ndarray] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            for _ in range(5):
                got.append(swapper(crops)[0])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=call)  # as convert's model thread, while this one keeps the GPU busy
    t.start()
    while t.is_alive():
        a = torch.randn(1024, 1024, device="cuda")
        (a @ a).sum().cpu()
    t.join()
    assert not errors, errors[0]
    worst = max(float(np.abs(g - expected).max()) for g in got)
    assert len(got) == 5 and worst < 1e-2, (len(got), worst)
    return f"ModelSwapper on its own stream ok: 5 calls from a thread, max diff {worst:.1e} from the default stream's"


def main() -> int:
    failed = 0
    for check in (check_batch_marker, check_graph_capture_beside_a_busy_thread, check_model_swapper_on_its_stream,
                  check_compiled_augment):  # (the compiling one last)
        try:
            print(check(), flush=True)
        except Exception as exc:  # noqa: BLE001 - report every check
            failed += 1
            print(f"FAILED {check.__name__}: {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
