"""Contract tests over every registered preset, at tiny dims: shapes, ranges, finite loss after a step,
save -> load gives identical outputs; and the presets' real shapes against the reference shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from changeling.models.decoder import DecoderOutput
from changeling.models.load import load_for_inference
from changeling.models.pair import ModelConfig, PairModel
from changeling.models.reference import (
    REFERENCE_SHAPES,
    build_reference,
    reference_flops,
    reference_shape_for,
)
from changeling.models.registry import PRESETS, Dims, create_model, preset_config
from changeling.train import checkpoint as ck

TINY_DIMS = Dims(resolution=32, e_dims=4, ae_dims=16, d_dims=4)


@pytest.fixture(params=sorted(PRESETS))
def small(request: pytest.FixtureRequest) -> tuple[str, PairModel]:
    torch.manual_seed(0)
    name = request.param
    return name, create_model(name, preset_config(name, TINY_DIMS))


def test_outputs_have_the_right_shapes_and_ranges(small: tuple[str, PairModel]) -> None:
    _, model = small
    x = torch.rand(3, 3, 32, 32)
    for side in ("A", "B"):
        out = model(x, side)
        assert isinstance(out, DecoderOutput)
        assert out.face.shape == (3, 3, 32, 32) and out.mask.shape == (3, 1, 32, 32)
        for t in (out.face, out.mask):
            assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
    oa, ob = model.forward_pair(x[:2], x[2:])
    assert oa.face.shape == (2, 3, 32, 32) and ob.face.shape == (1, 3, 32, 32)
    # forward_pair is the same computation as two forwards (one shared encoder pass)
    torch.testing.assert_close(oa.face, model(x[:2], "A").face, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ob.mask, model(x[2:], "B").mask, atol=1e-5, rtol=1e-5)


def test_sides_render_differently(small: tuple[str, PairModel]) -> None:
    _, model = small
    x = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(model(x, "A").face, model(x, "B").face)


def test_one_step_gives_a_finite_loss_and_changes_the_weights(small: tuple[str, PairModel]) -> None:
    _, model = small
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    oa, ob = model.forward_pair(a, b)
    loss = F.l1_loss(oa.face, a) + F.l1_loss(ob.face, b) + F.mse_loss(oa.mask, torch.ones_like(oa.mask))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    assert sum(not torch.equal(p0, p) for p0, p in zip(before, model.parameters(), strict=True)) > 0


def test_save_then_load_gives_identical_outputs(small: tuple[str, PairModel], tmp_path: Path) -> None:
    name, model = small
    req = ck.SaveRequest(step=7, weights=model.state_dict())
    ck.save_checkpoint(tmp_path, name, model.config, "whole", req)
    loaded, info = load_for_inference(tmp_path, "cpu")
    assert info.preset == name and info.step == 7 and info.config == model.config and info.resolution == 32
    x = torch.rand(2, 3, 32, 32)
    for side in ("A", "B"):
        assert torch.equal(loaded.swap(x, side).face, model.swap(x, side).face)
        assert torch.equal(loaded.swap(x, side).mask, model.swap(x, side).mask)


def test_config_round_trips_through_json_and_rejects_bad_values() -> None:
    for name in PRESETS:
        cfg = preset_config(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    bad = preset_config("tiny").to_dict()
    bad["resolution"] = 60
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig.from_dict(bad)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**preset_config("tiny").to_dict(), "evil": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")


def test_light_stages_are_checked_and_older_configs_load_without_them() -> None:
    older = preset_config("tiny").to_dict()
    del older["light_stages"]  # a checkpoint written before the field existed
    assert ModelConfig.from_dict(older).light_stages == 0
    for bad in (-1, 4):
        with pytest.raises(ValueError, match=r"light_stages must be 0\.\.3"):
            ModelConfig.from_dict({**preset_config("tiny").to_dict(), "light_stages": bad})
    for bad_type in (True, 1.0):
        with pytest.raises(ValueError, match="light_stages must be an integer"):
            ModelConfig.from_dict({**preset_config("tiny").to_dict(), "light_stages": bad_type})
    assert preset_config("lite").light_stages == 2 and preset_config("lite").resolution == 128
    assert reference_shape_for(preset_config("lite")) is None  # the bare reference has no separable blocks


def test_a_separable_upscale_doubles_the_side_for_the_predicted_share_of_the_work() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from changeling.models.blocks import SeparableUpscale, Upscale

    ci, co, side = 32, 16, 8
    x = torch.rand(2, ci, side, side)
    counts = []
    for block in (Upscale(ci, co), SeparableUpscale(ci, co)):
        with FlopCounterMode(display=False) as fc:
            y = block(x)
        assert y.shape == (2, co, 2 * side, 2 * side)
        counts.append(fc.get_total_flops())
    assert counts[1] / counts[0] == pytest.approx(1 / (4 * co) + 1 / 9, rel=1e-6)


def test_swap_checks_its_input() -> None:
    model = create_model("tiny", preset_config("tiny", TINY_DIMS))
    with pytest.raises(ValueError, match=r"expected an \(N, 3, 32, 32\) float tensor"):
        model.swap(torch.rand(3, 32, 32), "B")
    with pytest.raises(ValueError, match="to must be"):
        model.swap(torch.rand(1, 3, 32, 32), "C")  # type: ignore[arg-type]


def _flops_per_example(model: PairModel) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    r = model.resolution
    x = torch.rand(2, 3, r, r)
    with FlopCounterMode(display=False) as fc:
        oa, ob = model.forward_pair(x[:1], x[1:])
        (F.l1_loss(oa.face, x[:1]) + F.l1_loss(ob.face, x[1:])).backward()
    return fc.get_total_flops() / 2


def test_tiny_is_about_one_gflop_per_example() -> None:
    flops = _flops_per_example(create_model("tiny"))
    assert 0.7e9 < flops < 1.4e9, flops


def test_lite_at_128_px_costs_no_more_than_tiny_at_64() -> None:
    lite = _flops_per_example(create_model("lite"))
    assert create_model("lite").resolution == 128
    assert lite < 1.0 * _flops_per_example(create_model("tiny"))
    assert lite < 0.3 * _flops_per_example(create_model("tiny", preset_config("tiny", Dims(resolution=128))))


@pytest.mark.parametrize(("preset", "dims", "ref"), [
    ("original", Dims(), "original64"), ("df", Dims(), "df128"),
    ("df", Dims(resolution=256), "df256"), ("liae", Dims(), "liae128")])
def test_presets_match_the_reference_shapes(preset: str, dims: Dims, ref: str) -> None:
    """The presets meant to compare with the roofline shapes have the same parameter count and FLOPs, counted
    on independently built reference modules (differences: our decoders have one 4-channel head)."""
    cfg = preset_config(preset, dims)
    ours = PairModel(cfg)
    theirs = build_reference(REFERENCE_SHAPES[ref])
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_ref
    if ref != "df256":  # 1.5 TFLOP of counting is too slow for CI
        # ours computes face and mask in one head convolution, so its backward also covers the mask channel
        # that this face-only loss ignores (the reference skips it): a difference well under 1%
        ref_flops = reference_flops(REFERENCE_SHAPES[ref])
        assert 0 <= _flops_per_example(ours) - ref_flops < 5e-3 * ref_flops


@pytest.mark.parametrize(("preset", "dims", "ref"), [
    ("original", Dims(), "original64"), ("df", Dims(), "df128"), ("liae", Dims(), "liae128")])
def test_the_benchmark_finds_each_presets_reference_shape(preset: str, dims: Dims, ref: str) -> None:
    from changeling.models.reference import reference_shape_for

    assert reference_shape_for(preset_config(preset, dims)) == REFERENCE_SHAPES[ref]


def test_lite_liae_is_lites_shape_with_one_shared_decoder() -> None:
    from dataclasses import replace

    lite, liae = preset_config("lite"), preset_config("lite-liae")
    assert liae.arch == "liae" and replace(liae, arch="df") == lite
    model = create_model("lite-liae")
    assert not hasattr(model, "decoder_b") and hasattr(model, "inter_a")
    with pytest.raises(ValueError, match="is a liae model"):
        create_model("lite-liae", lite)
