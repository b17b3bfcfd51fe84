"""Correctness checks that need a CUDA device, run first by ``bench/gpu_all.sh`` (the test suite's CUDA
tests skip on the CPU machines where CI runs). Prints one line per check and exits non-zero if one fails.

- the batched GPU watermark (``BatchMarker``) from eight threads at once: every frame within one level of
  the NumPy embedder and read back with full agreement;
- the compiled augmentation (what the trainer compiles on a GPU) against the eager one, same draws.
"""

from __future__ import annotations

import sys
import threading
import time

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


def main() -> int:
    failed = 0
    for check in (check_batch_marker, check_compiled_augment):
        try:
            print(check(), flush=True)
        except Exception as exc:  # noqa: BLE001 - report every check
            failed += 1
            print(f"FAILED {check.__name__}: {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
