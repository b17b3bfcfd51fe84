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
