"""The benchmark cases behind ``changeling bench``. Each makes its own input (synthetic clips from the bundled
portraits), excludes warm-up, and returns ``value`` (the headline figure), ``unit``, ``target`` and details."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

TARGETS = {
    "train-tiny": {"cpu": ">= 60 examples/s", "cuda": ">= 0.9x reference step"},
    "train-lite": {"cpu": ">= 60 examples/s (128 px)", "cuda": "-"},
    "train-lite-liae": {"cpu": ">= 60 examples/s (128 px)", "cuda": "-"},
    "extract-720p": {"cpu": ">= 60 frames/s", "cuda": ">= 1000 frames/s"},
    "convert-720p": {"cpu": ">= 20 frames/s", "cuda": "-"},
    "convert-1080p": {"cpu": "-", "cuda": ">= 150 frames/s"},
    "time-to-recognisable": {"cpu": "<= 600 s", "cuda": "<= 90 s"},
    "live": {"cpu": ">= 25 frames/s, p95 <= 120 ms, <= 5% dropped (640x480 at 30 fps, tiny)", "cuda": "-"},
    "live-720p": {"cpu": ">= 15 frames/s (1280x720 at 30 fps, tiny)", "cuda": "-"},
    "live-1080p-df128": {"cpu": "-", "cuda": ">= 60 frames/s, p95 <= 50 ms (1920x1080 at 60 fps, df 128)"},
}


CPU_BIG_BATCH = 4  # faces per side for the 64-256 px presets on the CPU
CPU_PRESETS = ("tiny", "lite", "lite-liae")  # the presets made for a CPU: measured there at their own batch


def _target(case: str, device: str) -> str:
    if case.startswith("train-") and case not in TARGETS:  # the GPU-sized presets
        return "-" if device == "cpu" else ">= 0.9x reference, >= 45% of dense bf16 peak"
    return TARGETS.get(case, {}).get("cuda" if device.startswith("cuda") else "cpu", "-")


# ------------------------------------------------------------------------------------------------ training


def _train(preset: str, case: str, device: str, repeats: int, quick: bool = False, **dims: Any) -> dict[str, Any]:
    from changeling.bench.train_bench import bench_train

    window: dict[str, Any] = {"seconds": 3.0, "compile": "off"} if quick else {}
    if device == "cpu" and preset not in CPU_PRESETS:  # GPU-sized: a small batch, so a CPU row takes minutes
        window.update(batch_size=CPU_BIG_BATCH, warmup=1)
    out = bench_train(preset, device, repeats=repeats, **window, **dims)
    return {"value": out["examples_per_s"], "unit": "examples/s", "target": _target(case, device), **out,
            "detail_keys": [k for k in ("ratio_to_reference", "tflops", "batch", "peak_memory_mb",
                                        "gflop_per_example") if k in out]}


def train_tiny(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _train("tiny", "train-tiny", device, repeats, quick=quick)


def train_lite(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _train("lite", "train-lite", device, repeats, quick=quick)


def train_lite_liae(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _train("lite-liae", "train-lite-liae", device, repeats, quick=quick)


def train_original(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _train("original", "train-original", device, repeats, quick=quick)


def train_df128(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _train("df", "train-df128", device, repeats, resolution=128, quick=quick)


def train_df256(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _train("df", "train-df256", device, repeats, resolution=256, quick=quick)


def train_liae128(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _train("liae", "train-liae128", device, repeats, resolution=128, quick=quick)


def train_ddp(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    """What DistributedDataParallel costs on one device: the same preset (df 128 px on a GPU, tiny on the
    CPU) trained plainly and through DDP in a one-process group, alternating, in one process."""
    from changeling.bench.train_bench import bench_train

    cuda = device.startswith("cuda")
    preset = "df" if cuda else "tiny"
    dims: dict[str, Any] = {"resolution": 128} if cuda else {}
    window: dict[str, Any] = {"seconds": 3.0, "compile": "off"} if quick else {}
    plain, ddp = [], []
    for _ in range(max(1, repeats)):
        plain.append(bench_train(preset, device, reference=False, **window, **dims)["examples_per_s"])
        ddp.append(bench_train(preset, device, reference=False, ddp=True, **window, **dims)["examples_per_s"])
    p, d = float(np.median(plain)), float(np.median(ddp))
    return {"value": d, "unit": "examples/s", "target": "single-device DDP overhead (recorded, no target)",
            "preset": f"{preset}{dims.get('resolution', '')}", "plain_examples_per_s": round(p, 1),
            "ddp_over_plain": round(d / p, 3), "compile": window.get("compile", "auto"),
            "detail_keys": ["preset", "plain_examples_per_s", "ddp_over_plain", "compile"]}


# ---------------------------------------------------------------------------------------------- extraction


def moving_portrait_frames(n: int, width: int = 1280, height: int = 720) -> list[np.ndarray]:
    """The astronaut portrait moving, turning and scaling over a ``width`` x ``height`` frame."""
    from changeling.synth import load_portrait

    face = load_portrait("astronaut").image
    cx, cy = face.shape[1] / 2, face.shape[0] / 2
    frames = []
    for k in range(n):
        t = k / max(n - 1, 1)
        scale = (height / face.shape[0]) * (0.8 + 0.2 * np.sin(2 * np.pi * t))
        ang = np.deg2rad(10 * np.sin(4 * np.pi * t))
        c, s = np.cos(ang) * scale, np.sin(ang) * scale
        m = np.array([[c, -s, 0.0], [s, c, 0.0]])
        m[:, 2] = np.array([width / 2 + width / 5 * np.sin(2 * np.pi * t), height / 2]) - m[:, :2] @ [cx, cy]
        frames.append(cv2.warpAffine(face, m, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
    return frames


def extract_720p(device: str, repeats: int, quick: bool = False, frames: int = 240) -> dict[str, Any]:
    """Extraction end to end (decode, detect or track, landmark, align, mask, PNG + SQLite) of a 720p clip."""
    from changeling.config import ExtractSettings
    from changeling.extract import extract
    from changeling.project import init_project
    from changeling.video.testclip import write_clip

    n = frames if device == "cpu" else frames * (2 if quick else 4)
    rates = []
    stages: dict[str, float] = {}
    decoder = ""
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip720.mp4", width=1280, height=720, fps=30,
                          images=moving_portrait_frames(n), audio="aac", crf=20)
        settings = ExtractSettings(device="cuda" if device.startswith("cuda") else "cpu",
                                   batch_size=16 if device == "cpu" else 256)
        for r in range(repeats + 1):  # the first run warms up (model load, kernels) and is not counted
            project = init_project(Path(tmp) / f"p{r}")
            t0 = time.perf_counter()
            report = extract(project, "A", [clip], settings, progress=False)
            dt = time.perf_counter() - t0
            if r:
                rates.append(report.frames_read / dt)
                stages = {k: round(1000 * v / max(report.frames_read, 1), 2) for k, v in sorted(report.stages.items())}
                decoder = report.sources[0].decoder
    value = float(np.median(rates))
    return {"value": value, "unit": "frames/s", "target": _target("extract-720p", device), "frames": n,
            "runs": [round(x, 1) for x in rates], "decoder": decoder, "stages_ms": stages,
            "detail_keys": ["frames", "runs", "decoder", "stages_ms"]}


def _decode_rate(clip: Path, hwaccel: Any = None, keep_every: int = 0,
                 to_rgb: Callable[[Any], np.ndarray] | None = None) -> tuple[float, list[np.ndarray]]:
    """Frames per second of decoding ``clip`` to RGB the way the reader does (frame threads,
    ``video.yuv.frame_to_rgb``) or with ``to_rgb``, optionally through ``hwaccel``; every ``keep_every``-th
    frame is kept for comparison. OpenCV runs on one thread, as inside extraction and convert (swscale's
    ``threads=0`` still uses every core)."""
    import av

    from changeling.threads import opencv_threads
    from changeling.video.yuv import frame_to_rgb

    convert = to_rgb or frame_to_rgb
    kept: list[np.ndarray] = []
    with opencv_threads(1), av.open(str(clip), hwaccel=hwaccel) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t0 = time.perf_counter()
        n = 0
        for frame in container.decode(stream):
            image = convert(frame)
            if keep_every and n % keep_every == 0:
                kept.append(image)
            n += 1
        return n / (time.perf_counter() - t0), kept


def _process_decode_rate(clip: Path) -> float:
    """Frames per second delivered by the child-process decoder (``video.process_reader``), from the first
    frame on (the child's start-up is not counted)."""
    from changeling.video.process_reader import ProcessFrames
    from changeling.video.reader import open_frames

    n, t0, t1 = 0, 0.0, 0.0
    for _ in ProcessFrames(open_frames(clip), slots=16):
        t1 = time.perf_counter()  # (the child's shutdown after the last frame is not counted either)
        if n == 0:
            t0 = t1
        n += 1
    return (n - 1) / (t1 - t0) if n > 1 and t1 > t0 else 0.0


def decode_720p(device: str, repeats: int, quick: bool = False, frames: int = 480) -> dict[str, Any]:
    """Decoding alone, 720p H.264 to RGB: the software path extraction and convert use (in this thread, with
    swscale's conversion beside it as the A/B, and through the child-process decoder with its shared-memory
    hand-over), and on a CUDA device
    FFmpeg's NVDEC path (PyAV's ``HWAccel("cuda")``), with the largest pixel difference between the two.
    Extraction on the H100 waits on its decoder; this case says what hardware decoding would give."""
    from changeling.video.testclip import write_clip
    from changeling.video.yuv import swscale_rgb

    n = frames if quick or device == "cpu" else 2 * frames
    out: dict[str, Any] = {"unit": "frames/s", "target": "- (extract-720p's decoder)", "frames": n}
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip720.mp4", width=1280, height=720, fps=30,
                          images=moving_portrait_frames(n), audio=None, crf=20)
        _decode_rate(clip)  # warm-up
        runs, sws_runs = [], []
        for _ in range(max(1, repeats)):  # alternating: the reader's conversion against swscale for every frame
            runs.append(_decode_rate(clip)[0])
            sws_runs.append(_decode_rate(clip, to_rgb=swscale_rgb)[0])
        out.update(value=float(np.median(runs)), runs=[round(r, 1) for r in runs],
                   swscale_frames_per_s=round(float(np.median(sws_runs)), 1))
        out["process_frames_per_s"] = round(float(np.median([_process_decode_rate(clip)
                                                           for _ in range(max(1, repeats))])), 1)
        if device.startswith("cuda"):
            try:
                from av.codec.hwaccel import HWAccel, hwdevices_available

                if "cuda" not in hwdevices_available():
                    raise RuntimeError("this FFmpeg build has no cuda hardware device")
                hw = HWAccel("cuda", allow_software_fallback=False)
                _decode_rate(clip, hw)  # warm-up
                hw_runs = [_decode_rate(clip, hw)[0] for _ in range(max(1, repeats))]
                # (both through swscale: the difference is the decoders')
                _, sw_frames = _decode_rate(clip, keep_every=16, to_rgb=swscale_rgb)
                _, hw_frames = _decode_rate(clip, hw, keep_every=16, to_rgb=swscale_rgb)
                diff = max(int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(sw_frames, hw_frames,
                                                                                     strict=True))
                out.update(hw_frames_per_s=round(float(np.median(hw_runs)), 1), hw_max_diff=diff)
            except Exception as exc:  # noqa: BLE001 - the finding is what failed
                out.update(hw_error=f"{type(exc).__name__}: {exc}"[:300])
    out["detail_keys"] = [k for k in ("frames", "runs", "swscale_frames_per_s", "process_frames_per_s", "hw_frames_per_s", "hw_max_diff", "hw_error") if k in out]
    return out


# ------------------------------------------------------------------------------------------------- convert


def _convert(resolution: str, device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    from changeling.bench.convert_bench import bench_convert

    frames = 120 if device == "cpu" else (300 if quick else 600)
    # on a GPU each run also converts the clip with the NumPy watermark in the render threads (the A/B for
    # the batched GPU marker), the two in alternating order over the repeats
    # The model is tiny behind its default 4x detail stage (faces rendered at 256 px); each repeat also converts
    # with the plain 64 px model (the detail stage's cost), the two in alternating order
    runs, plain = [], []
    for i in range(repeats):
        for with_detail in ((True, False) if i % 2 == 0 else (False, True)):
            if with_detail:
                runs.append(bench_convert(resolution, device, frames, cpu_marker_too=True,
                                          cpu_marker_first=bool(i % 2)))
            else:
                plain.append(bench_convert(resolution, device, frames, detail=1)["fps"])
    best = sorted(runs, key=lambda r: r["fps"])[len(runs) // 2]
    out = {"value": best["fps"], "unit": "frames/s", "target": _target(f"convert-{resolution}", device),
           "frames": frames, "face_px": best["face_px"], "runs": [round(r["fps"], 1) for r in runs],
           "no_detail_runs": [round(f, 1) for f in plain], "stages_ms": best.get("stages_ms")}
    if "cpu_marker_fps" in best:
        out.update(cpu_marker_runs=[r["cpu_marker_fps"] for r in runs],
                   cpu_marker_stages_ms=best["cpu_marker_stages_ms"])
    out["detail_keys"] = [k for k in ("frames", "face_px", "runs", "no_detail_runs", "stages_ms", "cpu_marker_runs",
                                      "cpu_marker_stages_ms") if k in out]
    return out


def convert_720p(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _convert("720p", device, repeats, quick)


def convert_1080p(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    return _convert("1080p", device, repeats, quick)


# -------------------------------------------------------------------------------------- time to recognisable


def time_to_recognisable(device: str, repeats: int, quick: bool = False, budget_s: float | None = None,
                         preset: str | None = None) -> dict[str, Any]:
    """Train on the demo's training clips with the demo's settings and score the held-out sequence as training
    goes (evaluation time excluded): the training time until >= 90% of held-out frames are closer to B than to
    A (every few steps, at the model's resolution), the time until the swap is convincing (the view-size
    scores, every ``VIEW_PROBE_S`` seconds of training), and every score at the end of the budget."""
    from changeling.config import ExtractSettings, TrainSettings
    from changeling.config.demo import DEMO_PRESET, DEMO_TRAIN
    from changeling.demo import sample_clips
    from changeling.evaluate.paired import PairedSpec, make_paired_data
    from changeling.extract import extract
    from changeling.project import init_project
    from changeling.train.loop import train

    cuda = device.startswith("cuda")
    budget = budget_s if budget_s is not None else (90.0 if cuda else 600.0) / (3 if quick else 1)
    preset = preset or DEMO_PRESET
    spec = PairedSpec()
    with tempfile.TemporaryDirectory() as tmp:
        project = init_project(Path(tmp) / "ttr")
        clips = sample_clips(project, spec, progress=False)
        ex = ExtractSettings(device="cuda" if cuda else "cpu")
        for side in ("A", "B"):
            extract(project, side, [clips[side]], ex, progress=False)
        settings = TrainSettings(preset=cast(Any, preset), device="cuda" if cuda else "cpu", max_time=budget,
                                 preview_every=25 if cuda else 10, save_every=10_000, **DEMO_TRAIN.get(preset, {}))
        data: dict[tuple[int, str], Any] = {}
        trace: list[dict[str, float]] = []
        eval_s = 0.0
        next_view = 0.0
        t_start = time.perf_counter()

        def probe(model: Any, step: int, _previews: Path) -> None:
            nonlocal eval_s, next_view
            t0 = time.perf_counter()
            train_s = t0 - t_start - eval_s
            cfg = model.config
            key = (cfg.resolution, "whole")
            if key not in data:
                data[key] = make_paired_data(spec, cfg.resolution, "whole")
            view = train_s >= next_view or train_s >= budget - VIEW_PROBE_S / 2
            if view:
                next_view = train_s + VIEW_PROBE_S
            s = _quick_scores(model, data[key], view=view)
            eval_s += time.perf_counter() - t0
            trace.append({"step": step, "train_s": train_s, **s})

        train(project, settings, progress=False, frame_preview=probe)
    first = next((t for t in trace if t["recognisable"] >= 0.9), None)
    convincing = next((t for t in trace if t.get("convincing")), None)
    viewed = [t for t in trace if "view_ssim" in t]
    last = trace[-1] if trace else {}
    end = viewed[-1] if viewed else {}
    return {"value": first["train_s"] if first else float("nan"), "unit": "s", "preset": preset,
            "target": _target("time-to-recognisable", device), "budget_s": budget,
            "ssim_at_end": last.get("ssim"), "psnr_at_end": last.get("psnr"),
            "recognisable_at_end": last.get("recognisable"), "steps": last.get("step"),
            "view_ssim_at_end": end.get("view_ssim"), "view_detail_at_end": end.get("view_detail"),
            "view_psnr_at_end": end.get("view_psnr"),
            "time_to_convincing_s": convincing["train_s"] if convincing else None, "trace": trace,
            "detail_keys": ["preset", "budget_s", "ssim_at_end", "view_ssim_at_end", "view_detail_at_end",
                            "time_to_convincing_s", "steps"]}


VIEW_PROBE_S = 60.0  # seconds of training between the (slower) view-size probes of time_to_recognisable


def _quick_scores(model: Any, data: Any, *, view: bool = False) -> dict[str, float]:
    from changeling.config import ConvertSettings
    from changeling.evaluate.paired import score_outputs, swap_sequence

    was = model.training
    model.eval()
    try:
        s = score_outputs(swap_sequence(model, data.a, "B", ConvertSettings().face_smooth), data, landmarks=False,
                          view=view)
    finally:
        model.train(was)
    out = {"ssim": s.ssim, "psnr": s.psnr, "recognisable": s.recognisable}
    if view:
        out.update(view_ssim=s.view_ssim, view_detail=s.view_detail, view_psnr=s.view_psnr,
                   convincing=float(s.is_convincing()))
    return out


# ---------------------------------------------------------------------------------------------- occlusion


def occlusion(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    """The occlusion segmenter on a 300-face synthetic project, scored on a held-out occluded sequence (see
    :mod:`changeling.bench.occlusion`): IoU, occluder pixels kept by convert, clear-frame SSIM, training time."""
    from changeling.bench.occlusion import run
    from changeling.config import MasksSettings

    dev: Any = "cuda" if device.startswith("cuda") else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        s = run(Path(tmp), masks=MasksSettings(device=dev), pair_seconds=40.0 if quick else 120.0)
    s["ssim_clear_drop"] = round(s["ssim_clear_hull"] - s["ssim_clear_occlusion"], 4)
    keys = ["iou_covered_part", "iou_clear", "kept", "kept_all", "kept_without_segmenter", "ssim_clear_occlusion",
            "ssim_clear_hull", "ssim_clear_drop", "train_s", "segmenter_steps", "faces", "occluded_frames"]
    return {"value": s["iou"], "unit": "IoU", **s, "detail_keys": keys,
            "target": "IoU >= 0.90; kept >= 0.95; ssim_clear_drop <= 0.01; train_s <= 300"}


def convert_720p_occlusion(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    """convert-720p with the occlusion mask on (an untrained segmenter: its speed does not depend on its
    weights), alternating with runs without it; the segmenter's own milliseconds per frame."""
    from changeling.bench.convert_bench import bench_convert

    on: list[dict[str, Any]] = []
    off: list[dict[str, Any]] = []
    for i in range(max(1, repeats)):
        for occ in ((True, False) if i % 2 == 0 else (False, True)):
            (on if occ else off).append(bench_convert("720p", device, 120, occlusion=occ))
    best = sorted(on, key=lambda r: r["fps"])[len(on) // 2]
    return {"value": best["fps"], "unit": "frames/s", "target": _target("convert-720p", device),
            "runs": [round(r["fps"], 1) for r in on], "runs_without": [round(r["fps"], 1) for r in off],
            "occlusion_ms_per_frame": best["stages_ms"].get("occlusion"),
            "render_mask_ms_per_frame": best["stages_ms"].get("render_mask"), "stages_ms": best["stages_ms"],
            "detail_keys": ["runs", "runs_without", "occlusion_ms_per_frame", "render_mask_ms_per_frame",
                            "stages_ms"]}


# ------------------------------------------------------------------------------------------------ live


def _live(case: str, device: str, repeats: int, quick: bool, width: int, height: int, **kw: Any) -> dict[str, Any]:
    from changeling.bench.live_bench import bench_live

    out = bench_live(width, height, device, repeats=repeats, seconds=5.0 if quick else 10.0, **kw)
    keys = ["input", "preset", "p50_ms", "p95_ms", "drop_rate", "runs", "p95_runs", "drop_runs", "frames_in",
            "frames_out", "stages_ms"]
    return {"value": out["fps"], "unit": "frames/s", "target": _target(case, device), **out, "detail_keys": keys}


def live_640(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    """``changeling live`` on a 640x480 clip played at 30 frames/s, tiny model: output rate, latency, drops."""
    return _live("live", device, repeats, quick, 640, 480)


def live_720p(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    """The same at 1280x720."""
    return _live("live-720p", device, repeats, quick, 1280, 720)


def live_1080p_df128(device: str, repeats: int, quick: bool = False) -> dict[str, Any]:
    """1920x1080 played at 60 frames/s with a df model at 128 px (the GPU target)."""
    return _live("live-1080p-df128", device, repeats, quick, 1920, 1080, fps=60.0, preset="df", resolution=128)
