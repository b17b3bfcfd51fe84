"""Faults: training, extraction and convert killed with SIGKILL at random (seeded) moments, a full disk during a
checkpoint save, NaN injected into a running trainer, and two trainers on one project.

The training runs are the real ``changeling train`` command (``changeling.cli.main``) in processes forked from a
server that has already imported torch (:class:`Launcher`), so twenty restarts cost seconds rather than a
minute of imports; each is a separate process that receives a real SIGKILL. Extraction and convert run as
``python -m changeling`` subprocesses.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from changeling.errors import UserError
from changeling.faces.facefile import list_faces, read_face
from changeling.faces.store import AlignmentStore, alignments_path
from changeling.models import checkpoint as mck
from changeling.models.load import load_for_inference
from changeling.models.registry import Dims, create_model, preset_config
from changeling.project import Project, init_project
from changeling.train import checkpoint as ck
from changeling.train.testfaces import make_faces, portrait
from changeling.video.testclip import pattern_frame, write_clip
from changeling.video.writer import partials
from conftest import decode_all, run_cli

SEED = 20261126
KILLS = 20  # SIGKILLs of a training run
SAVE_EVERY = 2  # steps between checkpoints in the kill tests: at most this many steps may be lost per kill
SMALL = {"resolution": 32, "e_dims": 4, "ae_dims": 16, "d_dims": 8, "batch_size": 2, "preview_every": 0,
         "device": "cpu", "precision": "fp32", "lr": 1e-3}
# what the server imports once, so that a forked trainer starts in a fraction of a second
PRELOAD = ["torch", "torch._dynamo", "torch.optim", "changeling.cli", "changeling.train.loop",
           "changeling.train.checkpoint", "changeling.train.data", "matplotlib.figure",
           "matplotlib.backends.backend_agg", "test_faults"]
STEP_DIR = re.compile(r"^step-\d{8}$")


# ---------------------------------------------------------------------------------------- process helpers


def _child(argv: list[str], out: str, err: str, env: dict[str, str],
           hook: tuple[Callable[..., None], tuple[Any, ...]] | None) -> None:
    """Body of a forked process: the CLI's ``main`` with stdout/stderr in files, exit with its code."""
    os.environ.clear()
    os.environ.update(env)
    for fd, name in ((1, out), (2, err)):
        os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    torch.set_num_threads(1)
    import tqdm  # a thread lock for the progress bars: tqdm's default process lock would outlive a SIGKILL

    tqdm.tqdm.set_lock(threading.RLock())
    if hook is not None:
        hook[0](*hook[1])
    from changeling.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class Run:
    """One started CLI process."""

    proc: Any  # multiprocessing.Process or subprocess.Popen
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc.is_alive() if hasattr(self.proc, "is_alive") else self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.exitcode if hasattr(self.proc, "exitcode") else self.proc.returncode

    def kill(self) -> None:
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.wait(60)

    def wait(self, timeout: float = 300) -> int:
        if hasattr(self.proc, "join"):
            self.proc.join(timeout)
        else:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
            raise AssertionError(f"process {self.pid} did not finish in {timeout} s")
        code = self.returncode
        assert code is not None
        return int(code)

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""


class Launcher:
    """Starts ``changeling`` commands as processes forked from a server that imported torch once."""

    def __init__(self, logs: Path) -> None:
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)
        self.logs = logs
        self.count = 0

    def start(self, argv: Sequence[str], hook: tuple[Callable[..., None], tuple[Any, ...]] | None = None) -> Run:
        self.count += 1
        out, err = self.logs / f"run{self.count}.out", self.logs / f"run{self.count}.err"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = self.ctx.Process(target=_child, args=(list(argv), str(out), str(err), env, hook))
        proc.start()
        return Run(proc, out, err)


def popen_cli(args: Sequence[str], logs: Path, name: str) -> Run:
    """``python -m changeling ARGS`` as a plain subprocess (output in files)."""
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "changeling", *args], stdout=fo, stderr=fe,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    return Run(proc, out, err)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Launcher:
    return Launcher(tmp_path_factory.mktemp("runs"))


def wait_for(cond: Callable[[], object], timeout: float = 120.0, poll: float = 0.01) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(poll)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


# ------------------------------------------------------------------------------------------ training helpers


def make_project(root: Path, n: int = 4) -> Project:
    project = init_project(root)
    make_faces(project.faces_dir("A"), "A", n, size=32)
    make_faces(project.faces_dir("B"), "B", n, size=32)
    return project


def train_args(project: Project, **kw: object) -> list[str]:
    args = ["train", "-p", str(project.root), "-q"]
    for k, v in {**SMALL, **kw}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def checkpoint_folders(model_dir: Path) -> list[Path]:
    """Every folder under a final ``step-*`` name, checkpoints and snapshots."""
    return [p for sub in ("checkpoints", "snapshots") if (model_dir / sub).is_dir()
            for p in sorted((model_dir / sub).iterdir()) if STEP_DIR.match(p.name)]


def unreadable_checkpoints(model_dir: Path) -> list[Path]:
    """Checkpoint folders under a final name that do not load (checksums verified) or hold non-finite weights;
    anything else in the folders must be a hidden temporary."""
    for sub in ("checkpoints", "snapshots"):
        if (model_dir / sub).is_dir():
            for p in (model_dir / sub).iterdir():
                assert STEP_DIR.match(p.name) or p.name.startswith(".step-"), p
    bad = []
    for folder in checkpoint_folders(model_dir):
        try:
            loaded = mck.read_checkpoint(folder)
        except UserError:
            bad.append(folder)
            continue
        if not all(bool(torch.isfinite(t).all()) for t in loaded.weights.values()):
            bad.append(folder)
    return bad


def assert_all_readable(model_dir: Path) -> None:
    bad = unreadable_checkpoints(model_dir)
    assert bad == [], [(p, sorted(q.name for q in p.iterdir())) for p in bad]


class _Killed(BaseException):
    """Stands for a SIGKILL in the API-level simulation below."""


def interrupted_retention(model_dir: Path) -> list[Path]:
    """Save checkpoints 0, 1, 2 keeping the last 2, with the deletion of step 0 cut short after its first file
    (as a SIGKILL there would); return the folders under a final name that then fail to load."""
    config = preset_config("tiny", Dims(resolution=32, e_dims=4, ae_dims=8, d_dims=4))
    weights = create_model("tiny", config).state_dict()
    for step in (0, 1):
        ck.save_checkpoint(model_dir, "tiny", config, "whole", ck.SaveRequest(step=step, weights=weights),
                           keep_last=2)
    real = shutil.rmtree

    def dies_midway(path: Any, *args: Any, **kw: Any) -> None:
        (Path(path) / mck.STATE).unlink(missing_ok=True)
        raise _Killed

    shutil.rmtree = dies_midway  # type: ignore[assignment]
    try:
        ck.save_checkpoint(model_dir, "tiny", config, "whole", ck.SaveRequest(step=2, weights=weights), keep_last=2)
    except _Killed:
        pass
    finally:
        shutil.rmtree = real  # type: ignore[assignment]
    return unreadable_checkpoints(model_dir)


def test_a_kill_while_old_checkpoints_are_deleted_leaves_none_unreadable(tmp_path: Path) -> None:
    """A deterministic version of a kill the 20-kill test below can only hit by chance."""
    assert interrupted_retention(tmp_path) == []


def new_records(metrics: Path, offset: int) -> list[dict[str, Any]]:
    """Metric records appended after byte ``offset`` (a line torn by a kill is skipped)."""
    if not metrics.exists():
        return []
    with open(metrics, "rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode("utf-8", "replace").splitlines()
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return out


def latest_step(model_dir: Path) -> int | None:
    found = mck.list_checkpoints(model_dir)
    return found[-1][0] if found else None


# ----------------------------------------------------------------------------------------- training faults


@pytest.mark.slow
def test_training_survives_20_kills_at_random_moments(tmp_path: Path, launcher: Launcher) -> None:
    """20 SIGKILLs (a third of them aimed at a checkpoint being written): after each, every checkpoint folder
    loads, the newest is at most one save interval behind the last step the run reported, and the restart
    resumes from it; the end result is bit-identical to an uninterrupted run of the same length."""
    project = make_project(tmp_path / "killed")
    rng = random.Random(SEED)
    metrics = project.logs_dir / "metrics.jsonl"
    args = train_args(project, max_steps=1_000_000, save_every=SAVE_EVERY, snapshot_every=10)
    previous: int | None = None
    mid_save = 0
    log = []
    for k in range(KILLS):
        offset = metrics.stat().st_size if metrics.exists() else 0
        run = launcher.start(args)
        mode = ("startup", "random", "mid-save")[k % 3]
        if mode == "startup":  # any moment from the start: loading, resuming, training or saving
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            wait_for(lambda r=run, o=offset: new_records(metrics, o) or not r.alive)
            assert run.alive, run.stderr[-2000:]
            if mode == "random":
                time.sleep(rng.uniform(0.0, 0.6))
            else:  # the moment this process's temporary checkpoint folder appears
                root = project.model_dir / "checkpoints"
                tag = f".tmp-{run.pid}"
                wait_for(lambda r=run, t=tag, d=root: (d.is_dir() and any(n.endswith(t) for n in os.listdir(d)))
                         or not r.alive, poll=0.0)
        assert run.alive, f"run {k} ended by itself: {run.stderr[-2000:]}"
        run.kill()
        assert run.returncode == -signal.SIGKILL
        tmp_left = [n for n in os.listdir(project.model_dir / "checkpoints")
                    if n.endswith(f".tmp-{run.pid}")] if (project.model_dir / "checkpoints").is_dir() else []
        mid_save += bool(tmp_left)

        assert_all_readable(project.model_dir)
        now = latest_step(project.model_dir)
        records = new_records(metrics, offset)
        reached = max((r["step"] for r in records), default=None)
        log.append((k, mode, previous, reached, now, bool(tmp_left)))
        if records:  # the run resumed where the previous one left off: its first report is one interval later
            assert records[0]["step"] == (previous or 0) + SAVE_EVERY, log
        if reached is not None:  # at most one save interval of reported steps is lost
            assert now is not None and reached - now <= SAVE_EVERY, log
        if previous is not None:
            assert now is not None and now >= previous, log
        previous = now
    assert mid_save >= 1, f"no kill landed inside a checkpoint save: {log}"
    assert previous is not None and previous >= 10, log  # the runs made progress between the kills

    target = previous + SAVE_EVERY
    final = launcher.start(train_args(project, max_steps=target, save_every=SAVE_EVERY, snapshot_every=10))
    assert final.wait() == 0, final.stderr[-3000:]
    assert f"step {target}:" in final.stdout
    assert_all_readable(project.model_dir)

    straight = make_project(tmp_path / "straight")
    ref = launcher.start(train_args(straight, max_steps=target, save_every=1000))
    assert ref.wait() == 0, ref.stderr[-3000:]
    got = mck.read_checkpoint(project.model_dir / "checkpoints" / mck.step_name(target))
    want = mck.read_checkpoint(straight.model_dir / "checkpoints" / mck.step_name(target))
    assert set(got.weights) == set(want.weights)
    assert all(torch.equal(got.weights[n], want.weights[n]) for n in want.weights), "resume after kills is not exact"
    print(f"{KILLS} kills, {mid_save} inside a checkpoint save, final step {target}: {log}")


def test_second_trainer_refuses_and_a_killed_trainer_releases_the_lock(tmp_path: Path,
                                                                       launcher: Launcher) -> None:
    project = make_project(tmp_path / "p")
    first = launcher.start(train_args(project, max_steps=1_000_000, save_every=SAVE_EVERY))
    try:
        wait_for(lambda: (latest_step(project.model_dir) or 0) >= 2 or not first.alive)
        assert first.alive, first.stderr[-2000:]
        second = run_cli(*train_args(project, max_steps=4))  # a separate, ordinary process
        lines = error_lines(second.stderr)
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"another trainer (process {first.pid})" in lines[0] and str(project.model_dir) in lines[0]
        assert "Traceback" not in second.stderr
        assert first.alive  # the refused trainer did not disturb the running one
    finally:
        first.kill()
    step = latest_step(project.model_dir)
    assert step is not None
    third = launcher.start(train_args(project, max_steps=step + 2, save_every=SAVE_EVERY))
    assert third.wait() == 0, third.stderr[-2000:]
    assert f"step {step + 2}:" in third.stdout


def _poison(at_steps: tuple[int, ...]) -> None:
    """Hook run in the trainer process: at each of these step numbers (once each) the loss of A is multiplied
    by NaN before the backward pass, so gradients, then weights, become NaN - a real divergence."""
    from changeling.train import loop

    real_step = loop.Trainer.train_step
    seen: set[int] = set()
    current = {"step": -1}

    def train_step(self: loop.Trainer) -> None:
        current["step"] = self.step
        real_step(self)

    def forward_backward(fn, a, b, scale):  # type: ignore[no-untyped-def]
        loss_a, loss_b = fn(a.input, b.input, a.target, b.target, a.masks, b.masks)
        s = current["step"]
        if s in at_steps and s not in seen:
            seen.add(s)
            loss_a = loss_a * float("nan")
        ((loss_a + loss_b) * scale).backward()
        return loss_a.detach(), loss_b.detach()

    loop.Trainer.train_step = train_step  # type: ignore[method-assign]
    loop.forward_backward = forward_backward


def test_nan_in_a_running_trainer_rolls_back_and_training_continues(tmp_path: Path, launcher: Launcher) -> None:
    project = make_project(tmp_path / "p")
    run = launcher.start(train_args(project, max_steps=16, save_every=4), hook=(_poison, ((5, 11),)))
    assert run.wait() == 0, run.stderr[-3000:]
    assert "step 16:" in run.stdout
    err = run.stderr
    assert "rolled back to step 4" in err and "rolled back to step 8" in err, err  # the newest checkpoints
    assert "Traceback" not in err
    assert_all_readable(project.model_dir)  # no checkpoint ever holds the NaN weights
    state = mck.read_checkpoint(project.model_dir / "checkpoints" / mck.step_name(16)).state
    assert state["trainer"]["rollbacks"] == 2 and state["trainer"]["lr_scale"] == pytest.approx(0.25)


def test_the_reported_checkpoint_is_the_newest(tmp_path: Path, launcher: Launcher) -> None:
    project = make_project(tmp_path / "p")
    run = launcher.start(train_args(project, max_steps=8, save_every=2))
    assert run.wait() == 0, run.stderr[-2000:]
    reported = run.stdout.strip().rsplit("model saved in ", 1)[-1]
    assert Path(reported) == mck.latest_checkpoint(project.model_dir), run.stdout


# --------------------------------------------------------------------------------------------- disk full


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory: pytest.TempPathFactory, launcher: Launcher) -> dict[str, Any]:
    """Train with the model folder on a 5 MB tmpfs until a checkpoint save fails; what was left behind."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the model folder needs root")
    project = make_project(tmp_path_factory.mktemp("full") / "p")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(project.model_dir)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        run = launcher.start(train_args(project, max_steps=1000, save_every=SAVE_EVERY, keep_last=10))
        code = run.wait()
        listing = sorted(p.name for p in (project.model_dir / "checkpoints").iterdir())
        readable = {}
        for folder in checkpoint_folders(project.model_dir):
            try:
                mck.read_checkpoint(folder)
                readable[folder.name] = True
            except Exception:  # noqa: BLE001 - recorded, asserted below
                readable[folder.name] = False
        latest = mck.latest_checkpoint(project.model_dir)
        model_ok = latest is not None and load_for_inference(project.model_dir, "cpu")[1].step == int(
            latest.name[5:])
        return {"code": code, "stderr": run.stderr, "listing": listing, "readable": readable, "model_ok": model_ok,
                "model_dir": project.model_dir}
    finally:
        subprocess.run(["umount", str(project.model_dir)], check=False)


def test_disk_full_keeps_the_previous_checkpoint(disk_full: dict[str, Any]) -> None:
    assert disk_full["code"] != 0  # the run stopped: 1000 steps of checkpoints do not fit in 5 MB
    finals = [n for n in disk_full["listing"] if STEP_DIR.match(n)]
    assert len(finals) >= 2, disk_full["listing"]  # it trained and saved before the disk filled
    assert all(disk_full["readable"].values()), disk_full["readable"]
    assert disk_full["model_ok"]  # the newest checkpoint loads for inference
    assert all(STEP_DIR.match(n) or n.startswith(".step-") for n in disk_full["listing"])


def test_disk_full_is_a_one_line_error(disk_full: dict[str, Any]) -> None:
    """Exit 2 (the user must free space or move the model folder), one line naming the folder and the cause."""
    lines = error_lines(disk_full["stderr"])
    assert disk_full["code"] == 2, disk_full["stderr"][-2000:]
    assert "Traceback" not in disk_full["stderr"]
    assert len(lines) == 1 and lines[0].startswith("changeling train: error: "), lines
    assert str(disk_full["model_dir"]) in lines[0] and "No space left on device" in lines[0], lines
    for named in re.findall(r"step-\d{8}", lines[0]):  # a checkpoint the message points to is there and loads
        assert disk_full["readable"].get(named) is True, (named, disk_full["readable"])


# ------------------------------------------------------------------------------------ extraction and convert

CLIP_FRAMES = 200
CLIP_W, CLIP_H, FACE = 160, 120, 96


def person_clip(path: Path, frames: int = CLIP_FRAMES) -> Path:
    """The public-domain astronaut portrait moving over a moving background (a face in every frame)."""
    img = portrait("A")
    face = cv2.resize(img[0:300, 110:410], (FACE, FACE), interpolation=cv2.INTER_AREA)
    bg = pattern_frame(0, CLIP_W, CLIP_H)
    images = []
    for i in range(frames):
        f = np.roll(bg, 2 * i, axis=1).copy()
        x, y = 20 + int(15 * np.sin(i / 5)), 10 + int(5 * np.cos(i / 4))
        f[y:y + FACE, x:x + FACE] = face
        images.append(f)
    return write_clip(path, width=CLIP_W, height=CLIP_H, fps=24, audio="aac", images=images, crf=23)


EXTRACT = ["-q", "--side", "A", "--size", "64", "--batch-size", "8"]


@pytest.fixture(scope="module")
def clip_and_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Project]:
    """The clip and a project holding its uninterrupted extraction."""
    root = tmp_path_factory.mktemp("extract")
    clip = person_clip(root / "clip.mp4")
    project = init_project(root / "reference")
    r = run_cli("extract", "-p", str(project.root), *EXTRACT, str(clip))
    assert r.returncode == 0, r.stderr[-3000:]
    return clip, project


def store_state(project: Project, clip: Path) -> tuple[list[tuple[int, str]], dict[int, list[str | None]], bool]:
    """(frames as (index, status), face files per frame, complete) from the alignments store."""
    with AlignmentStore.open_existing(alignments_path(project.alignments_dir, clip, "A")) as st:
        frames = [(f.index, f.status) for f in st.frames()]
        faces = {i: [f.file for f in st.faces_for_frame(i)] for i, _ in frames}
        return frames, faces, st.complete


@pytest.mark.slow
def test_killed_extraction_reruns_to_every_frame_exactly_once(tmp_path: Path,
                                                              clip_and_reference: tuple[Path, Project]) -> None:
    clip, reference = clip_and_reference
    project = init_project(tmp_path / "p")
    rng = random.Random(SEED + 1)
    kept: dict[str, int] = {}  # face files of frames committed before a kill -> mtime (must not be rewritten)
    kills = 0
    for k in range(3):
        run = popen_cli(["extract", "-p", str(project.root), *EXTRACT, str(clip)], tmp_path, f"x{k}")
        target = rng.randint(1, CLIP_FRAMES - 40)  # a random moment in terms of progress: faces on disk
        wait_for(lambda r=run, n=target: len(os.listdir(project.faces_dir("A"))) >= n or not r.alive, poll=0.002)
        kills += run.alive
        run.kill()
        try:
            frames, faces, complete = store_state(project, clip)
        except UserError:  # killed before the store held anything (not yet made, or made without its tables)
            continue
        assert [i for i, _ in frames] == list(range(len(frames)))  # whole batches, from the first frame on
        for i, status in frames:
            if status == "done":
                for name in faces[i]:
                    assert name is not None
                    path = project.faces_dir("A") / name
                    read_face(path)  # committed means its file is complete on disk
                    kept.setdefault(name, path.stat().st_mtime_ns)
        for path in list_faces(project.faces_dir("A")):
            read_face(path)  # nothing half-written under a final name
    assert kills >= 2, "the extraction finished before it could be killed"
    assert 0 < len(kept) < CLIP_FRAMES

    r = run_cli("extract", "-p", str(project.root), *EXTRACT, str(clip))
    assert r.returncode == 0, r.stderr[-3000:]
    frames, faces, complete = store_state(project, clip)
    ref_frames, ref_faces, _ = store_state(reference, clip)
    assert complete and [i for i, _ in frames] == list(range(CLIP_FRAMES))
    assert frames == ref_frames  # same statuses as an uninterrupted run, each frame recorded once
    assert {i: len(v) for i, v in faces.items()} == {i: len(v) for i, v in ref_faces.items()}
    names = sorted(n for v in faces.values() for n in v if n)
    on_disk = sorted(p.name for p in project.faces_dir("A").iterdir())
    assert on_disk == names  # one file per recorded face: no duplicates, no leftovers, no hidden temporaries
    assert names == sorted(n for v in ref_faces.values() for n in v if n)
    rewritten = [n for n, m in kept.items() if (project.faces_dir("A") / n).stat().st_mtime_ns != m]
    assert rewritten == []  # frames committed before a kill were not processed again


def tiny_model(model_dir: Path) -> None:
    """An untrained tiny model at 32 px for 'whole' faces, saved as a checkpoint (enough to convert)."""
    config = preset_config("tiny", Dims(resolution=32, e_dims=4, ae_dims=16, d_dims=8))
    torch.manual_seed(0)
    model = create_model("tiny", config)
    ck.save_checkpoint(model_dir, "tiny", config, "whole", ck.SaveRequest(step=1, weights=model.state_dict()))


@pytest.mark.slow
def test_killed_convert_leaves_no_partial_output_and_a_rerun_finishes(
        tmp_path: Path, clip_and_reference: tuple[Path, Project]) -> None:
    clip, reference = clip_and_reference
    project = init_project(tmp_path / "p")
    shutil.copytree(reference.alignments_dir, project.alignments_dir, dirs_exist_ok=True)
    tiny_model(project.model_dir)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "swap.mp4"
    args = ["convert", "-q", "-p", str(project.root), str(clip), "-o", str(out)]
    # an uninterrupted run first: the reference output, and how long the output stays under its temporary name
    straight = out_dir.parent / "straight.mp4"
    run = popen_cli([*args[:-1], str(straight)], tmp_path, "straight")
    wait_for(lambda: bool(partials(straight)) or not run.alive, poll=0.001)
    t0 = time.monotonic()
    wait_for(lambda: straight.exists() or not run.alive, poll=0.001)
    window = time.monotonic() - t0
    assert run.wait() == 0, run.stderr[-3000:]
    rng = random.Random(SEED + 2)
    kills = 0
    for k in range(3):
        run = popen_cli(args, tmp_path, f"c{k}")
        wait_for(lambda r=run: bool(partials(out)) or not r.alive, poll=0.001)
        time.sleep(rng.uniform(0.0, 0.9) * window)
        kills += run.alive
        run.kill()
        if out.exists():  # killed after the rename: then the output must be whole
            assert len(decode_all(out)[0]) == CLIP_FRAMES
            out.unlink()
        assert all(p.name.startswith(".") for p in out_dir.iterdir()), list(out_dir.iterdir())
    assert kills >= 2, "convert finished before it could be killed"
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    frames, times = decode_all(out)
    src_frames, src_times = decode_all(clip)
    want, _ = decode_all(straight)
    assert len(frames) == len(src_frames) == CLIP_FRAMES
    np.testing.assert_allclose(times, src_times, atol=1e-3)
    assert all(np.array_equal(a, b) for a, b in zip(frames, want, strict=True))  # as an uninterrupted run
    assert [p.name for p in out_dir.iterdir()] == ["swap.mp4"]  # no temporaries left behind by the killed runs
