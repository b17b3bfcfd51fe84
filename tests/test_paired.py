from __future__ import annotations

import math

import numpy as np
import pytest

from changeling.evaluate.paired import PairedSpec, make_paired_data, score_outputs


@pytest.fixture(scope="module")
def data():
    return make_paired_data(PairedSpec(seconds=0.5, fps=12), 64, "whole")


def test_the_ideal_swap_scores_perfectly(data) -> None:
    s = score_outputs(data.b, data)
    assert s.ssim == pytest.approx(1.0) and math.isinf(s.psnr)
    assert s.recognisable == 1.0 and s.is_recognisable
    assert s.jitter == pytest.approx(0.0) and s.landmark_error == pytest.approx(0.0, abs=1e-6)


def test_returning_a_unchanged_is_not_recognisable(data) -> None:
    s = score_outputs(data.a, data)
    assert s.recognisable == 0.0 and not s.is_recognisable
    assert s.ssim == pytest.approx(s.baseline_ssim)
    # same motion, other person: the expression and pose match, so the landmark error is small but not zero
    assert 0.0 < s.landmark_error < 0.1


def test_a_frozen_b_face_loses_expression_fidelity(data) -> None:
    frozen = np.repeat(data.b[:1], len(data.b), axis=0)  # B's identity without A's motion
    s = score_outputs(frozen, data)
    ideal = score_outputs(data.b, data)
    assert s.jitter > ideal.jitter and s.ssim < ideal.ssim


def test_held_out_sequence_is_deterministic() -> None:
    spec = PairedSpec(seconds=0.25, fps=8)
    a = make_paired_data(spec, 32, "whole")
    b = make_paired_data(spec, 32, "whole")
    assert np.array_equal(a.a, b.a) and np.array_equal(a.b, b.b)
    other = make_paired_data(PairedSpec(seconds=0.25, fps=8, seed=spec.seed + 1), 32, "whole")
    assert not np.array_equal(a.a, other.a)


def test_identity_score_says_who_the_output_looks_like(data) -> None:
    pytest.importorskip("dlib", reason="pip install 'changeling[identity]'")
    from changeling.evaluate.paired import identity_scores

    ideal = identity_scores(data.b, data, frames=4)
    unchanged = identity_scores(data.a, data, frames=4)
    assert ideal is not None and unchanged is not None
    assert ideal["to_B"] < ideal["to_A"] and ideal["closer_to_B"] == 1.0
    assert unchanged["to_A"] < unchanged["to_B"] and unchanged["closer_to_B"] == 0.0


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(i, (sigma, sigma, 0)) for i in images]).astype(np.float32)


def test_view_scores_the_truth_perfectly_a_blurred_truth_below_and_noise_above_one(data) -> None:
    v = data.view
    assert v is not None and v.b.shape[1:] == (256, 256, 3) and data.b.shape[1:] == (64, 64, 3)
    # a whole-face model whose output is exactly the truth at the view size
    ideal = score_outputs(v.b, data, landmarks=False)
    assert ideal.view_size == 256
    assert ideal.view_ssim == pytest.approx(1.0, abs=1e-6) and ideal.view_detail == pytest.approx(1.0)
    # exact, or equal up to float rounding (a CI run once saw 359 dB and a jitter of 8e-22 before the view
    # stopped resampling crops that already have its geometry)
    assert ideal.view_psnr > 100 and ideal.view_jitter == pytest.approx(0.0)
    blurred = score_outputs(_blur(v.b, 2.0), data, landmarks=False)
    assert blurred.view_detail < 0.75 and blurred.view_ssim < 0.95
    noisy = np.clip(v.b + np.random.default_rng(0).normal(0, 0.06, v.b.shape), 0, 1).astype(np.float32)
    assert score_outputs(noisy, data, landmarks=False).view_detail > 1.1
    # the truth at the model's resolution, enlarged: sharp there, soft where a viewer sees it
    small = score_outputs(data.b, data, landmarks=False)
    assert small.ssim == pytest.approx(1.0) and small.view_detail < 0.7 and small.view_ssim < 0.9


def test_every_face_type_is_scored_on_the_same_view_pixels() -> None:
    spec = PairedSpec(seconds=0.25, fps=8)
    whole = make_paired_data(spec, 128, "whole")
    half = make_paired_data(spec, 128, "half")
    assert np.array_equal(whole.view.b, half.view.b) and np.array_equal(whole.view.masks, half.view.masks)
    # each returns its own crop of the truth: the half crop leaves the forehead and jaw to A's own pixels
    w = score_outputs(whole.b, whole, landmarks=False)
    h = score_outputs(half.b, half, landmarks=False)
    assert w.ssim == pytest.approx(1.0) and h.ssim == pytest.approx(1.0)  # each perfect in its own crop
    assert h.view_ssim < w.view_ssim - 0.05


def test_the_ceiling_of_a_geometry_is_its_perfect_output_at_the_view_size() -> None:
    from changeling.bench.quality import ceilings

    rows = ceilings(["whole"], [256, 64], spec=PairedSpec(seconds=0.25, fps=8))
    full_size, small = rows
    assert full_size["view_ssim"] == pytest.approx(1.0, abs=1e-3)  # the view's own geometry: nothing lost
    assert full_size["view_detail"] == pytest.approx(1.0, abs=1e-3)
    assert small["view_ssim"] < 0.9 and small["view_detail"] < 0.8  # 64 px enlarged 4x is soft


def test_the_convincing_verdict_needs_view_ssim_detail_and_identity(data) -> None:
    from changeling.evaluate.paired import CONVINCING

    v = data.view
    ideal = score_outputs(v.b, data, landmarks=False)
    assert ideal.is_convincing() and ideal.is_convincing({"closer_to_B": 1.0})
    assert not ideal.is_convincing({"closer_to_B": CONVINCING.closer_to_b - 0.05})
    assert not score_outputs(_blur(v.b, 2.0), data, landmarks=False).is_convincing()  # soft: recognisable only
    assert not score_outputs(v.a, data, landmarks=False).is_convincing()  # A unchanged
