"""Multi-process training (DistributedDataParallel over gloo on the CPU, launched by torchrun)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from changeling.models.checkpoint import latest_checkpoint, read_checkpoint
from changeling.project import init_project
from changeling.train.testfaces import make_faces
from conftest import run_cli

# augmentation off: a step of 2 processes x batch B must then equal one process at batch 2B up to the order
# in which floating-point gradients are summed
NO_AUG = ["--rotation", "0", "--scale", "0", "--shift", "0", "--no-flip", "--warp", "0", "--color-jitter", "0"]
COMMON = ["--device", "cpu", "--preset", "tiny", "--save-every", "3", "--preview-every", "0", "--precision", "fp32",
          "-q", *NO_AUG]
TOLERANCE = 2e-3  # relative difference of the logged losses, step by step


def _project(root: Path) -> Path:
    proj = init_project(root)
    make_faces(proj.faces_dir("A"), "A", 8, size=64)
    make_faces(proj.faces_dir("B"), "B", 8, size=64)
    return root


def _losses(root: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (root / "logs" / "metrics.jsonl").read_text().splitlines() if line]
    return [(r["step"], r["loss_a"], r["loss_b"]) for r in rows]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    single, double = _project(tmp_path / "single"), _project(tmp_path / "double")
    r1 = run_cli("train", "-p", str(single), "--batch-size", "4", "--max-steps", "6", *COMMON)
    assert r1.returncode == 0, r1.stderr[-3000:]
    env_threads = {**os.environ, "OMP_NUM_THREADS": "1"}
    r2 = subprocess.run([sys.executable, "-m", "changeling", "train", "--gpus", "2", "-p", str(double),
                         "--batch-size", "2", "--max-steps", "6", *COMMON], capture_output=True, text=True,
                        timeout=600, env=env_threads)
    assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-4000:]
    a, b = _losses(single), _losses(double)
    assert [s for s, *_ in a] == [s for s, *_ in b] and a
    for (_, la1, lb1), (_, la2, lb2) in zip(a, b, strict=True):
        assert la2 == pytest.approx(la1, rel=TOLERANCE) and lb2 == pytest.approx(lb1, rel=TOLERANCE)
    # the same checkpoint format: the 2-process model resumes in a single process and trains on
    ck = read_checkpoint(latest_checkpoint(double / "model"))
    assert ck.info.step == 6
    w1 = read_checkpoint(latest_checkpoint(single / "model")).weights
    # Adam divides by the gradient's running size, so summation-order noise in near-zero gradients can move a
    # weight by up to about lr per step: compare each tensor by its relative distance instead of elementwise
    for k, v in ck.weights.items():
        diff = float((v.float() - w1[k].float()).norm() / w1[k].float().norm().clamp_min(1e-12))
        assert diff < 1e-2, (k, diff)
    r3 = run_cli("train", "-p", str(double), "--batch-size", "4", "--max-steps", "8", *COMMON)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert read_checkpoint(latest_checkpoint(double / "model")).info.step == 8


@pytest.mark.slow
def test_killing_one_rank_stops_the_job_with_a_message(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "changeling",
           "train", "-p", str(root), "--batch-size", "2", "--max-time", "300", *COMMON]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list((root / "model" / "checkpoints").glob("step-*")) and time.time() < deadline:
            time.sleep(0.5)  # wait until training is under way (the first checkpoint exists)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(p) for p in children]
        assert len(workers) == 2, children  # torchrun's two worker processes
        os.kill(max(workers), signal.SIGKILL)  # one of the two ranks dies
        out, _ = proc.communicate(timeout=180)  # no hang: the launcher ends the job
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "Signal 9 (SIGKILL)" in out or "exitcode" in out.lower()
    # what was saved is intact and resumes in a single process
    assert read_checkpoint(latest_checkpoint(root / "model")).info.step >= 0


@pytest.mark.slow
def test_two_processes_train_the_detail_stage_and_one_resumes_it(tmp_path: Path) -> None:
    """Faces stored at 128 px give the 64 px tiny model a 2x detail stage; its networks train through their own
    DistributedDataParallel wrapper (every parameter used in every step), and the checkpoint resumes in one
    process."""
    root = init_project(tmp_path / "p")
    make_faces(root.faces_dir("A"), "A", 6, size=128)
    make_faces(root.faces_dir("B"), "B", 6, size=128)
    r = subprocess.run([sys.executable, "-m", "changeling", "train", "--gpus", "2", "-p", str(root.root),
                        "--batch-size", "2", "--max-steps", "3", *COMMON], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ck = read_checkpoint(latest_checkpoint(root.root / "model"))
    assert ck.info.step == 3 and ck.info.detail is not None and ck.info.detail.scale == 2 and ck.detail is not None
    assert any(t.abs().sum() > 0 for k, t in ck.detail.weights.items() if k.endswith("tail.weight"))
    r2 = run_cli("train", "-p", str(root.root), "--batch-size", "2", "--max-steps", "4", *COMMON)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert read_checkpoint(latest_checkpoint(root.root / "model")).info.step == 4
