"""The detail stage: the network, its config, training beside the pair model (exact resume, adding a stage to a
trained model, training it alone), checkpoints that hold one, and the refusals when a stage does not fit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from changeling.config import TrainSettings
from changeling.errors import UserError
from changeling.evaluate.metrics import detail_ratio
from changeling.models import checkpoint as mck
from changeling.models.checkpoint_state import state_digest
from changeling.models.detail import DetailConfig, DetailedModel, DetailNet, DetailStage
from changeling.models.load import load_for_inference
from changeling.project import Project, init_project
from changeling.train import loop
from changeling.train.data import load_faces
from changeling.train.detail import auto_scale, detail_config_for
from changeling.train.testfaces import make_faces

# a small pair model at 32 px on faces stored at 64 px: "auto" gives it a 2x stage
SMALL = dict(resolution=32, e_dims=4, ae_dims=16, d_dims=8, batch_size=4, preview_every=0, device="cpu",
             precision="fp32", lr=1e-3, save_every=2)


def make_project(root: Path, n: int = 4, size: int = 64) -> Project:
    project = init_project(root)
    make_faces(project.faces_dir("A"), "A", n, size=size)
    make_faces(project.faces_dir("B"), "B", n, size=size)
    return project


def settings(**kw: object) -> TrainSettings:
    return dataclasses.replace(TrainSettings(), **{**SMALL, **kw})  # type: ignore[arg-type]


def latest(project: Project) -> mck.LoadedCheckpoint:
    path = mck.latest_checkpoint(project.model_dir)
    assert path is not None
    return mck.read_checkpoint(path)


# ------------------------------------------------------------------------------------------------- the network


def test_an_untrained_stage_is_exactly_the_bilinear_enlargement() -> None:
    net = DetailNet(DetailConfig(resolution=16, scale=4, channels=8, blocks=1))
    x = torch.rand(2, 3, 16, 16)
    y = net(x)
    assert y.shape == (2, 3, 64, 64)
    assert torch.equal(y, F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False).clamp(0, 1))


def test_the_detailed_model_swaps_into_larger_faces() -> None:
    from changeling.models.registry import Dims, create_model, preset_config

    pair = create_model("tiny", preset_config("tiny", Dims(32, 4, 16, 8))).eval()
    model = DetailedModel(pair, DetailStage(DetailConfig(resolution=32, scale=2, channels=8, blocks=1))).eval()
    out = model.swap(torch.rand(3, 3, 32, 32), "B")
    assert out.face.shape == (3, 3, 64, 64) and out.mask.shape == (3, 1, 64, 64)
    assert model.resolution == 32 and model.output_resolution == 64
    with pytest.raises(ValueError, match="takes 16 px faces but the pair model makes 32 px"):
        DetailedModel(pair, DetailStage(DetailConfig(resolution=16, scale=2)))


@pytest.mark.parametrize("raw, message", [
    ({"resolution": 64}, "lacks"),
    ({"resolution": 64, "scale": 3}, "scale must be one of"),
    ({"resolution": 64, "scale": 4, "channels": "32"}, "must be an integer"),
    ({"resolution": 64, "scale": 4, "channels": True}, "must be an integer"),
    ({"resolution": 64, "scale": 4, "blocks": 10**9}, "blocks"),
    ({"resolution": 64, "scale": 4, "extra": 1}, "unknown"),
    ([64, 4], "must be an object"),
])
def test_a_detail_config_from_a_file_is_checked(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DetailConfig.from_dict(raw)


def test_auto_picks_the_largest_scale_the_stored_faces_allow() -> None:
    assert auto_scale(64, 256) == 4 and auto_scale(64, 128) == 2 and auto_scale(64, 64) == 0
    assert auto_scale(128, 256) == 2 and auto_scale(128, 1024) == 2 and auto_scale(256, 1024) == 0
    assert detail_config_for("off", 64, 256) is None
    assert detail_config_for("2x", 64, 256) == DetailConfig(64, 2)
    with pytest.raises(ValueError, match="extract with --size 256"):
        detail_config_for("4x", 64, 128)


# ----------------------------------------------------------------------------------------------- training


def test_training_with_a_stage_saves_it_and_resumes_bit_exactly(tmp_path: Path) -> None:
    whole = make_project(tmp_path / "whole")
    loop.train(whole, settings(max_steps=4), progress=False)
    split = make_project(tmp_path / "split")
    loop.train(split, settings(max_steps=2), progress=False)
    loop.train(split, settings(max_steps=4), progress=False)
    a, b = latest(whole), latest(split)
    assert a.info.detail == DetailConfig(resolution=32, scale=2) and a.detail is not None and b.detail is not None
    assert set(a.detail.weights) == set(DetailStage(a.info.detail).state_dict())
    for key in a.detail.weights:
        assert torch.equal(a.detail.weights[key], b.detail.weights[key]), key
    for key in a.weights:
        assert torch.equal(a.weights[key], b.weights[key]), key
    # the stage learned something: not the bilinear enlargement any more
    assert any(t.abs().sum() > 0 for k, t in a.detail.weights.items() if k.endswith("tail.weight"))
    model, info = load_for_inference(whole.model_dir, "cpu")
    assert isinstance(model, DetailedModel) and model.output_resolution == 64


def test_the_stage_makes_faces_sharper_than_the_plain_enlargement(tmp_path: Path) -> None:
    """Real learning: after 150 steps of the small model, its 2x stage turns the pair model's reconstructions
    into faces with more of the stored faces' fine structure than their bilinear enlargement has."""
    project = make_project(tmp_path / "p", n=6)
    loop.train(project, settings(max_steps=150, save_every=150), progress=False)
    model, _ = load_for_inference(project.model_dir, "cpu")
    assert isinstance(model, DetailedModel)
    high = load_faces(project.faces_dir("B"), 64, progress=False)
    truth = high.images.float() / 255
    x = F.avg_pool2d(truth, 2)
    with torch.inference_mode():
        rec = model.pair.swap(x, "B").face
        sharp = model.detail(rec, "B")
    plain = F.interpolate(rec, scale_factor=2, mode="bilinear", align_corners=False)
    mask = high.masks[:, 0].float().numpy() / 255

    def ratio(img: torch.Tensor) -> float:
        return float(np.mean([detail_ratio(img[i].permute(1, 2, 0).numpy(), truth[i].permute(1, 2, 0).numpy(),
                                           mask[i]) for i in range(len(img))]))

    assert ratio(sharp) > ratio(plain) + 0.05


def test_a_stage_is_added_to_a_trained_model_without_retraining_it(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    loop.train(project, settings(max_steps=2, detail="off"), progress=False)
    before = latest(project)
    assert before.info.detail is None and before.detail is None
    # only the stage trains: the pair model's weights stay as they were, the steps go on
    loop.train(project, settings(max_steps=4, train_pair=False), progress=False)
    after = latest(project)
    assert after.info.step == 4 and after.info.detail == DetailConfig(32, 2)
    for key in before.weights:
        assert torch.equal(before.weights[key], after.weights[key]), key
    # and the pair model trains again, from where it was
    loop.train(project, settings(max_steps=6), progress=False)
    again = latest(project)
    assert any(not torch.equal(after.weights[k], again.weights[k]) for k in after.weights)


def test_a_stage_cannot_be_removed_or_rescaled_and_needs_large_enough_faces(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    loop.train(project, settings(max_steps=2), progress=False)
    with pytest.raises(UserError, match="has a 2x detail stage, which stays"):
        loop.train(project, settings(max_steps=4, detail="off"), progress=False)
    with pytest.raises(UserError, match="scale cannot change"):
        loop.train(project, settings(max_steps=4, detail="4x"), progress=False)
    small = make_project(tmp_path / "small", size=32)
    with pytest.raises(UserError, match="extract with --size 64"):
        loop.train(small, settings(max_steps=2, detail="2x"), progress=False)
    with pytest.raises(UserError, match="no detail stage to train"):
        loop.train(small, settings(max_steps=2, train_pair=False), progress=False)


def test_a_checkpoint_whose_stage_belongs_to_another_model_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    loop.train(project, settings(max_steps=2), progress=False)
    path = mck.latest_checkpoint(project.model_dir)
    assert path is not None
    state = json.loads((path / mck.STATE).read_text())
    state["detail_config"]["resolution"] = 64  # a stage made for 64 px faces, re-signed
    state["digest"] = state_digest(state)
    (path / mck.STATE).write_text(json.dumps(state))
    with pytest.raises(UserError, match="takes 64 px faces but this 32 px model"):
        load_for_inference(project.model_dir, "cpu")
    del state["detail_config"]  # weights without their config
    state["digest"] = state_digest(state)
    (path / mck.STATE).write_text(json.dumps(state))
    with pytest.raises(UserError, match="without its weights, or the reverse"):
        mck.read_state(path)


def test_a_model_without_a_stage_loads_as_the_pair_model(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", size=32)
    loop.train(project, settings(max_steps=2), progress=False)  # faces at 32 px: auto makes no stage
    model, info = load_for_inference(project.model_dir, "cpu")
    assert info.detail is None and not isinstance(model, DetailedModel)
    assert not (mck.latest_checkpoint(project.model_dir) / mck.DETAIL).exists()  # type: ignore[operator]


def test_adversarial_training_resumes_bit_exactly_and_moves_the_critics(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "GAN_WARMUP", 1)
    whole = make_project(tmp_path / "whole")
    loop.train(whole, settings(max_steps=4, detail_gan=0.1), progress=False)
    split = make_project(tmp_path / "split")
    loop.train(split, settings(max_steps=2, detail_gan=0.1), progress=False)
    loop.train(split, settings(max_steps=4, detail_gan=0.1), progress=False)
    a, b = latest(whole), latest(split)
    assert a.detail is not None and b.detail is not None
    for key in a.detail.weights:
        assert torch.equal(a.detail.weights[key], b.detail.weights[key]), key
    for key in a.detail.optimizer:
        assert torch.equal(a.detail.optimizer[key], b.detail.optimizer[key]), key
    # against the same run without the term: its critics stayed at their seeded start, these trained
    plain = make_project(tmp_path / "plain")
    loop.train(plain, settings(max_steps=4), progress=False)
    c = latest(plain)
    assert c.detail is not None
    critic = [k for k in a.detail.weights if k.startswith("critic_b.")]
    assert critic
    assert any(not torch.equal(a.detail.weights[k], c.detail.weights[k]) for k in critic)
    nets = [k for k in a.detail.weights if k.startswith("net_b.")]
    assert any(not torch.equal(a.detail.weights[k], c.detail.weights[k]) for k in nets)  # the term changed them
