"""Temporal blending of the swapped face: the weights, the sequence blend, the converter's and evaluate's use."""

from __future__ import annotations

import zlib
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pytest

from changeling.config import ConvertSettings
from changeling.config.convert import FACE_SMOOTH_MAX
from changeling.convert.pipeline import FaceJob, FramePlan, all_faces
from changeling.convert.smooth import LandmarkSmoother
from changeling.convert.temporal import MAX_STRENGTH, FaceBlender, blend, blend_sequence, blend_weights
from changeling.video.reader import TimedFrame
from changeling.video.testclip import write_clip
from test_convert import FakeFaces, H, N, R, TintModel, W, _converter, _pngs

S = 24


def _noise(t: int, seed: int = 0, size: int = S) -> np.ndarray:
    return np.random.default_rng(seed).random((t, size, size, 3), dtype=np.float32)


def test_weights_are_the_strength_where_the_source_holds_still_and_fall_where_it_moves() -> None:
    crop = np.full((S, S, 3), 0.5, np.float32)
    moved = crop.copy()
    moved[:8, :8] = 1.0  # the top-left corner changes (a mouth opening)
    w = blend_weights(crop, moved, 0.7)
    assert w.shape == (S, S) and w.dtype == np.float32
    assert np.allclose(w[16:, 16:], 0.7, atol=1e-6)  # far from the change: the full strength
    assert w[:6, :6].max() < 0.01  # inside it: the new frame alone
    assert np.allclose(blend_weights(crop, crop, 0.0), 0.0)
    with pytest.raises(ValueError, match="strength"):
        blend_weights(crop, crop, 1.0)
    with pytest.raises(ValueError, match="shape"):
        blend_weights(crop, crop[:8], 0.5)


def test_a_still_source_gives_the_exponential_average_of_the_outputs() -> None:
    """Checked against the recurrence written out by hand."""
    outs = _noise(6)
    crops = np.repeat(np.full((1, S, S, 3), 0.3, np.float32), 6, axis=0)
    got = blend_sequence(outs, crops, 0.6)
    want = outs.copy()
    for t in range(1, 6):
        want[t] = 0.6 * want[t - 1] + 0.4 * outs[t]
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(blend_sequence(outs, crops, 0.0), outs)  # off: the outputs as they were


def test_blending_cuts_flicker_and_follows_real_change() -> None:
    t = 30
    crops = np.repeat(np.full((1, S, S, 3), 0.4, np.float32), t, axis=0)
    crops[15:, :, :12] = 0.9  # from frame 15 the source's left half changes
    truth = np.where(np.arange(S)[None, None, :, None] < 12, (np.arange(t) >= 15)[:, None, None, None] * 0.5, 0.2)
    outs = (truth + 0.05 * (_noise(t) - 0.5)).astype(np.float32)  # the model's output: the truth plus flicker
    got = blend_sequence(outs, crops, 0.7)
    raw_flicker = np.abs(np.diff(outs[:15], axis=0)).mean()
    assert np.abs(np.diff(got[:15], axis=0)).mean() < 0.5 * raw_flicker
    # the changed half follows at once: frame 15 is within the noise of the truth there, not the old frames
    assert np.abs(got[15, :, :10] - truth[15, :, :10]).max() < 0.05
    assert np.abs(got[15, :, 14:] - truth[15, :, 14:]).mean() < np.abs(outs[15, :, 14:] - truth[15, :, 14:]).mean()


def test_blend_resizes_the_weights_for_a_larger_output() -> None:
    w = np.full((S, S), 0.5, np.float32)
    got = blend(np.ones((2 * S, 2 * S, 3), np.float32), np.zeros((2 * S, 2 * S, 3), np.float32), w)
    assert got.shape == (2 * S, 2 * S, 3) and np.allclose(got, 0.5)
    got = blend(np.ones((2 * S, 2 * S), np.float32), np.zeros((2 * S, 2 * S), np.float32), w)  # a mask
    assert got.shape == (2 * S, 2 * S) and np.allclose(got, 0.5)


def test_the_blender_matches_the_sequence_blend_and_starts_afresh_after_a_gap() -> None:
    outs, masks = _noise(5), _noise(5, seed=1)[..., 0]
    crops = (np.random.default_rng(2).random((5, S, S, 3)) * 0.05 + 0.5).astype(np.float32)
    crops_u8 = np.round(crops * 255).astype(np.uint8)
    blender = FaceBlender(0.7)
    got = []
    for t in range(5):
        blender.next_frame()
        got.append(blender(0, crops_u8[t], outs[t], masks[t]))
    want = blend_sequence(outs, crops_u8.astype(np.float32) / 255, 0.7)
    np.testing.assert_allclose(np.stack([f for f, _ in got]), want, atol=1e-5)
    assert not np.allclose(got[4][1], masks[4])  # the mask is blended too
    # face 0 is absent from one frame: the next starts from the model's own output
    blender.next_frame()
    blender.next_frame()
    face, mask = blender(0, crops_u8[0], outs[0], masks[0])
    np.testing.assert_array_equal(face, outs[0])
    with pytest.raises(ValueError, match="face smoothing"):
        FaceBlender(MAX_STRENGTH + 0.01)


class NoisyModel(TintModel):
    """The tint plus fresh noise on every face: a model that flickers on a still face (the n-th face it sees
    gets the same noise however the faces are batched)."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng(0)

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, m = super().__call__(crops)
        noise = np.stack([self.rng.normal(0, 0.05, f.shape[1:]) for _ in f]).astype(np.float32)
        return np.clip(f + noise, 0, 1), m


def _plans(n: int, absent: Collection[int] = ()) -> list[FramePlan]:
    crop = np.full((R, R, 3), 120, np.uint8)
    return [FramePlan(TimedFrame(i, i / 24, None, np.zeros((4, 4, 3), np.uint8)),
                      [] if i in absent else [FaceJob(0, np.zeros((468, 3), np.float32), np.eye(2, 3), crop)])
            for i in range(n)]


def test_the_converter_blends_across_batches_in_frame_order() -> None:
    conv = _converter(swapper=NoisyModel(), batch_size=3, face_smooth=0.7)
    one, two = _plans(8, {5}), _plans(8, {5})
    conv.swap(one, FaceBlender(0.7))  # all frames in one call...
    blender = FaceBlender(0.7)
    conv.swapper = NoisyModel()  # the same noise again
    conv.swap(two[:4], blender)  # ...and split over two: the same faces
    conv.swap(two[4:], blender)
    assert all(np.allclose(a.faces[0].swapped, b.faces[0].swapped, atol=1e-6)  # type: ignore[arg-type]
               for a, b in zip(one, two, strict=True) if a.faces)
    raw = _plans(8, {5})
    conv.swapper = NoisyModel()
    conv.swap(raw)  # no blender: the model's outputs
    faces = np.stack([p.faces[0].swapped for p in one[:5]])  # type: ignore[misc]
    raw_faces = np.stack([p.faces[0].swapped for p in raw[:5]])  # type: ignore[misc]
    flicker, raw_flicker = np.abs(np.diff(faces, axis=0)).mean(), np.abs(np.diff(raw_faces, axis=0)).mean()
    assert flicker < 0.5 * raw_flicker
    # frame 6 follows the absent frame 5: the model's own output
    np.testing.assert_array_equal(one[6].faces[0].swapped, raw[6].faces[0].swapped)  # type: ignore[arg-type]


def test_a_converted_video_is_blended_except_after_a_frame_without_a_face(tmp_path: Path) -> None:
    video = write_clip(tmp_path / "in.mp4", frames=N, width=W, height=H, fps=24)
    plain = _pngs(_converter(smooth=0.0).run(video, tmp_path / "plain").output)
    blended = _pngs(_converter(smooth=0.0, face_smooth=0.9).run(video, tmp_path / "blended").output)
    assert len(plain) == len(blended)
    # frames 1, 6 and 10 follow a frame without a face (test_convert's NO_FACE), frame 0 and 4, 5, 9 have none
    for i in (0, 1, 4, 5, 6, 9, 10):
        np.testing.assert_array_equal(blended[i], plain[i])
    # the rest carry some of the frame before: each is nearer its predecessor than the plain render is to its own
    for i in (2, 3, 7, 8, 11):
        step = np.abs(blended[i].astype(int) - blended[i - 1].astype(int)).mean()
        plain_step = np.abs(plain[i].astype(int) - plain[i - 1].astype(int)).mean()
        assert step < plain_step, i


def test_the_default_is_in_range_and_evaluate_scores_with_it() -> None:
    import torch

    from changeling.evaluate.paired import PairedSpec, evaluate_model, make_paired_data
    from changeling.models.registry import create_model

    assert 0 < ConvertSettings().face_smooth <= MAX_STRENGTH
    torch.manual_seed(0)
    model = create_model("tiny")
    data = make_paired_data(PairedSpec(seconds=0.5, fps=8), 64, "whole")
    raw, _ = evaluate_model(model, data)
    smooth, _ = evaluate_model(model, data, face_smooth=0.7)
    assert (raw.face_smooth, smooth.face_smooth) == (0.0, 0.7)
    assert smooth.as_dict()["face_smooth"] == 0.7
    assert smooth.view_jitter < raw.view_jitter  # the blending is what it is for


def test_the_cap_is_the_settings_bound() -> None:
    assert MAX_STRENGTH == FACE_SMOOTH_MAX
    from changeling.config.core import apply
    from changeling.errors import UserError

    assert apply(ConvertSettings(), {"face_smooth": FACE_SMOOTH_MAX}, "test").face_smooth == FACE_SMOOTH_MAX
    with pytest.raises(UserError, match="face_smooth"):
        apply(ConvertSettings(), {"face_smooth": FACE_SMOOTH_MAX + 0.01}, "test")


class _SwappingFaces(FakeFaces):
    """Two faces in every frame, listed big-first on even frames and small-first on odd ones."""

    def faces(self, frames):  # type: ignore[no-untyped-def]
        out = super().faces(frames)
        return [f[::-1] if tf.index % 2 else f for tf, f in zip(frames, out, strict=True)]


class _CropNoiseModel(TintModel):
    """The tint plus noise drawn from the crop's own bytes: the same crop gets the same flicker, whatever its
    place in a batch."""

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, m = super().__call__(crops)
        noise = np.stack([np.random.default_rng(zlib.crc32(c.tobytes())).normal(0, 0.05, c.shape) for c in crops])
        return np.clip(f + noise, 0, 1).astype(np.float32), m


@pytest.mark.parametrize("smooth", [0.0, 0.5])
def test_faces_that_change_places_keep_their_own_blend(smooth: float) -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    image = np.stack([xx * 200 // W, yy * 200 // H, (xx + yy) * 100 // (W + H)], axis=-1).astype(np.uint8)
    frames = [TimedFrame(i, i / 24, None, image) for i in range(6)]  # smooth shading: a face drifting a pixel
    # a frame changes its crop a little (new flicker from the model, a large blend weight)

    def blended(faces: FakeFaces, strength: float = 0.7) -> list[dict[int, np.ndarray]]:
        conv = _converter(faces=faces, swapper=_CropNoiseModel(), select=all_faces, smooth=smooth)
        plans = conv.plan(frames, LandmarkSmoother.with_strength(smooth))
        conv.swap(plans, FaceBlender(strength) if strength else None)
        # each frame's faces by their width, so the two runs' faces can be matched
        return [{round(float(np.ptp(j.landmarks[:, 0]))): j.swapped for j in p.faces} for p in plans]  # type: ignore[misc]

    steady, swapping = blended(FakeFaces(no_face=set(), two=True)), blended(_SwappingFaces(no_face=set(), two=True))
    raw = blended(FakeFaces(no_face=set(), two=True), 0.0)
    for a, b in zip(steady, swapping, strict=True):
        assert a.keys() == b.keys() and len(a) == 2
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-6)
    # and the blend did act on both faces after the first frame
    assert all(not np.allclose(steady[t][k], raw[t][k]) for t in range(1, 6) for k in steady[t])


def test_the_smoother_follows_faces_by_box_with_smoothing_off() -> None:
    a, b = np.array([0, 0, 10, 10], np.float32), np.array([50, 50, 60, 60], np.float32)
    lm = np.zeros((4, 2), np.float32)
    sm = LandmarkSmoother.with_strength(0.0)
    sm.update(0.0, [lm, lm], [a, b])
    first = list(sm.keys)
    out = sm.update(0.04, [lm + 1, lm], [b + 1, a + 1])  # listed the other way round, moved a pixel
    assert sm.keys == first[::-1] and len(set(first)) == 2
    np.testing.assert_array_equal(out[0], lm + 1)  # smoothing off: the landmarks as given
