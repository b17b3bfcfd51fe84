"""Speed of the ported MediaPipe face models: detector and landmarker milliseconds per frame at batch 1 and 16,
and the tracker's frames per second on a synthetic 720p clip (frames made in memory: decoding excluded).

    python bench/detect_speed.py [--device cpu|cuda] [--threads 1] [--frames 120] [--lanes 1]

Wall time is the median over repeats after a warm-up; CPU time (this process, all threads) is printed beside it
because wall time on a shared machine includes waiting for other processes.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from skimage import data

from changeling.detect import BlazeFaceDetector, FaceLandmarker, FaceTracker, roi_from_detection
from changeling.detect.weights import set_memory_format


def clip_720p(count: int) -> list[np.ndarray]:
    """The astronaut's head (about 300 px) drifting and turning over a gradient background, 1280×720."""
    face = cv2.resize(data.astronaut()[0:300, 110:410], (320, 320), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:720, 0:1280]
    background = np.stack([xx * 200 // 1280, yy * 200 // 720, np.full_like(xx, 90)], -1).astype(np.uint8)
    frames = []
    for i in range(count):
        m = cv2.getRotationMatrix2D((160, 160), 8 * np.sin(i / 15), 1.0)
        moved = cv2.warpAffine(face, m, (320, 320), borderMode=cv2.BORDER_REFLECT)
        x, y = 300 + int(200 * np.sin(i / 40)), 180 + int(60 * np.cos(i / 30))
        frame = background.copy()
        frame[y:y + 320, x:x + 320] = moved
        frames.append(frame)
    return frames


def measure(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of ``fn`` after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def profile_networks(device: torch.device) -> None:
    """Time the raw networks in both memory formats and list their most expensive operators."""
    from torch.profiler import ProfilerActivity, profile

    lm = FaceLandmarker(device=device, iris=True)
    nets = {"mesh": (lm.mesh_net, 192), "iris": (lm.iris_net, 64)}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for name, (net, size) in nets.items():
        assert net is not None
        for fmt in (torch.channels_last, torch.contiguous_format):
            set_memory_format(net, fmt)
            x = torch.rand(16, 3, size, size, device=device).contiguous(memory_format=fmt)
            with torch.inference_mode():
                wall, _ = measure(functools.partial(net, x), 5, device)
                print(json.dumps({"net": name, "format": str(fmt), "batch": 16, "wall_ms": round(wall * 1e3, 3)}))
                with profile(activities=activities) as prof:
                    net(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
            key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(prof.key_averages().table(sort_by=key, row_limit=8, max_name_column_width=60))
        set_memory_format(net, torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--frames", type=int, default=120, help="length of the tracking clip")
    parser.add_argument("--lanes", type=int, default=0, help="tracker lanes (0: 1 on CPU, 16 on CUDA)")
    parser.add_argument("--chunk", type=int, default=0,
                        help="frames per tracker call (0: 64 on CPU, the whole clip on CUDA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="also print the slowest kernels of the landmark networks at batch 16, per memory format")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    frames = clip_720p(max(args.frames, 16))
    rows: list[dict[str, object]] = []

    def row(what: str, batch: int, per: int, wall: float, cpu: float) -> None:
        rows.append({"what": what, "batch": batch, "wall_ms_per_item": round(wall / per * 1e3, 2),
                     "cpu_ms_per_item": round(cpu / per * 1e3, 2)})

    for variant in ("short", "full"):
        det = BlazeFaceDetector(variant, device=device)  # type: ignore[arg-type]
        for batch in (1, 16):
            wall, cpu = measure(functools.partial(det.detect, frames[:batch]), args.repeats, device)
            row(f"detector {variant} (720p frame)", batch, batch, wall, cpu)
    det = BlazeFaceDetector("full", device=device)
    rois = [roi_from_detection(d[0]) for d in det.detect(frames[:16])]
    for iris in (False, True):
        lm = FaceLandmarker(device=device, iris=iris)
        for batch in (1, 16):
            wall, cpu = measure(functools.partial(lm, frames[:batch], rois[:batch]), args.repeats, device)
            row(f"landmarker {'478 (mesh+iris)' if iris else '468 (mesh)'} per face", batch, batch, wall, cpu)
    lanes = args.lanes or (16 if device.type == "cuda" else 1)
    chunk = args.chunk or (args.frames if device.type == "cuda" else 64)
    for iris in (False, True):
        tracker = FaceTracker(det, FaceLandmarker(device=device, iris=iris), lanes=lanes)
        clip = frames[: args.frames]

        def track(tracker: FaceTracker = tracker, clip: list[np.ndarray] = clip) -> None:
            tracker.reset()
            for start in range(0, len(clip), chunk):
                tracker.process(clip[start:start + chunk])

        wall, cpu = measure(track, max(1, args.repeats // 2), device)
        runs = tracker.detector_runs
        rows.append({"what": f"tracker 720p {'478' if iris else '468'} points, lanes={lanes}, chunk={chunk}",
                     "frames": len(clip),
                     "fps_wall": round(len(clip) / wall, 1), "fps_cpu": round(len(clip) / cpu, 1),
                     "detector_runs_per_pass": runs})
    if args.profile:
        profile_networks(device)
    info = {"device": str(device), "threads": args.threads, "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None}
    print(json.dumps(info))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
