"""Temporal smoothing: measured jitter reduction, step response, tracks."""

from __future__ import annotations

import numpy as np
import pytest

from changeling.convert.smooth import LandmarkSmoother, OneEuroFilter, OneEuroParams, params_for_strength

FPS = 30.0
N_POINTS = 468


def _face(rng: np.random.Generator, x0: float = 100.0, size: float = 100.0) -> np.ndarray:
    return np.column_stack([rng.uniform(x0, x0 + size, N_POINTS), rng.uniform(50, 50 + size, N_POINTS),
                            rng.normal(0, 5, N_POINTS)])


def _box(lm: np.ndarray) -> np.ndarray:
    return np.array([*lm[:, :2].min(0), *lm[:, :2].max(0)])


def _run(smoother: LandmarkSmoother, track: np.ndarray) -> np.ndarray:
    return np.array([smoother.update(i / FPS, [lm], [_box(lm)])[0] for i, lm in enumerate(track)])


def test_jitter_of_a_still_face_is_reduced() -> None:
    rng = np.random.default_rng(0)
    base = _face(rng)
    noise = rng.normal(0, 1.0, (300, N_POINTS, 3))
    factors = {}
    for strength in (0.25, 0.5, 1.0):
        out = _run(LandmarkSmoother.with_strength(strength), base + noise)
        factors[strength] = noise[30:, :, :2].std() / (out[30:, :, :2] - base[:, :2]).std()
    # measured on this track: 2.0x, 2.9x and 4.3x
    assert factors[0.5] > 2.5
    assert factors[1.0] > factors[0.5] > factors[0.25] > 1.5


def test_a_step_is_followed_within_a_few_frames() -> None:
    rng = np.random.default_rng(1)
    base = _face(rng)
    noise = rng.normal(0, 1.0, (120, N_POINTS, 3))
    step = np.array([30.0, 0.0, 0.0])  # the face jumps by 30% of its size
    truth = np.array([base + (step if i >= 60 else 0) for i in range(120)])
    out = _run(LandmarkSmoother.with_strength(0.5), truth + noise)
    err = np.abs(out[:, :, 0] - truth[:, :, 0]).mean(axis=1)  # mean over points, px
    settled = next(j for j in range(60, 120) if np.all(err[j:] < 1.0)) - 60
    assert settled <= 5, settled
    # and before the step it was smoothing (error below the raw noise's mean absolute value of 0.8 px)
    assert err[30:60].mean() < 0.5


def test_a_moving_face_lags_little() -> None:
    rng = np.random.default_rng(2)
    base = _face(rng)
    truth = np.array([base + np.array([50.0 * i / FPS, 0, 0]) for i in range(150)])  # half its size per second
    out = _run(LandmarkSmoother.with_strength(0.5), truth + rng.normal(0, 1.0, truth.shape))
    lag = (truth[60:, :, 0] - out[60:, :, 0]).mean()
    assert 0 < lag < 2.0  # px, on a 100 px face


def test_strength_zero_is_off() -> None:
    rng = np.random.default_rng(3)
    track = np.array([_face(rng) for _ in range(5)]).astype(np.float32)
    assert params_for_strength(0.0) is None
    out = _run(LandmarkSmoother.with_strength(0.0), track)
    np.testing.assert_array_equal(out, track)


def test_variable_frame_times_use_real_intervals() -> None:
    p = OneEuroParams(min_cutoff=1.0, beta=0.0)
    a, b = OneEuroFilter(p), OneEuroFilter(p)
    x0, x1 = np.zeros((1, 2)), np.ones((1, 2))
    a(x0, 0.0)
    b(x0, 0.0)
    short = a(x1, 1 / 60)[0, 0]
    long = b(x1, 1 / 10)[0, 0]
    tau = 1 / (2 * np.pi)
    assert short == pytest.approx(1 / (1 + tau * 60))  # closed form of the low-pass step
    assert long == pytest.approx(1 / (1 + tau * 10))


def test_faces_keep_their_own_tracks_and_restart_after_absence() -> None:
    rng = np.random.default_rng(4)
    left, right = _face(rng, x0=0), _face(rng, x0=400)
    sm = LandmarkSmoother.with_strength(1.0)
    for i in range(10):
        faces = [left, right] if i % 2 == 0 else [right, left]  # order changes, boxes tell them apart
        out = sm.update(i / FPS, faces, [_box(f) for f in faces])
        for f, o in zip(faces, out, strict=True):
            np.testing.assert_allclose(o, f, atol=1e-4)  # still faces: the filter holds their places
    # the right face leaves for a frame and comes back 80 px away: a fresh filter, no smoothing from before
    sm.update(10 / FPS, [left], [_box(left)])
    moved = right + np.array([80.0, 0, 0])
    out = sm.update(11 / FPS, [left, moved], [_box(left), _box(moved)])
    np.testing.assert_array_equal(out[1], moved.astype(np.float32))


def test_source_track_ids_are_used() -> None:
    rng = np.random.default_rng(5)
    a = _face(rng, x0=0)
    sm = LandmarkSmoother.with_strength(1.0)
    sm.update(0.0, [a], [_box(a)], track_ids=[7])
    # same id, far away box: still the same track, so it is smoothed (not a fresh start)
    far = a + np.array([300.0, 0, 0])
    out = sm.update(1 / FPS, [far], [_box(far)], track_ids=[7])
    assert np.abs(out[0] - far).max() > 1.0
    with pytest.raises(ValueError, match="match"):
        sm.update(2 / FPS, [a], [_box(a)], track_ids=[1, 2])
