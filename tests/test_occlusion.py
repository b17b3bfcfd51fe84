"""Occlusions: synthetic occluders, the per-project segmenter (file, training, resume, fit checks), hand
corrections, training's mask hook, convert's occlusion mask and the CLI's refusals. Tiny data throughout."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from changeling.config import MasksSettings
from changeling.convert import color
from changeling.convert.maskops import MaskBuilder, occlusion_ramp
from changeling.convert.pipeline import Converter, DetectedFace
from changeling.convert.writers import writer_factory
from changeling.detect.align import template_points
from changeling.errors import InterruptedRun, UserError
from changeling.faces.facefile import read_meta
from changeling.occlusion.corrections import (
    correction_path,
    import_masks,
    read_correction,
    save_correction,
)
from changeling.occlusion.net import OcclusionNet, SegmenterConfig
from changeling.occlusion.paste import make_bank, paste_occluders
from changeling.occlusion.predict import Segmenter
from changeling.occlusion.project import face_mask, load_project_segmenter
from changeling.occlusion.store import (
    SegmenterInfo,
    check_fits,
    read_segmenter,
    segmenter_path,
    write_segmenter,
)
from changeling.occlusion.trainer import train_segmenter
from changeling.project import Project, init_project
from changeling.synth.occluders import (
    HELD_OUT_SEED_BASE,
    HELD_OUT_TEXTURES,
    KINDS,
    TRAINING_KINDS,
    TRAINING_TEXTURES,
    composite,
    make_sprite,
    occlude,
    occluder_schedule,
    placement,
)
from changeling.train.data import load_faces
from changeling.train.testfaces import make_faces
from changeling.video.reader import TimedFrame

TINY = MasksSettings(resolution=32, width=4, max_steps=4, finetune_steps=2, batch_size=2, save_every=2,
                     max_time=0.0, device="cpu")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    p = init_project(tmp_path / "p")
    make_faces(p.faces_dir("A"), "A", 4, size=32)
    make_faces(p.faces_dir("B"), "B", 4, size=32)
    return p


# ---------------------------------------------------------------------------------------- synthetic occluders


@pytest.mark.parametrize("kind", KINDS)
def test_sprites_are_seeded_and_have_a_coverage(kind: str) -> None:
    a, b, c = make_sprite(kind, 3), make_sprite(kind, 3), make_sprite(kind, 4)
    assert a.image.shape[:2] == a.alpha.shape and a.image.dtype == np.uint8
    assert 0.0 <= a.alpha.min() and a.alpha.max() <= 1.0 and a.alpha.max() > 0.99 and a.alpha.min() == 0.0
    assert np.array_equal(a.image, b.image) and np.array_equal(a.alpha, b.alpha)
    assert not (a.alpha.shape == c.alpha.shape and np.array_equal(a.alpha, c.alpha))


def test_held_out_textures_and_kinds_never_reach_training() -> None:
    held = {make_sprite("texture", HELD_OUT_SEED_BASE + s).source for s in range(6)}
    train = {make_sprite("texture", s).source for s in range(12)}
    assert held <= set(HELD_OUT_TEXTURES) and train <= set(TRAINING_TEXTURES)
    bank = make_bank(0, size=24)
    assert {s.kind for s in bank} <= set(TRAINING_KINDS) | {"shape"}
    assert not {s.source for s in bank} & set(HELD_OUT_TEXTURES)


def test_composite_paints_exactly_where_its_mask_says() -> None:
    frame = np.full((120, 160, 3), 77, np.uint8)
    sprite = make_sprite("bar", 1)
    aff = np.array([[0.3, 0.0, 40.0], [0.0, 0.3, 5.0]])
    out, cov = composite(frame, sprite, aff)
    assert cov.shape == (120, 160) and cov.max() > 0.99
    assert np.array_equal(out[cov == 0], frame[cov == 0])
    assert not np.array_equal(out[cov > 0.99], frame[cov > 0.99])


def test_schedule_places_the_same_occluder_for_both_portraits() -> None:
    passes = occluder_schedule(HELD_OUT_SEED_BASE + 5, 4.0, every=1.0, share=0.5)
    assert passes and all(p.seed >= HELD_OUT_SEED_BASE for p in passes)
    assert all(0 <= p.start < p.end <= 4.0 for p in passes)
    lm = np.column_stack([template_points("whole", 100) + 50, np.zeros(468)]).astype(np.float32)
    t = passes[0].start + 0.5 * (passes[0].end - passes[0].start)
    assert placement(passes[0], lm, passes[0].end + 0.01) is None or passes[1].active(passes[0].end + 0.01)
    a = np.zeros((200, 200, 3), np.uint8)
    b = np.full((200, 200, 3), 200, np.uint8)
    (oa, ca), (ob, cb) = occlude(a, lm, t, passes), occlude(b, lm, t, passes)
    assert ca.max() > 0.99 and np.array_equal(ca, cb)
    solid = ca > 0.999
    assert np.array_equal(oa[solid], ob[solid])  # the occluder itself is the same in A's and B's frames


# ------------------------------------------------------------------------------------------------ pasting


def test_pasted_targets_are_the_outline_minus_what_was_pasted() -> None:
    rng = np.random.default_rng(0)
    images = np.full((6, 32, 32, 3), 120, np.uint8)
    outlines = np.zeros((6, 32, 32), np.float32)
    outlines[:, 6:26, 8:24] = 1
    out, targets, _ = paste_occluders(images, outlines, rng, make_bank(1, size=8))
    assert out.shape == images.shape and targets.shape == outlines.shape
    assert np.all(targets <= outlines[:, :, ::-1] + 1e-6) or np.all(targets <= outlines + 1e-6)
    assert targets.sum() < outlines.sum()  # something covered some face


# --------------------------------------------------------------------------------------------- the file


def _info(**kw: object) -> SegmenterInfo:
    base = {"config": SegmenterConfig(32, 4), "face_type": "whole", "face_size": 32, "sources": ["A.png", "B.png"],
            "step": 1, "target_step": 1}
    base.update(kw)
    return SegmenterInfo(**base)  # type: ignore[arg-type]


def test_segmenter_file_round_trip_and_refusals(tmp_path: Path) -> None:
    net = OcclusionNet(SegmenterConfig(32, 4)).eval()
    path = write_segmenter(tmp_path / "s.safetensors", _info(), net.state_dict())
    seg = Segmenter.load(path)
    crops = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    out = seg(crops)
    assert out.shape == (3, 48, 48) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    with torch.no_grad():
        x = torch.nn.functional.interpolate(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, size=(32, 32),
                                            mode="bilinear", antialias=True)
        assert torch.allclose(torch.sigmoid(net(x)), torch.sigmoid(seg.net(x)))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file at all")
    with pytest.raises(UserError, match="junk.safetensors"):
        read_segmenter(tmp_path / "junk.safetensors")
    other = OcclusionNet(SegmenterConfig(32, 6)).state_dict()
    bad = write_segmenter(tmp_path / "bad.safetensors", _info(), other)  # header says width 4
    with pytest.raises(UserError, match="do not fit"):
        read_segmenter(bad)


def test_a_segmenter_of_another_project_or_resolution_is_refused(tmp_path: Path) -> None:
    info, path = _info(), tmp_path / "s.safetensors"
    check_fits(info, path, face_type="whole", face_size=32, sources=["B.png"], resolution=32)
    for kw, text in (({"face_type": "full", "face_size": 32}, "'full'"), ({"face_size": 64}, "64 px"),
                     ({"sources": ["other.mp4"]}, "other videos"), ({"resolution": 64}, "64 px was asked")):
        args = {"face_type": "whole", "face_size": 32, "sources": ["A.png"], "resolution": None, **kw}
        with pytest.raises(UserError, match=text) as err:
            check_fits(info, path, **args)  # type: ignore[arg-type]
        assert str(path) in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------- training


def test_training_saves_resumes_exactly_and_fine_tunes(project: Project, tmp_path: Path) -> None:
    twin = Project(tmp_path / "twin")
    shutil.copytree(project.root, twin.root)
    whole = train_segmenter(twin, TINY, progress=False)
    assert whole.step == 4 and whole.stopped == "done"

    def stop_at_two(step: int, _loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(InterruptedRun):
        train_segmenter(project, TINY, progress=False, on_step=stop_at_two)
    assert read_segmenter(segmenter_path(project.root)).info.step == 2
    resumed = train_segmenter(project, TINY, progress=False)
    assert resumed.step == 4 and resumed.steps_run == 2  # went on to the interrupted run's target
    a = read_segmenter(segmenter_path(project.root)).weights
    b = read_segmenter(segmenter_path(twin.root)).weights
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # the same as never interrupted
    tuned = train_segmenter(project, TINY, progress=False)
    assert tuned.step == 6 and tuned.steps_run == 2
    with pytest.raises(UserError, match="--fresh"):
        train_segmenter(project, dataclasses.replace(TINY, resolution=48), progress=False)
    assert train_segmenter(project, dataclasses.replace(TINY, resolution=48), fresh=True, progress=False).step == 4


def test_a_segmenter_of_an_older_default_shape_fine_tunes_in_its_own_shape(project: Project) -> None:
    # a project trained before the default width changed: `masks train` with the defaults goes on with the stored
    # shape instead of asking for --fresh; an explicitly different shape is still refused (test above)
    train_segmenter(project, TINY, progress=False)
    defaults = MasksSettings()
    assert (TINY.resolution, TINY.width) != (defaults.resolution, defaults.width)
    with_defaults = dataclasses.replace(TINY, resolution=defaults.resolution, width=defaults.width)
    tuned = train_segmenter(project, with_defaults, progress=False)
    assert tuned.step == 6 and tuned.steps_run == 2
    assert read_segmenter(segmenter_path(project.root)).info.config == SegmenterConfig(TINY.resolution, TINY.width)
    # a project that sets its own resolution (as the stored one) still keeps the stored width
    own_resolution = dataclasses.replace(with_defaults, resolution=TINY.resolution)
    assert train_segmenter(project, own_resolution, progress=False).step == 8
    with pytest.raises(UserError, match="width 4, not 8"):  # an explicit other width is refused
        train_segmenter(project, dataclasses.replace(TINY, width=TINY.width + 4), progress=False)


def test_masks_occlusion_without_a_segmenter_says_how_to_train(project: Project) -> None:
    assert load_project_segmenter(project.root) is None
    with pytest.raises(UserError, match="changeling masks train"):
        load_project_segmenter(project.root, required=True)


def test_a_segmenter_copied_from_another_project_is_refused(project: Project, tmp_path: Path) -> None:
    train_segmenter(project, TINY, progress=False)
    other = init_project(tmp_path / "other")
    make_faces(other.faces_dir("A"), "A", 3, size=48)
    segmenter_path(other.root).parent.mkdir(parents=True)
    shutil.copy(segmenter_path(project.root), segmenter_path(other.root))
    with pytest.raises(UserError, match="another project"):
        load_project_segmenter(other.root)


# ------------------------------------------------------------------------------------ hand corrections


def _half_mask(size: int) -> np.ndarray:
    m = np.full((size, size), 255, np.uint8)
    m[:, : size // 2] = 0  # the left half covered
    return m


def test_corrections_survive_renames_and_are_dropped_for_a_new_alignment(project: Project) -> None:
    faces_dir = project.faces_dir("A")
    face = sorted(faces_dir.glob("*.png"))[0]
    meta = read_meta(face)
    save_correction(faces_dir, meta, _half_mask(32))
    renamed = face.with_name("0001_" + face.name)  # what `faces sort` does
    face.rename(renamed)
    got, source = face_mask(project, "A", renamed)
    assert source == "correction" and got[:, :16].max() == 0 and got[:, 16:].min() == 1
    moved = dataclasses.replace(meta, affine=[[1.0, 0.0, 3.0], [0.0, 1.0, 0.0]])
    assert read_correction(faces_dir, moved) is None


def test_import_refuses_a_wrong_size_or_a_missing_face_and_writes_nothing(project: Project, tmp_path: Path) -> None:
    faces_dir = project.faces_dir("B")
    names = sorted(p.name for p in faces_dir.glob("*.png"))
    drop = tmp_path / "drop"
    drop.mkdir()
    Image.fromarray(_half_mask(32)).save(drop / names[0])
    Image.fromarray(_half_mask(40)).save(drop / names[1])
    with pytest.raises(UserError, match=f"{names[1]}.*40x40 but face") as err:
        import_masks(faces_dir, sorted(drop.iterdir()))
    assert "\n" not in str(err.value)
    assert not correction_path(faces_dir, read_meta(faces_dir / names[0])).exists()  # nothing written
    (drop / names[1]).unlink()
    Image.fromarray(_half_mask(32)).save(drop / "gone_00099.png")
    with pytest.raises(UserError, match="no face named gone_00099.png"):
        import_masks(faces_dir, sorted(drop.iterdir()))
    (drop / "gone_00099.png").unlink()
    assert len(import_masks(faces_dir, sorted(drop.iterdir()))) == 1
    assert correction_path(faces_dir, read_meta(faces_dir / names[0])).exists()


# ----------------------------------------------------------------------------------------- training's hook


def test_training_masks_ignore_what_covers_the_face(project: Project) -> None:
    faces_dir = project.faces_dir("A")
    first = sorted(faces_dir.glob("*.png"))[0]
    save_correction(faces_dir, read_meta(first), _half_mask(32))
    plain = load_faces(faces_dir, 32, progress=False, occlusion=False)
    cut = load_faces(faces_dir, 32, progress=False)
    assert plain.masks[0, 0, :, :16].float().max() == 255
    assert cut.masks[0, :, :, :16].max() == 0  # face, eyes and mouth planes all cut
    assert torch.equal(cut.masks[0, :, :, 17:], plain.masks[0, :, :, 17:])
    assert torch.equal(cut.masks[1:], plain.masks[1:])
    # a segmenter that sees everything covered: every face's planes go to zero
    net = OcclusionNet(SegmenterConfig(32, 4))
    with torch.no_grad():
        net.head.bias.fill_(-30.0)
        net.head.weight.zero_()
    sig = load_project_signature(project)
    write_segmenter(segmenter_path(project.root), _info(sources=list(sig)), net.state_dict())
    covered = load_faces(project.faces_dir("B"), 32, progress=False)
    assert covered.masks.max() == 0


def load_project_signature(project: Project) -> tuple[str, ...]:
    from changeling.occlusion.project import faces_signature

    return faces_signature([project.faces_dir("A"), project.faces_dir("B")]).sources


# --------------------------------------------------------------------------------------------------- convert


def test_occlusion_ramp_gives_covered_pixels_nothing() -> None:
    p = np.array([0.0, 0.2, 0.35, 0.5, 0.65, 1.0], np.float32)
    assert np.allclose(occlusion_ramp(p), [0, 0, 0, 0.5, 1, 1])


def test_mask_kinds_with_the_occlusion_mask() -> None:
    pts = template_points("whole", 32)
    occ = np.ones((32, 32), np.float32)
    occ[:, :16] = 0
    hull = MaskBuilder("hull").raw(None, pts, 32)
    got = MaskBuilder("occlusion").raw(None, pts, 32, occ)
    assert np.array_equal(got, np.minimum(hull, occ))
    pred = np.full((32, 32), 0.5, np.float32)
    assert np.array_equal(MaskBuilder("combined").raw(pred, pts, 32, occ), np.minimum(np.minimum(hull, pred), occ))
    assert np.array_equal(MaskBuilder("combined").raw(pred, pts, 32), np.minimum(hull, pred))
    with pytest.raises(ValueError, match="occlusion"):
        MaskBuilder("occlusion").raw(None, pts, 32)


class _Faces:
    def open(self, source: object) -> None:
        pass

    def faces(self, frames: list[TimedFrame]) -> list[list[DetectedFace]]:
        lm = np.column_stack([template_points("whole", 48) + 8, np.zeros(468)]).astype(np.float32)
        return [[DetectedFace(lm, np.array([*lm[:, :2].min(0), *lm[:, :2].max(0)], np.float32))] for _ in frames]


class _Swap:
    resolution, face_type = 32, "whole"

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(crops.shape, np.float32), np.ones(crops.shape[:3], np.float32)  # a black face


def test_convert_keeps_what_the_segmenter_says_covers_the_face(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).integers(30, 220, (64, 64, 3), dtype=np.uint8)
    tf = TimedFrame(0, 0.0, None, frame)

    def left_covered(crops: np.ndarray) -> np.ndarray:
        out = np.ones(crops.shape[:3], np.float32)
        out[:, :, :16] = 0.1  # the left half of every crop: covered
        return out

    def conv(mask: str, occlusion: object) -> np.ndarray:
        c = Converter(faces=_Faces(), swapper=_Swap(), color=color.none, masks=MaskBuilder(mask, 0, 4),  # type: ignore[arg-type]
                      writer_factory=writer_factory("images", crf=18), marker=None, workers=0, progress=False,
                      occlusion=occlusion)  # type: ignore[arg-type]
        plan = c.prepare([tf])[0]
        return c.render(plan).image

    hull = conv("hull", None)
    kept = conv("occlusion", left_covered)
    changed_by_hull = np.abs(hull.astype(int) - frame).max(axis=2) > 0
    left = np.zeros((64, 64), bool)
    left[:, :8 + 24] = True  # the crop's left half in frame pixels (crop 32 px over the 48 px face at +8)
    assert changed_by_hull[left].any()
    assert np.array_equal(kept[left], frame[left])  # the covered half is untouched
    assert (np.abs(kept.astype(int) - frame).max(axis=2) > 0)[~left].any()  # the rest is swapped
    Image.fromarray(frame).save(tmp_path / "in.png")
    with pytest.raises(UserError, match="masks train"):
        Converter(faces=_Faces(), swapper=_Swap(), color=color.none, masks=MaskBuilder("occlusion"),  # type: ignore[arg-type]
                  writer_factory=writer_factory("images", crf=18), marker=None, workers=0,
                  progress=False).run(tmp_path / "in.png", tmp_path / "out")


# ------------------------------------------------------------------------------------------------------ CLI


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from changeling.cli import main

    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_masks_import_train_info_and_refusals(project: Project, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = str(project.root)
    drop = tmp_path / "drop"
    drop.mkdir()
    name = sorted(p.name for p in project.faces_dir("A").glob("*.png"))[1]
    Image.fromarray(_half_mask(33)).save(drop / name)
    rc, _, err = _main(capsys, "masks", "import", "-q", "--project", root, "--side", "A", str(drop))
    assert rc == 2 and name in err and "33x33" in err and len(err.strip().splitlines()) == 1
    Image.fromarray(_half_mask(32)).save(drop / name)
    rc, out, _ = _main(capsys, "masks", "import", "-q", "--project", root, "--side", "A", str(drop))
    assert rc == 0 and "1 corrected" in out
    rc, out, _ = _main(capsys, "masks", "train", "-q", "--project", root, "--resolution", "32", "--width", "4",
                       "--max-steps", "2", "--batch-size", "2", "--device", "cpu")
    assert rc == 0 and "step 2" in out and "1 hand-corrected" in out
    rc, out, _ = _main(capsys, "masks", "info", "--project", root)
    assert rc == 0 and "step 2 of 2" in out and "corrections of A: 1" in out
    export = tmp_path / "export"
    rc, out, _ = _main(capsys, "masks", "export", "-q", "--project", root, "--side", "A", "-o", str(export))
    assert rc == 0 and "1 from the correction" in out and len(list(export.glob("*.png"))) == 4
    assert np.asarray(Image.open(export / name))[:, :16].max() == 0


def test_cli_convert_mask_occlusion_without_a_segmenter_is_one_line(project: Project, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from changeling.models.registry import create_model
    from changeling.train.checkpoint import SaveRequest, save_checkpoint

    model = create_model("tiny")
    save_checkpoint(project.model_dir, "tiny", model.config, "whole", SaveRequest(step=1, weights=model.state_dict()))
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in.png")
    rc, _, err = _main(capsys, "convert", "-q", "--project", str(project.root), str(tmp_path / "in.png"), "--mask",
                       "occlusion", "--device", "cpu")
    assert rc == 2 and "changeling masks train" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- the benchmark


def test_benchmark_scores_tell_a_perfect_mask_from_a_blind_one() -> None:
    from changeling.bench.occlusion import kept_share, occluded_sequence, segmenter_iou

    seq = occluded_sequence(seconds=2.0, fps=4.0, size=128)
    assert any(c.max() > 0 for c in seq.covered) and any(c.max() == 0 for c in seq.covered)
    blind = segmenter_iou(lambda crops: np.ones(crops.shape[:3], np.float32), seq, resolution=64)
    assert blind["iou_clear"] == 1.0 and blind["iou"] < 0.97 and blind["iou_covered_part"] == 0.0
    assert kept_share(seq.a, seq, marked=False) == {"kept": 1.0, "kept_all": 1.0}
    pasted = [np.where(c[..., None] > 0, 255 - a, a).astype(np.uint8) for a, c in zip(seq.a, seq.covered, strict=True)]
    assert kept_share(pasted, seq, marked=False)["kept"] < 0.5


def test_preview_adds_the_occlusion_overlay(tmp_path: Path) -> None:
    from changeling.convert.previews import write_previews

    frame = np.random.default_rng(1).integers(30, 220, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "in.png")

    def left_covered(crops: np.ndarray) -> np.ndarray:
        out = np.ones(crops.shape[:3], np.float32)
        out[:, :, :16] = 0.0
        return out

    def previews(occlusion: object) -> list[Path]:
        c = Converter(faces=_Faces(), swapper=_Swap(), color=color.none, masks=MaskBuilder("combined", 0, 4),  # type: ignore[arg-type]
                      writer_factory=writer_factory("images", crf=18), marker=None, workers=0, progress=False,
                      occlusion=occlusion)  # type: ignore[arg-type]
        return write_previews(c, tmp_path / "in.png", 0, tmp_path / ("occ" if occlusion else "plain"), modes=["none"])

    assert [p.name for p in previews(None)] == ["in_f000000_none.png"]
    paths = previews(left_covered)
    assert [p.name for p in paths] == ["in_f000000_none.png", "in_f000000_occlusion.png"]
    panel = np.asarray(Image.open(paths[1]).convert("RGB"))[:, 64:128].astype(int)  # the overlay panel
    red = (panel[..., 0] - panel[..., 1] > 60) & (panel[..., 0] - panel[..., 2] > 60)
    assert red[20:50, 10:30].mean() > 0.5 and red[20:50, 34:50].mean() < 0.05  # covered left half in red
