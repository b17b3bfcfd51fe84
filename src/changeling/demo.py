"""``changeling demo``: the whole pipeline on the bundled public-domain portraits.

Every step skips work that is already done, so rerunning resumes: the clips exist, extraction resumes from its
alignments stores, training continues until the demo's total training time is reached, convert and evaluate
rerun only when the model changed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeling.config import ConvertSettings, ExtractSettings, TrainSettings
from changeling.config.demo import DEMO_PRESET, DEMO_TRAIN
from changeling.evaluate.paired import PairedSpec
from changeling.project import Project, init_project
from changeling.types import DeviceChoice

log = logging.getLogger(__name__)

A_PORTRAIT, B_PORTRAIT = "astronaut", "grace_hopper"
TRAIN_SEEDS = {"A": 1, "B": 2}  # training motions; the held-out motion is PairedSpec.seed
TRAIN_SECONDS = 12.0
CLIP_SIZE = 512  # the whole face spans about 250 px, as in 720p footage: the detail stage learns real detail
CLIP_FPS = 25.0

DEMO_TOML = """\
# changeling demo project: two public-domain portraits animated by changeling.synth
[train]
preset = "{preset}"
snapshot_every = {snapshot_every}   # snapshots along the way feed the quality-versus-time plot
preview_every = 50
save_every = 50
{measured}"""


def demo_toml(preset: str, snapshot_every: int) -> str:
    """The demo project's ``changeling.toml``."""
    measured = "".join(f"{k} = {v!r}   # measured: see bench/RESULTS.md\n".replace("'", '"')
                       for k, v in DEMO_TRAIN.get(preset, {}).items())
    return DEMO_TOML.format(preset=preset, snapshot_every=snapshot_every, measured=measured)


@dataclass
class DemoReport:
    project: Path
    clips: dict[str, Path]
    faces: dict[str, int]
    train_seconds: float
    step: int
    output: Path
    verdict: str
    scores_json: Path
    plot: Path
    preview_grid: Path | None  # A, A->A, A->B, B, B->B, B->A on fixed faces
    frame_preview: Path | None  # A's footage with the swap pasted in
    recognisable: float
    ssim: float
    baseline_ssim: float
    latest: dict[str, Any]  # the newest checkpoint's scores (output/scores.json's last row)

    @property
    def verdict_line(self) -> str:
        from changeling.evaluate.project import verdict_line

        return verdict_line(self.latest)


def sample_clips(project: Project, spec: PairedSpec, progress: bool, *, seconds: float | None = None,
                 size: int | None = None, fps: float = CLIP_FPS) -> dict[str, Path]:
    """The demo's clips in ``PROJECT/inputs``: A and B under their training motions, and A under the held-out
    motion (made once; existing clips are kept)."""
    from changeling.synth import make_clip, make_motion

    seconds = TRAIN_SECONDS if seconds is None else seconds
    size = CLIP_SIZE if size is None else size
    inputs = project.root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    plan = {
        "A": (A_PORTRAIT, TRAIN_SEEDS["A"], seconds, inputs / "A_train.mp4"),
        "B": (B_PORTRAIT, TRAIN_SEEDS["B"], seconds, inputs / "B_train.mp4"),
        "test": (A_PORTRAIT, spec.seed, spec.seconds, inputs / "A_heldout.mp4"),
    }
    out = {}
    for key, (portrait, seed, length, path) in plan.items():
        if not path.exists():
            log.info("making sample clip %s (%s, motion %d, %.0f s)", path.name, portrait, seed, length)
            make_clip(portrait, make_motion(seed=seed, duration=length), size, fps, path, progress=progress)
        out[key] = path
    return out


def _trained_seconds(project: Project) -> tuple[float, int]:
    from changeling.evaluate.project import train_seconds
    from changeling.models.checkpoint import latest_checkpoint, list_checkpoints

    latest = latest_checkpoint(project.model_dir)
    if latest is None:
        return 0.0, 0
    return train_seconds(latest), list_checkpoints(project.model_dir)[-1][0]


def run_demo(root: Path, *, minutes: float = 10.0, preset: str = DEMO_PRESET, device: DeviceChoice = "auto",
             progress: bool = True) -> DemoReport:
    """Make (or resume) a demo project at ``root`` and run every stage; see the module docstring."""
    from changeling.convert import convert
    from changeling.evaluate.project import evaluate_project
    from changeling.extract import extract
    from changeling.faces import list_faces
    from changeling.provenance import verify_file
    from changeling.train.loop import train

    root = Path(root)
    fresh = not (root / "changeling.toml").exists()
    project = init_project(root)
    if fresh:
        snapshot_every = 100 if device == "cpu" or minutes <= 15 else 500
        project.config_path.write_text(demo_toml(preset, snapshot_every), encoding="utf-8")
    settings = project.settings()
    spec = PairedSpec(source=A_PORTRAIT, target=B_PORTRAIT)

    step_t = time.perf_counter()
    clips = sample_clips(project, spec, progress)
    log.info("[1/6] sample clips ready in %s (%.0f s)", clips["A"].parent, time.perf_counter() - step_t)

    ex: ExtractSettings = dataclasses.replace(settings.extract, device=device)
    faces = {}
    for side in ("A", "B"):
        extract(project, side, [clips[side]], ex, progress=progress)
        faces[side] = len(list_faces(project.faces_dir(side)))
    log.info("[2/6] faces extracted: %d of A, %d of B", faces["A"], faces["B"])

    done_s, step = _trained_seconds(project)
    left = minutes * 60 - done_s
    tr: TrainSettings = dataclasses.replace(settings.train, device=device)
    if left > 1:
        log.info("[3/6] training the %s model for %.1f more minutes (%.1f done); Ctrl+C stops and keeps it",
                 tr.preset, left / 60, done_s / 60)
        from changeling.train.frame_preview import frame_preview_for

        result = train(project, dataclasses.replace(tr, max_time=left), progress=progress,
                       frame_preview=frame_preview_for(project))
        step = result.step
        done_s, _ = _trained_seconds(project)
    else:
        log.info("[3/6] training already done (%.1f minutes, step %d); raise --minutes to train longer",
                 done_s / 60, step)

    output = project.output_dir / "demo_swap.mp4"
    model_stamp = max((p.stat().st_mtime for p in project.model_dir.rglob("state.json")), default=0.0)
    if not output.exists() or output.stat().st_mtime < model_stamp:
        cv: ConvertSettings = dataclasses.replace(settings.convert, device=device)
        convert(project, clips["test"], output, cv, progress=progress)
    log.info("[4/6] swap rendered: %s", output)

    report = verify_file(output)
    log.info("[5/6] provenance: %s (%s)", report.verdict, ", ".join(report.evidence) or "no marks")

    ev = evaluate_project(project, spec=spec, device=device, progress=progress)
    last = ev.latest
    log.info("[6/6] paired benchmark scored %d checkpoints", len(ev.rows))
    grid = project.previews_dir / "preview.png"
    frames = project.previews_dir / "frames.png"
    return DemoReport(project=root, clips=clips, faces=faces, train_seconds=done_s, step=step, output=output,
                      verdict=report.verdict, scores_json=ev.json_path, plot=ev.plot_path,
                      preview_grid=grid if grid.exists() else None,
                      frame_preview=frames if frames.exists() else None, recognisable=last["recognisable"],
                      ssim=last["ssim"], baseline_ssim=last["baseline_ssim"], latest=last)
