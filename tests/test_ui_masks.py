"""The web UI's occlusion masks, at the level of the tabs' handlers (no browser): the Masks tab's editor opens a
face with its current mask, what is painted and erased is saved as the face's hand correction (what the library
reads back), a mask of the wrong size, for a face gone or replaced, or outside the faces folder is refused in
one line; the Extract tab's gallery shows in red what the segmenter says covers a face; the Masks tab's and
Convert tab's command lines and preview images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from changeling.cli import build_parser
from changeling.config import MasksSettings
from changeling.config.core import parse_duration
from changeling.errors import UserError
from changeling.faces.facefile import read_face, read_meta
from changeling.occlusion.corrections import correction_path, read_correction
from changeling.occlusion.net import OcclusionNet, SegmenterConfig
from changeling.occlusion.project import face_mask, faces_signature, outline_mask
from changeling.occlusion.store import SegmenterInfo, segmenter_path, write_segmenter
from changeling.project import Project
from changeling.train.testfaces import make_faces
from changeling.ui.workspace import Workspace

pytest.importorskip("gradio")
SIZE = 32


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path)
    project = ws.open("p", create=True)
    make_faces(project.faces_dir("A"), "A", 3, size=SIZE)
    make_faces(project.faces_dir("B"), "B", 2, size=SIZE)
    return ws


def _faces(project: Project, side: str) -> list[Path]:
    return sorted(project.faces_dir(side).glob("*.png"))


def _write_segmenter(project: Project, bias: float) -> None:
    """A segmenter fit for ``project`` that says every pixel is covered (bias < 0) or visible (bias > 0)."""
    net = OcclusionNet(SegmenterConfig(32, 4))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(bias)
    sig = faces_signature([project.faces_dir("A"), project.faces_dir("B")])
    info = SegmenterInfo(config=SegmenterConfig(32, 4), face_type="whole", face_size=SIZE, sources=list(sig.sources),
                         step=1, target_step=1)
    write_segmenter(segmenter_path(project.root), info, net.state_dict())


def _red(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(int)
    return (rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 0] - rgb[..., 2] > 60)


GREEN, RED = (40, 200, 80, 150), (235, 40, 40, 150)  # the editor's two brushes (visible face, covered)


def _layer(size: int = SIZE) -> np.ndarray:
    return np.zeros((size, size, 4), np.uint8)


def _edited(layer: np.ndarray) -> dict[str, object]:
    return {"background": None, "layers": [layer], "composite": None}


def test_painting_adds_and_erases_mask_pixels_and_the_correction_is_what_the_library_reads(ws: Workspace) -> None:
    from changeling.ui.masks import PAINTED
    from changeling.ui.tab_masks import open_for_editing, save_edit

    project = ws.project()
    face = _faces(project, "A")[1]
    opened = open_for_editing(ws, "A", str(face))
    image, meta = read_face(face)
    outline = outline_mask(meta, SIZE) > 0.5
    assert "face outline" in opened.note and np.array_equal(opened.base > 0.5, outline)
    shown = opened.value["background"]  # the face with its mask drawn on it: green inside the outline
    assert shown.shape == image.shape and np.array_equal(shown[~outline], image[~outline])
    assert (shown[outline] != image[outline]).any(axis=-1).mean() > 0.9 and not _red(shown).any()
    assert outline[:, :8].sum() < outline.sum() and not outline[0:4, 0:4].any()
    # the user paints red over the left quarter (a hand), green on a corner the outline left out, and a soft
    # rim of red that stays below the threshold
    layer = _layer()
    layer[:, :8] = RED
    layer[0:4, 0:4] = GREEN
    layer[:, 16, :3], layer[:, 16, 3] = RED[:3], PAINTED // 2
    saved = save_edit(ws, "A", str(face), opened.key, opened.base, _edited(layer))
    want = outline.copy()
    want[:, :8] = False
    want[0:4, 0:4] = True
    got, source = face_mask(project, "A", face)
    assert source == "correction" and np.array_equal(got > 0.5, want)
    assert np.array_equal(read_correction(project.faces_dir("A"), meta) > 0.5, want)  # type: ignore[operator]
    # the editor now shows the stored correction; nothing painted (an empty layer) saves it unchanged
    assert "hand correction" in saved.note and np.array_equal(saved.base > 0.5, want)
    save_edit(ws, "A", str(face), saved.key, saved.base, _edited(_layer()))
    assert np.array_equal(face_mask(project, "A", face)[0] > 0.5, want)
    # the other faces keep theirs
    assert face_mask(project, "A", _faces(project, "A")[0])[1] == "outline"


def test_a_wrong_size_mask_a_gone_face_or_a_path_outside_is_refused_in_one_line(ws: Workspace) -> None:
    from changeling.ui.tab_masks import open_for_editing, save_edit

    project = ws.project()
    face = _faces(project, "A")[0]
    opened = open_for_editing(ws, "A", str(face))

    def refused(match: str, side: str, name: str, value: dict[str, object], key: str = opened.key,
                base: object = opened.base) -> None:
        with pytest.raises(UserError, match=match) as err:
            save_edit(ws, side, name, key, base, value)
        assert "\n" not in str(err.value)

    refused(f"{face.name}: mask is 40x40 but face {face.name} is 32x32", "A", str(face), _edited(_layer(40)))
    refused("no face is open", "A", str(face), _edited(_layer()), key="", base=None)
    # a face of B, or any file, outside A's faces folder; a side that is none
    refused("outside", "A", str(_faces(project, "B")[0]), _edited(_layer()))
    refused("outside", "A", "../../changeling.toml", _edited(_layer()))
    refused("side must be A or B", "C", str(face), _edited(_layer()))
    # the face was extracted again under the same name: another face now
    other = _faces(project, "A")[1]
    refused("holds another face", "A", str(face), _edited(_layer()), key=open_for_editing(ws, "A", str(other)).key)
    assert not project.faces_dir("A").joinpath("masks").exists()  # nothing was written
    ws.delete_face("A", face)
    refused(f"no face named {face.name} in .*choose the face again", "A", str(face), _edited(_layer()))
    with pytest.raises(UserError):
        open_for_editing(ws, "A", str(face))
    reopened = open_for_editing(ws, "A", str(other))
    assert save_edit(ws, "A", str(other), reopened.key, reopened.base, _edited(_layer())).key == reopened.key


def test_extract_gallery_shows_red_where_the_segmenter_says_covered(ws: Workspace) -> None:
    from changeling.ui.tab_extract import face_page

    project = ws.project()
    faces = _faces(project, "A")
    items, shown, count = face_page(project, "A", 1)
    assert [image for image, _ in items] == [str(f.resolve()) for f in faces]  # no segmenter: the files as they are
    assert "red" not in count
    _write_segmenter(project, bias=-30.0)  # everything covered
    items, shown, count = face_page(project, "A", 1)
    assert shown == [str(f) for f in faces] and "red" in count
    for (image, caption), face in zip(items, faces, strict=True):
        original, meta = read_face(face)
        assert isinstance(image, np.ndarray) and image.shape == original.shape and caption == face.stem
        inside = outline_mask(meta, SIZE) > 0.99
        outside = outline_mask(meta, SIZE) < 0.01
        assert _red(image)[inside].mean() > 0.95 and _red(original)[inside].mean() < 0.5  # the covered face is red
        assert np.array_equal(image[outside], original[outside])  # outside the face nothing changes
    _write_segmenter(project, bias=30.0)  # nothing covered: no red anywhere
    items, _, _ = face_page(project, "A", 1)
    for (image, _), face in zip(items, faces, strict=True):
        assert np.array_equal(image, read_face(face)[0])


def test_a_refused_segmenter_is_named_and_the_faces_still_show(ws: Workspace) -> None:
    from changeling.ui.tab_extract import face_page

    project = ws.project()
    _write_segmenter(project, bias=-30.0)
    make_faces(project.faces_dir("A"), "A", 1, size=48, seed=5)  # extracted again at another size (one face)
    items, _, count = face_page(project, "A", 1)
    assert len(items) == 3 and "segmenter is not used" in count and "segmenter.safetensors" in count


def test_masks_train_args_parse_with_the_cli(ws: Workspace) -> None:
    from changeling.ui.commands import masks_train_args
    from changeling.ui.forms import Form
    from changeling.ui.tab_masks import FIELDS

    project = ws.project()
    settings = Form("masks", MasksSettings, FIELDS).read(MasksSettings(), [600, 50, "2m", "cpu"])
    ns = build_parser().parse_args(masks_train_args(project, settings, FIELDS))
    assert (ns.command, ns.masks_command, ns.project) == ("masks", "train", project.root)
    assert (int(ns.max_steps), int(ns.finetune_steps), parse_duration(ns.max_time), ns.device) == \
        (600, 50, 120.0, "cpu")
    assert ns.batch_size is None  # not on the tab: the project's changeling.toml decides


def test_convert_tab_shows_the_occlusion_preview_when_convert_wrote_one() -> None:
    from changeling.ui.tab_convert import preview_shown

    written = [Path(f"c_f000003_{m}.png") for m in ("none", "rct", "hist")]
    assert preview_shown(written, "rct") == (written[1], None)
    occlusion = Path("c_f000003_occlusion.png")
    assert preview_shown([*written, occlusion], "hist") == (written[2], occlusion)


def test_the_correction_survives_as_the_editor_saved_it(ws: Workspace) -> None:
    from changeling.ui.tab_masks import open_for_editing, save_edit

    project = ws.project()
    face = _faces(project, "B")[0]
    opened = open_for_editing(ws, "B", str(face))
    save_edit(ws, "B", str(face), opened.key, opened.base, _edited(_layer()))  # the outline, as a correction
    path = correction_path(project.faces_dir("B"), read_meta(face))
    face.rename(face.with_name("0001_" + face.name))  # `faces sort`
    reopened = open_for_editing(ws, "B", str(face.with_name("0001_" + face.name)))
    assert path.is_file() and "hand correction" in reopened.note
