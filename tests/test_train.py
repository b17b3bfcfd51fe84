"""The trainer end to end on faces that the tests make (two public-domain portraits with small variations):
real learning, exact resume (in process and after a real kill), OOM and NaN handling, settings changes on
resume, previews, locks, bad input, and the CLI."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from changeling.config import TrainSettings
from changeling.errors import UserError
from changeling.faces.facefile import read_face, write_face
from changeling.models import checkpoint as mck
from changeling.models.load import load_for_inference
from changeling.project import Project, init_project
from changeling.schedule import anneal_factor, run_progress
from changeling.train import loop
from changeling.train.data import load_faces
from changeling.train.logs import read_metrics
from changeling.train.losses import masked_dssim
from changeling.train.preview import COLUMNS, sample_indices, tile_at
from changeling.train.testfaces import make_faces
from conftest import run_cli

# a very small model for the mechanics tests (the learning test uses the real tiny preset)
SMALL = dict(resolution=32, e_dims=4, ae_dims=16, d_dims=8, batch_size=4, preview_every=0, device="cpu",
             precision="fp32", lr=1e-3)


def make_project(root: Path, n: int = 4, size: int = 32, face_type: str = "whole") -> Project:
    project = init_project(root)
    make_faces(project.faces_dir("A"), "A", n, size=size, face_type=face_type)
    make_faces(project.faces_dir("B"), "B", n, size=size, face_type=face_type)
    return project


def settings(**kw: object) -> TrainSettings:
    return dataclasses.replace(TrainSettings(), **{**SMALL, **kw})  # type: ignore[arg-type]


def trainer(project: Project, s: TrainSettings, **kw: object) -> loop.Trainer:
    config = loop.model_config_for(s)
    a = load_faces(project.faces_dir("A"), config.resolution, progress=False)
    b = load_faces(project.faces_dir("B"), config.resolution, progress=False)
    return loop.Trainer(a, b, loop.TrainPaths.of(project), s, progress=False, **kw)  # type: ignore[arg-type]


def weights(project: Project) -> dict[str, torch.Tensor]:
    latest = mck.latest_checkpoint(project.model_dir)
    assert latest is not None
    return mck.read_checkpoint(latest).weights


# ------------------------------------------------------------------------------------------------ learning


def test_learns_to_reconstruct_and_the_swap_differs(tmp_path: Path) -> None:
    """The real learning test: the tiny preset at 64 px on 6 faces per side reaches a masked SSIM of 0.5
    within 300 steps (about 0.6-0.7 seen), and A rendered as B differs from A rendered as A (and is closer to
    B's mean face than to A's)."""
    project = make_project(tmp_path / "p", n=6, size=64)
    s = dataclasses.replace(TrainSettings(), batch_size=8, lr=1e-3, max_steps=300, save_every=100, preview_every=0,
                            device="cpu")
    result = loop.train(project, s, progress=False)
    assert result.step == 300 and result.stopped == "max_steps"
    model, info = load_for_inference(project.model_dir, "cpu")
    assert info.face_type == "whole" and info.resolution == 64 and info.preset == "tiny" and info.step == 300
    fa = load_faces(project.faces_dir("A"), 64, progress=False)
    fb = load_faces(project.faces_dir("B"), 64, progress=False)
    xa, xb = fa.images.float() / 255, fb.images.float() / 255
    wa, wb = fa.masks[:, :1].float() / 255, fb.masks[:, :1].float() / 255
    aa, ab, bb = model.swap(xa, "A").face, model.swap(xa, "B").face, model.swap(xb, "B").face
    ssim_a = 1 - 2 * float(masked_dssim(aa, xa, wa))
    ssim_b = 1 - 2 * float(masked_dssim(bb, xb, wb))
    assert ssim_a > 0.5 and ssim_b > 0.5, (ssim_a, ssim_b)
    assert float((ab - aa).abs().mean()) > 0.05
    mean_a, mean_b = xa.mean(0, keepdim=True), xb.mean(0, keepdim=True)
    assert float(((ab - mean_b) ** 2).mean()) < float(((ab - mean_a) ** 2).mean())


# ---------------------------------------------------------------------------------------------- exact resume


def test_resume_is_bit_exact_and_draws_the_same_next_batch(tmp_path: Path) -> None:
    straight = make_project(tmp_path / "straight")
    loop.train(straight, settings(max_steps=6, save_every=3), progress=False)

    resumed = make_project(tmp_path / "resumed")
    loop.train(resumed, settings(max_steps=3, save_every=3), progress=False)
    t1 = trainer(resumed, settings(max_steps=6, save_every=3))
    assert t1.step == 3
    t2 = trainer(resumed, settings(max_steps=6, save_every=3))
    b1, b2 = t1.next_batch()
    c1, c2 = t2.next_batch()
    assert torch.equal(b1.input, c1.input) and torch.equal(b2.target, c2.target) and torch.equal(b2.masks, c2.masks)
    t1.metrics.close()
    t2.metrics.close()
    result = loop.train(resumed, settings(max_steps=6, save_every=3), progress=False)
    assert result.step == 6
    w1, w2 = weights(straight), weights(resumed)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    o1 = mck.read_checkpoint(mck.latest_checkpoint(straight.model_dir)).optimizer  # type: ignore[arg-type]
    o2 = mck.read_checkpoint(mck.latest_checkpoint(resumed.model_dir)).optimizer  # type: ignore[arg-type]
    assert all(torch.equal(o1[k], o2[k]) for k in o1)


def _wait_for(cond: object, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not cond():  # type: ignore[operator]
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _cli_args(project: Project, **kw: object) -> list[str]:
    args = ["train", "-p", str(project.root), "-q"]
    for k, v in {**SMALL, **kw}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGKILL mid-run, then a resume, ends bit-identical to an uninterrupted run (every run with the
    same thread count: a different count sums floating-point numbers in another order)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    straight = make_project(tmp_path / "straight")
    killed = make_project(tmp_path / "killed")
    target = 14
    proc = subprocess.Popen([sys.executable, "-m", "changeling", *_cli_args(killed, max_steps=1000, save_every=2)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for(lambda: any(s >= 4 for s, _ in mck.list_checkpoints(killed.model_dir)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    killed_at = mck.list_checkpoints(killed.model_dir)[-1][0]
    assert 4 <= killed_at < target
    r = run_cli(*_cli_args(killed, max_steps=target, save_every=2))
    assert r.returncode == 0, r.stderr
    r = run_cli(*_cli_args(straight, max_steps=target, save_every=2))
    assert r.returncode == 0, r.stderr
    w1, w2 = weights(straight), weights(killed)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_ctrl_c_saves_and_exits_cleanly(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    args = [a for a in _cli_args(project, max_steps=100000, save_every=100000) if a != "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "changeling", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for(lambda: (project.logs_dir / "metrics.jsonl").exists()
                  and (project.logs_dir / "metrics.jsonl").stat().st_size > 0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "saved" in err
    step = mck.list_checkpoints(project.model_dir)[-1][0]
    assert step >= 10 and f"stopped at step {step}" in err
    mck.read_checkpoint(mck.list_checkpoints(project.model_dir)[-1][1])


# ----------------------------------------------------------------------------------- memory and divergence


def test_out_of_memory_halves_the_micro_batch_and_accumulates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    project = make_project(tmp_path / "p")
    real = loop.forward_backward
    sizes: list[int] = []

    def limited(fn, a, b, scale):  # type: ignore[no-untyped-def]
        sizes.append(a.input.shape[0])
        if a.input.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(fn, a, b, scale)

    monkeypatch.setattr(loop, "forward_backward", limited)
    caplog.set_level(logging.WARNING)
    t = trainer(project, settings(batch_size=8, max_steps=3, save_every=100))
    result = t.run()
    assert result.step == 3 and np.isfinite(result.loss_a) and np.isfinite(result.loss_b)
    assert t.batch_size == 8 and t.micro_batch == 2
    assert sizes[:3] == [8, 4, 2] and sizes[3:] == [2] * (len(sizes) - 3)  # 8 fails, 4 fails, then 2 x 4
    assert "effective batch stays 8" in caplog.text


def test_accumulated_gradients_equal_the_full_batch_gradient(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    t = trainer(project, settings(batch_size=8, save_every=100))
    a, b = t.next_batch()
    grads = []
    for micro in (8, 2):
        t.micro_batch = micro
        t._accumulate(a, b)
        grads.append([p.grad.clone() for p in t.model.parameters()])  # type: ignore[union-attr]
        t.optimizer.zero_grad(set_to_none=True)
    for g8, g2 in zip(*grads, strict=True):
        torch.testing.assert_close(g2, g8, rtol=1e-4, atol=1e-5 * float(g8.abs().max()))
    t.metrics.close()


def test_nan_loss_rolls_back_and_lowers_the_learning_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    project = make_project(tmp_path / "p")
    real = loop.forward_backward
    t = trainer(project, settings(max_steps=9, save_every=2))
    injected = []

    def poisoned(fn, a, b, scale):  # type: ignore[no-untyped-def]
        la, lb = real(fn, a, b, scale)
        if t.step == 4 and not injected:  # the 5th step: gradients and losses become NaN
            injected.append(t.step)
            for p in t.model.parameters():
                p.grad.fill_(float("nan"))  # type: ignore[union-attr]
            return la * float("nan"), lb
        return la, lb

    monkeypatch.setattr(loop, "forward_backward", poisoned)
    caplog.set_level(logging.WARNING)
    result = t.run()
    assert injected == [4]
    assert result.step == 9 and result.rollbacks == 1
    assert "rolled back to step 4" in caplog.text and "lowered the learning rate to 5.00e-04" in caplog.text
    assert all(torch.isfinite(v).all() for v in weights(project).values())
    state = mck.read_checkpoint(mck.latest_checkpoint(project.model_dir)).state  # type: ignore[arg-type]
    assert state["trainer"]["lr_scale"] == 0.5
    metrics = read_metrics(project.logs_dir / "metrics.jsonl")
    assert metrics[-1]["lr"] == pytest.approx(5e-4)


# ------------------------------------------------------------------------------------- resume and settings


def test_settings_may_change_on_resume_but_not_the_model_shape(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    project = make_project(tmp_path / "p")
    loop.train(project, settings(max_steps=2, save_every=2), progress=False)
    caplog.set_level(logging.INFO)
    changed = settings(max_steps=4, save_every=2, lr=5e-4, batch_size=6, ssim_weight=0.5, flip=False, ema=0.9)
    result = loop.train(project, changed, progress=False)
    assert result.step == 4
    assert {"lr", "batch_size", "ssim_weight", "flip", "ema"} <= set(result.changed_settings)
    assert result.changed_settings["lr"] == (1e-3, 5e-4)
    assert "settings changed on resume" in caplog.text and "lr 0.001 -> 0.0005" in caplog.text
    state = mck.read_checkpoint(mck.latest_checkpoint(project.model_dir)).state  # type: ignore[arg-type]
    assert state["settings"]["batch_size"] == 6 and mck.EMA in state["files"]
    with pytest.raises(UserError, match=r"model shape cannot change on resume \(enc_channels"):
        loop.train(project, settings(max_steps=6, e_dims=8), progress=False)
    with pytest.raises(UserError, match="holds a 'tiny' model.*Use --preset tiny"):
        loop.train(project, settings(max_steps=6, preset="df"), progress=False)
    assert mck.list_checkpoints(project.model_dir)[-1][0] == 4  # nothing was overwritten


def test_a_resumed_run_reads_and_checks_its_checkpoint_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model shape is read and checked once per run: one verified read of the newest checkpoint before
    training (a rollback would read again; there is none here), and no second read of its ``state.json``."""
    project = make_project(tmp_path / "p")
    loop.train(project, settings(max_steps=2, save_every=2), progress=False)
    reads: list[str] = []

    def counted(name: str) -> Callable[..., Any]:
        real = getattr(mck, name)

        def read(*args: Any, **kwargs: Any) -> Any:
            reads.append(name)
            return real(*args, **kwargs)

        return read

    for name in ("read_checkpoint", "read_state"):
        monkeypatch.setattr(mck, name, counted(name))
    assert loop.train(project, settings(max_steps=3, save_every=3), progress=False).step == 3
    assert reads == ["read_checkpoint"]


def test_init_from_copies_the_encoder_only(tmp_path: Path) -> None:
    first = make_project(tmp_path / "first")
    loop.train(first, settings(max_steps=2, save_every=2), progress=False)
    second = make_project(tmp_path / "second")
    t = trainer(second, settings(seed=5), init_from=first.root)
    theirs = weights(first)
    ours = t.model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k.startswith(("encoder.", "inter.")))
    assert not torch.equal(ours["decoder_a.head.weight"], theirs["decoder_a.head.weight"])
    t.metrics.close()
    pickle_file = tmp_path / "model.pth"
    torch.save({"x": 1}, pickle_file)
    with pytest.raises(UserError, match="never loads pickles"):
        trainer(make_project(tmp_path / "third"), settings(), init_from=pickle_file)
    with pytest.raises(UserError, match="its encoder does not fit"):
        trainer(make_project(tmp_path / "fourth"), settings(e_dims=8), init_from=first.root)
    with pytest.raises(UserError, match="only starts a new model"):
        loop.train(first, settings(max_steps=4), init_from=second.root, progress=False)


# -------------------------------------------------------------------------------------------------- previews


def test_preview_grid_tiles_are_the_model_outputs(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", n=5)
    calls: list[tuple[int, Path]] = []
    t = trainer(project, settings(max_steps=4, save_every=4, preview_every=2),
                frame_preview=lambda model, step, folder: calls.append((step, folder)))
    t.run()
    assert [c[0] for c in calls] == [2, 4, 4] and calls[0][1] == project.previews_dir
    frames = sorted(p.name for p in (project.previews_dir / "timelapse").iterdir())
    assert frames == ["step-00000002.png", "step-00000004.png"]
    grid = np.asarray(Image.open(project.previews_dir / "preview.png"))
    model, _ = load_for_inference(project.model_dir, "cpu")
    fa = load_faces(project.faces_dir("A"), 32, progress=False)
    fb = load_faces(project.faces_dir("B"), 32, progress=False)
    idx = sample_indices(5, 4)
    a, b = fa.images[idx].float() / 255, fb.images[idx].float() / 255
    outs = {"A": a, "A>A": model.swap(a, "A").face, "A>B": model.swap(a, "B").face,
            "B": b, "B>B": model.swap(b, "B").face, "B>A": model.swap(b, "A").face}
    assert grid.shape == (16 + 4 * 32, 6 * 32, 3)
    for col, name in enumerate(COLUMNS):
        expected = (outs[name].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for row in range(4):
            diff = np.abs(tile_at(grid, row, col, 32).astype(int) - expected[row].astype(int))
            assert diff[..., 0].max() <= 1 and diff.max() <= 8, (name, row)  # channels_last vs contiguous convolutions may round apart
    assert not np.array_equal(tile_at(grid, 0, 1, 32), tile_at(grid, 0, 2, 32))  # A>A differs from A>B


def test_logs_metrics_and_a_loss_plot(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    loop.train(project, settings(max_steps=20, save_every=10), progress=False)
    rows = read_metrics(project.logs_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20]
    assert {"loss_a", "loss_b", "lr", "examples_per_s", "memory_mb", "batch_size"} <= set(rows[0])
    with Image.open(project.logs_dir / "loss.png") as img:
        assert img.size[0] > 100
    state = mck.read_checkpoint(mck.latest_checkpoint(project.model_dir)).state  # type: ignore[arg-type]
    assert [h[0] for h in state["trainer"]["history"]] == [10, 20]


def test_the_learning_rate_anneals_over_the_end_of_a_limited_run(tmp_path: Path) -> None:
    assert anneal_factor(0.3, 0.5) == 1.0 and anneal_factor(0.5, 0.5) == 1.0
    assert anneal_factor(0.75, 0.5) == pytest.approx(0.05 + 0.95 * 0.5)  # half way down the cosine
    assert anneal_factor(1.0, 0.5) == pytest.approx(0.05) and anneal_factor(1.0, 0.0) == 1.0
    assert run_progress(15, 20, 0.0, 0.0) == 0.75  # steps count in total: a resumed run follows the same schedule
    assert run_progress(15, 20, 90.0, 100.0) == 0.9  # the clock is further along
    assert run_progress(15, 0, 0.0, 0.0) == 0.0  # no limits: never anneals
    project = make_project(tmp_path / "p")
    loop.train(project, settings(max_steps=20, save_every=5, lr_anneal=0.5), progress=False)
    lrs = [r["lr"] for r in read_metrics(project.logs_dir / "metrics.jsonl")]
    assert lrs[:2] == [pytest.approx(1e-3)] * 2  # the first half at the set rate
    assert all(b < a for a, b in zip(lrs[1:], lrs[2:], strict=False))  # then falling
    assert lrs[-1] < 0.1 * 1e-3
    # a run stopped at step 8 and resumed follows the same schedule: the same weights as the straight run
    stopped = make_project(tmp_path / "stopped")
    loop.train(stopped, settings(max_steps=20, save_every=5, lr_anneal=0.5), progress=False,
               should_stop=lambda: len(list(stopped.model_dir.rglob("state.json"))) >= 3)  # steps 0, 5 and 10 saved
    assert mck.latest_checkpoint(stopped.model_dir).name.endswith("10")  # type: ignore[union-attr]
    loop.train(stopped, settings(max_steps=20, save_every=5, lr_anneal=0.5), progress=False)
    w1, w2 = weights(project), weights(stopped)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    plain = make_project(tmp_path / "plain")
    loop.train(plain, settings(max_steps=20, save_every=5), progress=False)
    assert [r["lr"] for r in read_metrics(plain.logs_dir / "metrics.jsonl")] == [pytest.approx(1e-3)] * 4


def test_the_reported_checkpoint_is_the_newest(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    result = loop.train(project, settings(max_steps=8, save_every=2, keep_last=2), progress=False)
    assert result.checkpoint == mck.latest_checkpoint(project.model_dir) == project.model_dir / "checkpoints" / \
        "step-00000008"


def test_max_time_stops_the_run(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    result = loop.train(project, settings(max_time=0.5, save_every=100000), progress=False)
    assert result.stopped == "max_time" and result.step >= 1
    assert mck.list_checkpoints(project.model_dir)[-1][0] == result.step


def test_a_run_stopped_by_max_time_records_all_its_training_time(tmp_path: Path) -> None:
    # every step is saved and previewed and the preview is slow: the run stops right after a save, with no
    # final save, so the checkpoint must already count the preview or a resumed budget would look unspent
    project = make_project(tmp_path / "p")
    result = loop.train(project, settings(max_time=0.3, save_every=1, preview_every=1), progress=False,
                        frame_preview=lambda model, step, folder: time.sleep(0.4))
    assert result.stopped == "max_time"
    latest = mck.latest_checkpoint(project.model_dir)
    assert latest is not None and mck.list_checkpoints(project.model_dir)[-1][0] == result.step
    assert mck.read_checkpoint(latest).state["trainer"]["elapsed"] >= 0.3


# ------------------------------------------------------------------------------------------------ bad input


def test_two_trainers_on_one_project_refuse_and_a_crash_releases_the_lock(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    with loop.TrainLock(project.model_dir):
        with pytest.raises(UserError, match="another trainer"):
            loop.train(project, settings(max_steps=1), progress=False)
    code = ("import os, sys; from pathlib import Path; from changeling.train.loop import TrainLock\n"
            "lock = TrainLock(Path(sys.argv[1])).__enter__(); os.kill(os.getpid(), 9)")
    r = subprocess.run([sys.executable, "-c", code, str(project.model_dir)], capture_output=True, timeout=60)
    assert r.returncode == -9
    with loop.TrainLock(project.model_dir):
        pass


def test_too_few_faces_and_mixed_faces_are_refused(tmp_path: Path) -> None:
    project = init_project(tmp_path / "p")
    make_faces(project.faces_dir("A"), "A", 1, size=32)
    make_faces(project.faces_dir("B"), "B", 3, size=32)
    with pytest.raises(UserError, match="needs at least 2 faces of A, found 1"):
        loop.train(project, settings(max_steps=1), progress=False)
    make_faces(project.faces_dir("A"), "A", 3, size=32)
    odd = project.faces_dir("A") / "z_odd.png"
    image, meta = read_face(project.faces_dir("A") / "a_00000.png")
    write_face(odd, image, dataclasses.replace(meta, face_type="full"))
    with pytest.raises(UserError, match="z_odd.png: this face is 'full' at 32 px but a_00000.png is 'whole'"):
        loop.train(project, settings(max_steps=1), progress=False)
    odd.unlink()
    bigger = project.faces_dir("B") / "z_big.png"
    make_faces(tmp_path / "big", "B", 1, size=64)
    (tmp_path / "big" / "b_00000.png").rename(bigger)
    with pytest.raises(UserError, match="z_big.png: this face is 'whole' at 64 px"):
        loop.train(project, settings(max_steps=1), progress=False)
    bigger.unlink()
    for p in project.faces_dir("B").iterdir():
        p.unlink()
    make_faces(project.faces_dir("B"), "B", 3, size=32, face_type="full")
    with pytest.raises(UserError, match="faces of B are 'full' but faces of A are 'whole'"):
        loop.train(project, settings(max_steps=1), progress=False)


def test_corrupt_faces_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    project = make_project(tmp_path / "p", n=5)
    data = (project.faces_dir("A") / "a_00002.png").read_bytes()
    (project.faces_dir("A") / "a_00002.png").write_bytes(data[: len(data) // 2])
    (project.faces_dir("A") / "a_00003.png").write_bytes(b"not a png at all")
    caplog.set_level(logging.WARNING)
    faces = load_faces(project.faces_dir("A"), 32, progress=False)
    assert len(faces) == 3 and faces.skipped == 2
    assert "skipped 2 corrupt face file(s) of 5" in caplog.text and "a_00003.png" in caplog.text
    assert loop.train(project, settings(max_steps=1), progress=False).step == 1


def test_faces_are_resized_with_area_interpolation_and_masks_rasterised(tmp_path: Path) -> None:
    import cv2

    project = make_project(tmp_path / "p", n=2, size=64)
    faces = load_faces(project.faces_dir("A"), 32, progress=False)
    image, meta = read_face(project.faces_dir("A") / "a_00000.png")
    expected = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
    assert np.array_equal(faces.images[0].permute(1, 2, 0).numpy(), expected)
    face, eyes, mouth = (faces.masks[0, i].numpy() / 255 for i in range(3))
    assert face.mean() > 0.3 and 0 < eyes.mean() < 0.05 and 0 < mouth.mean() < 0.05
    assert face[16, 16] == 1 and face[0, 0] == 0  # centre inside, corner outside
    assert (eyes <= face + 1e-6).all()  # the eyes lie inside the face


def test_a_tampered_latest_checkpoint_is_refused_and_the_previous_kept(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    loop.train(project, settings(max_steps=4, save_every=2), progress=False)
    latest = mck.latest_checkpoint(project.model_dir)
    assert latest is not None and latest.name == "step-00000004"
    w = latest / mck.WEIGHTS
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    before = sorted(p.name for p in (project.model_dir / "checkpoints").iterdir())
    with pytest.raises(UserError, match=r"step-00000004/weights.safetensors: checkpoint file was changed or damaged"):
        loop.train(project, settings(max_steps=6, save_every=2), progress=False)
    assert sorted(p.name for p in (project.model_dir / "checkpoints").iterdir()) == before
    mck.read_checkpoint(project.model_dir / "checkpoints" / "step-00000002")


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_trains_and_reports(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    r = run_cli(*_cli_args(project, max_steps=3, save_every=3))
    assert r.returncode == 0, r.stderr
    assert "step 3: loss A" in r.stdout
    assert mck.latest_checkpoint(project.model_dir) == project.model_dir / "checkpoints" / "step-00000003"
    r = run_cli(*_cli_args(project, max_steps=4, preset="original"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1 and "holds a 'tiny' model" in r.stderr


def test_deleting_faces_between_runs_starts_a_fresh_epoch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    project = make_project(tmp_path / "p", n=5)
    loop.train(project, settings(max_steps=2, save_every=2), progress=False)
    (project.faces_dir("A") / "a_00001.png").unlink()  # how users prune bad faces
    caplog.set_level(logging.INFO)
    result = loop.train(project, settings(max_steps=4, save_every=2), progress=False)
    assert result.step == 4 and "the number of faces changed (5 -> 4)" in caplog.text


def test_bench_train_measures_the_full_step_and_the_reference() -> None:
    from changeling.bench.train_bench import bench_train

    out = bench_train("tiny", "cpu", steps=2, warmup=1, resolution=32, e_dims=4, ae_dims=16, d_dims=8,
                      batch_size=4, precision="fp32")
    assert out["batch"] == 4 and out["resolution"] == 32 and out["examples_per_s"] > 0
    assert 0 < out["gflop_per_example"] < 1 and out["tflops"] > 0
    assert out["reference_examples_per_s"] > 0 and out["ratio_to_reference"] > 0
    assert abs(out["gflop_per_example"] - out["reference_gflop_per_example"]) < 0.2 * out["gflop_per_example"]
    liae = bench_train("liae", "cpu", steps=1, warmup=1, resolution=32, e_dims=4, ae_dims=16, d_dims=8,
                       batch_size=2, precision="fp32")
    assert liae["ratio_to_reference"] > 0  # LIAE has its own reference shape
    assert abs(liae["gflop_per_example"] - liae["reference_gflop_per_example"]) < 0.2 * liae["gflop_per_example"]


# ------------------------------------------------------------------------------------------------ compiled


def test_the_compiled_step_trains_like_the_eager_one(tmp_path: Path) -> None:
    """On GPUs the trainer compiles the forward and loss, the augmentation and the update (clipping, optimizer,
    EMA). Compiled on the CPU here, three steps must move the weights and the EMA as the eager steps do."""
    project = make_project(tmp_path / "p")
    s = settings(max_steps=3, ema=0.9, grad_clip=1.0)
    eager = trainer(project, dataclasses.replace(s, compile="off"))
    compiled = trainer(project, dataclasses.replace(s, compile="on"))
    assert not eager.compile and compiled.compile
    start = {k: v.clone() for k, v in eager.model.state_dict().items()}
    assert all(torch.equal(v, compiled.model.state_dict()[k]) for k, v in start.items())
    for _ in range(3):
        eager.train_step()
        compiled.train_step()
    assert compiled._update_fn != compiled._update  # still the compiled update: it did not fall back
    moved = 0.0
    for k, v in eager.model.state_dict().items():
        c = compiled.model.state_dict()[k]
        step = (v - start[k]).abs().max()
        moved = max(moved, float(step))
        # Adam divides by the gradients' own size, so float reordering in the compiled backward shows up as
        # a small relative difference in the steps (0.3% seen); a missing or doubled update would be 100%
        assert float((c - v).abs().max()) <= 0.02 * max(float(step), 1e-3), k
    assert moved > 1e-4
    assert eager.ema is not None and compiled.ema is not None
    for (k, e), c in zip(eager.ema.state_dict().items(), compiled.ema.state_dict().values(), strict=True):
        assert torch.allclose(e, c, atol=1e-5), k
    for t in (eager, compiled):
        t.metrics.close()


def test_an_update_that_cannot_compile_falls_back_to_the_eager_one(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    t = trainer(make_project(tmp_path / "p"), settings(max_steps=2))

    def broken() -> None:
        raise RuntimeError("backend compiler failed\nlong details")

    t._compiled_update, t._update_fn = broken, t._first_update  # as a compiled update that fails on its first call
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    with caplog.at_level("WARNING"):
        t.train_step()
    assert "compiled optimizer step failed (RuntimeError: backend compiler failed)" in caplog.text
    assert t._update_fn == t._update and t.step == 1
    assert any(not torch.equal(v, t.model.state_dict()[k]) for k, v in before.items())  # the eager update ran
    steps = t._optimizer_steps()

    def half_done() -> None:  # as compiled code that ran the optimizer's piece, then failed
        t.optimizer.step()
        raise RuntimeError("a later piece failed")

    t._compiled_update, t._update_fn = half_done, t._first_update
    t.train_step()
    assert t._optimizer_steps() == steps + len(t.optimizer.state)  # one optimizer step, not two
    t.metrics.close()
