"""Identity: embeddings, the reference filter, clustering, sorting and the identity score.

The scenes hold the two public-domain portraits (scikit-image's astronaut, matplotlib's Grace Hopper) side by
side, moved and scaled a little per frame. Where each face should be comes from dlib's HOG detector run on
the original portraits and the known resize and shift, independently of the code under test.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from scipy import ndimage
from skimage import data

from changeling.errors import UserError
from changeling.faces.facefile import FaceMeta, list_faces, read_meta, write_face
from changeling.identity import embed as embed_mod
from changeling.identity.cluster import cluster_embeddings, cluster_faces, gather_clusters, move_into_clusters
from changeling.identity.embed import (
    BOX_CENTRE_DOWN,
    BOX_PER_EYE_MOUTH,
    BOX_PER_EYES,
    EYE_A,
    EYE_B,
    INSTALL_HINT,
    MOUTH,
    FaceEmbedder,
    box_from_landmarks,
    box_in_crop,
    distances,
    face_file_box,
)
from changeling.identity.match import IdentityFilter
from changeling.identity.score import identity_distances, identity_score
from changeling.identity.sort import (
    CHEEK_LEFT,
    CHEEK_RIGHT,
    MANIFEST,
    NOSE_TIP,
    PENDING,
    YAW_DEPTH,
    blur_score,
    sort_faces,
    unsort_faces,
    yaw_degrees,
)

HAVE_DLIB = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec(
    "face_recognition_models") is not None
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="dlib / face-recognition-models not installed "
                                "(pip install 'changeling[identity]')")

HEIGHT = 256  # scene height before the per-frame scale
N_FRAMES = 6
CROP = 64  # aligned face size


def _portraits() -> dict[str, np.ndarray]:
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        hopper = np.asarray(img.convert("RGB"))
    return {"ast": np.ascontiguousarray(data.astronaut()), "hop": np.ascontiguousarray(hopper)}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@dataclass
class Scene:
    portraits: dict[str, np.ndarray]
    frames: list[np.ndarray]
    expected: list[dict[str, np.ndarray]]  # per frame: person -> face box where the face must be
    detections: list[list[tuple[np.ndarray, float]]]  # per frame: HOG boxes and scores
    found: list[dict[str, np.ndarray]]  # per frame: person -> the detected box that matches the expected one


def _make_frame(portraits: dict[str, np.ndarray], boxes: dict[str, np.ndarray],
                i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Both portraits at the same height, side by side, scaled by ~±8% and shifted by a few pixels."""
    h = int(round(HEIGHT * (1.0 + 0.08 * math.sin(i))))
    ast, hop = portraits["ast"], portraits["hop"]
    wa, wh = int(round(ast.shape[1] * h / ast.shape[0])), int(round(hop.shape[1] * h / hop.shape[0]))
    left = cv2.resize(ast, (wa, h), interpolation=cv2.INTER_AREA)
    right = cv2.resize(hop, (wh, h), interpolation=cv2.INTER_AREA)
    scene = np.concatenate([left, right], axis=1)
    dx, dy = (i * 7) % 13 - 6, (i * 5) % 11 - 5
    shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    frame = cv2.warpAffine(scene, shift, (scene.shape[1], scene.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    # where the faces go: scale each portrait's own face box into the scene
    maps = {"ast": (wa / ast.shape[1], h / ast.shape[0], dx), "hop": (wh / hop.shape[1], h / hop.shape[0], wa + dx)}
    return frame, {k: np.array([sx, sy, sx, sy]) * boxes[k] + np.array([ox, dy, ox, dy])
                   for k, (sx, sy, ox) in maps.items()}


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


@pytest.fixture(scope="module")
def scene(embedder: FaceEmbedder) -> Scene:
    portraits = _portraits()
    boxes = {}
    for k, img in portraits.items():
        found = embedder.detect(img)
        assert found, f"dlib finds no face in the {k} portrait"
        boxes[k] = found[0][0].astype(np.float64)
    frames, expected, detections, matched = [], [], [], []
    for i in range(N_FRAMES):
        frame, exp = _make_frame(portraits, boxes, i)
        dets = embedder.detect(frame)
        m = {}
        for person, box in exp.items():
            best = max(dets, key=lambda d, box=box: _iou(d[0], box))  # type: ignore[misc]
            assert _iou(best[0], box) > 0.5, f"frame {i}: the {person} face was not detected where expected"
            m[person] = best[0]
        frames.append(frame)
        expected.append(exp)
        detections.append(dets)
        matched.append(m)
    return Scene(portraits, frames, expected, detections, matched)


def _landmarks(box: np.ndarray, yaw: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """(468, 3) landmarks for a face whose HOG-convention box is ``box`` (square): eye and mouth corners placed
    by the inverse of ``box_from_landmarks``; nose tip and cheeks by a rigid head turned by ``yaw`` degrees
    with the canonical model's proportions; all rolled by ``roll`` degrees about the box centre; every other
    point at the centre."""
    c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    side = box[2] - box[0]
    eyes, eye_mouth = side / BOX_PER_EYES, side / BOX_PER_EYE_MOUTH
    mid = np.array([0.0, -BOX_CENTRE_DOWN * eye_mouth])
    local = {EYE_A[0]: mid + [-0.65 * eyes, 0], EYE_A[1]: mid + [-0.35 * eyes, 0],
             EYE_B[0]: mid + [0.65 * eyes, 0], EYE_B[1]: mid + [0.35 * eyes, 0],
             MOUTH[0]: mid + [-0.3 * eyes, eye_mouth], MOUTH[1]: mid + [0.3 * eyes, eye_mouth]}
    t, half = math.radians(yaw), side / 2
    cheek_z = -1.0  # any depth; the nose stands YAW_DEPTH * half in front of the cheeks
    for idx, (x, z) in {CHEEK_LEFT: (-half, cheek_z), CHEEK_RIGHT: (half, cheek_z),
                        NOSE_TIP: (0.0, cheek_z + YAW_DEPTH * half)}.items():
        local[idx] = np.array([x * math.cos(t) + z * math.sin(t), 0.0])
    r = math.radians(roll)
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    pts = np.zeros((468, 3), np.float64)
    pts[:, :2] = c
    for idx, p in local.items():
        pts[idx, :2] = c + rot @ p
    return pts


def _crop_affine(box: np.ndarray, size: int = CROP, margin: float = 1.6) -> np.ndarray:
    """Frame -> crop affine: a square of ``margin`` times the box side around its centre, scaled to ``size``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = margin * math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    s = size / side
    return np.array([[s, 0, -s * (cx - side / 2)], [0, s, -s * (cy - side / 2)]])


def _write_crop(path: Path, frame: np.ndarray, box: np.ndarray, *, flip: bool = False, gain: float = 1.0,
                yaw: float = 0.0, index: int = 0) -> Path:
    a = _crop_affine(box)
    if flip:  # mirror the crop, and say so in the affine
        a = np.array([[-1.0, 0, CROP - 1], [0, 1, 0]]) @ np.vstack([a, [0, 0, 1]])
    crop = cv2.warpAffine(frame, a, (CROP, CROP), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    crop = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    meta = FaceMeta(source="scene.mp4", frame_index=index, face_index=0, size=CROP, face_type="whole",
                    affine=a.tolist(), landmarks=_landmarks(box, yaw).tolist(), box=[float(v) for v in box],
                    score=0.9)
    write_face(path, crop, meta)
    return path


def _face_set(folder: Path, scene: Scene, person: str, frames: range, extras: bool = True) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = [_write_crop(folder / f"{person}_{i:02d}.png", scene.frames[i], scene.found[i][person], index=i)
           for i in frames]
    if extras:
        i0 = frames[0]
        out.append(_write_crop(folder / f"{person}_flip_a.png", scene.frames[i0], scene.found[i0][person], flip=True))
        out.append(_write_crop(folder / f"{person}_flip_b.png", scene.frames[i0 + 1], scene.found[i0 + 1][person],
                               flip=True))
        out.append(_write_crop(folder / f"{person}_dark.png", scene.frames[i0], scene.found[i0][person], gain=0.6))
        out.append(_write_crop(folder / f"{person}_bright.png", scene.frames[i0 + 1], scene.found[i0 + 1][person],
                               gain=1.35))
    return out


def _person(path: Path) -> str:
    return re.sub(r"^\d{4,}_", "", path.name).split("_")[0]


# --- embeddings -------------------------------------------------------------------------------------------------

@needs_dlib
def test_embeddings_equal_dlib_called_directly(embedder: FaceEmbedder, scene: Scene) -> None:
    import dlib

    frame, boxes = scene.frames[0], [scene.found[0]["ast"], scene.found[0]["hop"]]
    sp = dlib.shape_predictor(str(embed_mod.model_file(embed_mod.SHAPE_MODEL)))
    net = dlib.face_recognition_model_v1(str(embed_mod.model_file(embed_mod.EMBED_MODEL)))
    for box, ours in zip(boxes, embedder.embed(frame, boxes), strict=True):
        x0, y0, x1, y1 = (int(v) for v in box)
        ref = np.asarray(net.compute_face_descriptor(frame, sp(frame, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))))
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    batched = embedder.embed_many([(frame, boxes[0]), (scene.frames[1], scene.found[1]["hop"])])
    np.testing.assert_allclose(batched[0], embedder.embed_one(frame, boxes[0]), atol=1e-5)
    np.testing.assert_allclose(batched[1], embedder.embed_one(scene.frames[1], scene.found[1]["hop"]), atol=1e-5)


@needs_dlib
def test_face_file_embedding_matches_the_frame(embedder: FaceEmbedder, scene: Scene, tmp_path: Path) -> None:
    """The box stored in frame pixels, mapped into the aligned crop, finds the same face (same person, small
    distance), also when the crop is mirrored; a wrong box mapping would embed background."""
    for person in ("ast", "hop"):
        frame, box = scene.frames[2], scene.found[2][person]
        on_frame = embedder.embed_one(frame, box)
        for flip in (False, True):
            p = _write_crop(tmp_path / f"{person}_{flip}.png", frame, box, flip=flip)
            crop_box = box_in_crop(read_meta(p))
            assert 0 <= crop_box[0] < crop_box[2] <= CROP and 0 <= crop_box[1] < crop_box[3] <= CROP
            np.testing.assert_allclose(face_file_box(read_meta(p)), crop_box, atol=0.5)  # landmarks agree
            d = float(np.linalg.norm(embedder.embed_face_files([p], progress=False)[0] - on_frame))
            assert d < 0.3, (person, flip, d)


@pytest.mark.parametrize("roll", [0.0, 30.0, -75.0])
def test_box_from_landmarks_closed_form(roll: float) -> None:
    box = np.array([40.0, 60.0, 130.0, 150.0])
    np.testing.assert_allclose(box_from_landmarks(_landmarks(box, roll=roll)), box, atol=1e-3)
    turned = box_from_landmarks(_landmarks(box, yaw=50.0, roll=roll))  # cheeks and nose move, not the box
    np.testing.assert_allclose(turned, box, atol=1e-3)
    with pytest.raises(ValueError, match="468 or 478"):
        box_from_landmarks(np.zeros((68, 2)))
    with pytest.raises(ValueError, match="collapsed"):
        box_from_landmarks(np.zeros((468, 3)))
    np.testing.assert_array_equal(box_from_landmarks(np.zeros((478, 3)), fallback=box), box)


@needs_dlib
def test_landmarks_locate_the_face_whatever_the_box(embedder: FaceEmbedder, scene: Scene, tmp_path: Path) -> None:
    """With landmarks, the box given is not used: a box shifted toward the chin and too tight (as another
    detector may give) yields the same embedding as the HOG box."""
    ref = tmp_path / "hop.png"
    Image.fromarray(scene.portraits["hop"]).save(ref)
    flt = IdentityFilter([ref], embedder=embedder)
    for frame, found in zip(scene.frames[:3], scene.found[:3], strict=True):
        box = found["hop"]
        lm = _landmarks(box)
        side = box[2] - box[0]
        odd = box + np.array([0.15, 0.3, -0.15, 0.1]) * side
        np.testing.assert_allclose(embedder.embed(frame, [odd], [lm])[0], embedder.embed_one(frame, box),
                                   atol=1e-5)
        assert flt.matches(frame, odd, lm) and flt.distance(frame, odd, lm) == pytest.approx(
            flt.distance(frame, box), abs=1e-5)
        assert embedder.embed_many([(frame, odd, lm)])[0] == pytest.approx(embedder.embed_one(frame, box), abs=1e-5)
        # without landmarks that box really is misleading (so the equalities above show the landmarks in use)
        assert float(np.linalg.norm(embedder.embed_one(frame, odd) - embedder.embed_one(frame, box))) > 0.3
    with pytest.raises(ValueError, match="2 boxes but 1 landmark"):
        embedder.embed(scene.frames[0], [box, box], [lm])


@needs_dlib
def test_with_our_detector_and_landmarks(embedder: FaceEmbedder, scene: Scene, tmp_path: Path) -> None:
    """Faces found by changeling's own BlazeFace port and located by its MediaPipe landmarks: the box derived
    from the landmarks agrees with dlib's HOG box (this checks the calibration constants against the real
    landmark model), and the filter keeps the right face."""
    detector_mod = pytest.importorskip("changeling.detect.detector", reason="extraction's detector not present")
    landmark_mod = pytest.importorskip("changeling.detect.landmarker", reason="extraction's landmarker not present")
    roi_mod = pytest.importorskip("changeling.detect.roi", reason="extraction's ROI helpers not present")
    detector, landmarker = detector_mod.BlazeFaceDetector("full"), landmark_mod.FaceLandmarker(iris=False)
    ref = tmp_path / "ast.png"
    Image.fromarray(scene.portraits["ast"]).save(ref)
    flt = IdentityFilter([ref], embedder=embedder)
    frames = scene.frames[:3]
    for frame, found, dets in zip(frames, scene.found[:3], detector.detect(frames), strict=True):
        for person, hog in found.items():
            det = max(dets, key=lambda d, hog=hog: _iou(d.box, hog))  # type: ignore[misc]
            assert _iou(det.box, hog) > 0.5
            lm = landmarker([frame], [roi_mod.roi_from_detection(det)]).points[0]
            assert _iou(box_from_landmarks(lm), hog) > 0.65
            d = float(np.linalg.norm(embedder.embed_one(frame, det.box, lm) - embedder.embed_one(frame, hog)))
            assert d < 0.2, (person, d)
            assert flt.matches(frame, det.box, lm) == (person == "ast")


@needs_dlib
def test_distances_between_and_within_the_portraits(embedder: FaceEmbedder, scene: Scene) -> None:
    emb = {k: np.stack([embedder.embed_one(f, m[k]) for f, m in zip(scene.frames, scene.found, strict=True)])
           for k in ("ast", "hop")}
    within = [distances(e, e)[np.triu_indices(len(e), 1)] for e in emb.values()]
    between = distances(emb["ast"], emb["hop"])
    np.testing.assert_allclose(distances(emb["ast"], emb["hop"])[0, 0],
                               np.linalg.norm(emb["ast"][0] - emb["hop"][0]), rtol=1e-6)
    assert max(w.max() for w in within) < 0.6 < between.min()


# --- the reference filter ---------------------------------------------------------------------------------------

@needs_dlib
@pytest.mark.parametrize("keep", ["ast", "hop"])
def test_filter_keeps_exactly_the_reference_face(embedder: FaceEmbedder, scene: Scene, tmp_path: Path,
                                                 keep: str) -> None:
    ref = tmp_path / f"{keep}.jpg"
    Image.fromarray(scene.portraits[keep]).save(ref, quality=92)
    flt = IdentityFilter([ref], embedder=embedder)
    other = "hop" if keep == "ast" else "ast"
    for i, (frame, dets) in enumerate(zip(scene.frames, scene.detections, strict=True)):
        decisions = flt.matches_all(frame, [box for box, _ in dets])
        kept = [box for (box, _), ok in zip(dets, decisions, strict=True) if ok]
        assert len(kept) == 1, f"frame {i}: kept {len(kept)} faces"
        assert _iou(kept[0], scene.expected[i][keep]) > 0.5, f"frame {i}: kept the wrong face"
        assert any(_iou(box, scene.expected[i][other]) > 0.5 for (box, _), ok in zip(dets, decisions, strict=True)
                   if not ok), f"frame {i}: the other face was not among the rejected"
        assert flt.distance(frame, scene.found[i][keep]) <= 0.6 < flt.distance(frame, scene.found[i][other])
    frame, found = scene.frames[0], scene.found[0]
    assert flt.matches(frame, found[keep]) and not flt.matches(frame, found[other])


@needs_dlib
def test_filter_with_exclude_images(embedder: FaceEmbedder, scene: Scene, tmp_path: Path) -> None:
    for k, img in scene.portraits.items():
        Image.fromarray(img).save(tmp_path / f"{k}.png")
    both = IdentityFilter([tmp_path / "ast.png"], exclude_images=[tmp_path / "hop.png"], embedder=embedder)
    only_exclude = IdentityFilter([], exclude_images=[tmp_path / "hop.png"], embedder=embedder)
    strict = IdentityFilter([tmp_path / "ast.png"], threshold=0.05, embedder=embedder)
    for frame, found in zip(scene.frames[::2], scene.found[::2], strict=True):
        assert both.matches(frame, found["ast"]) and not both.matches(frame, found["hop"])
        assert only_exclude.matches(frame, found["ast"]) and not only_exclude.matches(frame, found["hop"])
        assert not strict.matches(frame, found["ast"])  # a tiny threshold rejects even the right person


@needs_dlib
def test_reference_without_a_face_is_a_user_error(embedder: FaceEmbedder, tmp_path: Path) -> None:
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    with pytest.raises(UserError, match=r"wall\.png: no face found"):
        IdentityFilter([blank], embedder=embedder)
    with pytest.raises(UserError, match="no such file"):
        IdentityFilter([tmp_path / "missing.jpg"], embedder=embedder)


@needs_dlib
def test_reference_can_be_a_face_file(embedder: FaceEmbedder, scene: Scene, tmp_path: Path) -> None:
    ref = _write_crop(tmp_path / "ref.png", scene.frames[0], scene.found[0]["hop"])
    flt = IdentityFilter([ref], embedder=embedder)
    assert all(flt.matches(f, m["hop"]) and not flt.matches(f, m["ast"])
               for f, m in zip(scene.frames[1:], scene.found[1:], strict=True))


# --- clustering -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_faces(scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("mixed")
    return (_face_set(folder, scene, "ast", range(N_FRAMES)) + _face_set(folder, scene, "hop", range(N_FRAMES)))


@needs_dlib
def test_cluster_separates_the_two_people(embedder: FaceEmbedder, mixed_faces: list[Path]) -> None:
    groups = cluster_faces(mixed_faces, embedder=embedder, progress=False)
    assert len(groups) == 2
    assert sorted(len(g) for g in groups) == [N_FRAMES + 4, N_FRAMES + 4]
    for g in groups:
        assert len({_person(p) for p in g}) == 1, [p.name for p in g]
    # the large-set path (near-duplicates folded first) gives the same partition
    emb = embedder.embed_face_files(mixed_faces, progress=False)
    direct = cluster_embeddings(emb)
    folded = cluster_embeddings(emb, max_direct=4)
    assert len(set(zip(direct.tolist(), folded.tolist(), strict=True))) == 2


def test_cluster_embeddings_on_known_points() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 128))
    centres *= 2.0 / np.linalg.norm(centres, axis=1, keepdims=True)  # far apart
    sizes = (7, 3, 5)
    pts = np.concatenate([c + rng.normal(scale=0.01, size=(n, 128)) for c, n in zip(centres, sizes, strict=True)])
    for max_direct in (1000, 2):
        labels = cluster_embeddings(pts, 0.6, max_direct=max_direct)
        # label 0 is the largest cluster; each true group gets one label
        assert labels.tolist() == [0] * 7 + [2] * 3 + [1] * 5
    assert cluster_embeddings(np.zeros((0, 128))).shape == (0,)
    assert cluster_embeddings(np.ones((1, 128))).tolist() == [0]


@needs_dlib
def test_move_into_clusters_and_back(embedder: FaceEmbedder, scene: Scene, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    names = sorted(p.name for p in _face_set(folder, scene, "ast", range(4), extras=False)
                   + _face_set(folder, scene, "hop", range(3), extras=False))
    (folder / "notes.txt").write_text("not a face")
    folders = move_into_clusters(folder, embedder=embedder, progress=False)
    assert [f.name for f in folders] == ["cluster_00", "cluster_01"]
    assert list_faces(folder) == []
    assert {_person(p) for p in list_faces(folders[0])} == {"ast"} and len(list_faces(folders[0])) == 4
    assert {_person(p) for p in list_faces(folders[1])} == {"hop"} and len(list_faces(folders[1])) == 3
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]  # no temporary leftovers
    back = gather_clusters(folder)
    assert sorted(p.name for p in back) == names == [p.name for p in list_faces(folder)]
    assert not (folder / "cluster_00").exists() and (folder / "notes.txt").exists()
    with pytest.raises(UserError, match="no face PNGs"):
        move_into_clusters(tmp_path, embedder=embedder, progress=False)


# --- sorting ----------------------------------------------------------------------------------------------------

def test_blur_score_is_the_variance_of_the_laplacian() -> None:
    img = data.astronaut()[100:228, 150:278]
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    lap = ndimage.convolve(grey, np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float), mode="mirror")
    assert blur_score(img) == pytest.approx(lap.var(), rel=1e-9)
    mask = np.zeros(img.shape[:2], np.float32)
    mask[20:90, 30:100] = 1
    assert blur_score(img, mask) == pytest.approx(lap[20:90, 30:100].var(), rel=1e-9)


@pytest.mark.parametrize("roll", [0.0, 25.0, -40.0])
def test_yaw_from_landmarks_closed_form(roll: float) -> None:
    box = np.array([100.0, 80.0, 220.0, 200.0])
    for yaw in (-60.0, -25.0, -5.0, 0.0, 10.0, 45.0):
        assert yaw_degrees(_landmarks(box, yaw, roll).astype(np.float32)) == pytest.approx(yaw, abs=1e-3)


def _plain_face(path: Path, *, box: list[float], yaw: float = 0.0, image: np.ndarray | None = None) -> Path:
    if image is None:
        image = np.random.default_rng(len(path.name)).integers(0, 255, (CROP, CROP, 3), dtype=np.uint8)
    meta = FaceMeta(source="clip.mp4", frame_index=0, face_index=0, size=CROP, face_type="whole",
                    affine=_crop_affine(np.array(box)).tolist(), landmarks=_landmarks(np.array(box), yaw).tolist(),
                    box=box, score=0.9)
    write_face(path, image, meta)
    return path


def test_sort_by_blur_puts_the_blurred_copy_last_and_is_reversible(tmp_path: Path) -> None:
    folder = tmp_path / "A"
    folder.mkdir()
    ast = data.astronaut()
    crops = [cv2.resize(ast[y:y + 160, x:x + 160], (CROP, CROP), interpolation=cv2.INTER_AREA)
             for x, y in ((150, 50), (160, 60), (140, 70), (170, 40))]
    for k, c in enumerate(crops):
        _plain_face(folder / f"face_{k}.png", box=[0, 0, 100, 100], image=c)
    _plain_face(folder / "face_9_soft.png", box=[0, 0, 100, 100], image=cv2.GaussianBlur(crops[1], (0, 0), 2.0))
    originals = sorted(p.name for p in list_faces(folder))

    out = sort_faces(folder, "blur", progress=False)
    assert [p.name for p in list_faces(folder)] == [p.name for p in out]
    assert out[-1].name == f"{len(out):04d}_face_9_soft.png"
    assert all(re.fullmatch(r"\d{4}_face_\d(_soft)?\.png", p.name) for p in out)
    assert (folder / MANIFEST).exists()

    out2 = sort_faces(folder, "blur", progress=False)  # rerun: same order, prefix replaced, not stacked
    assert [p.name for p in out2] == [p.name for p in out]

    restored = unsort_faces(folder)
    assert [p.name for p in restored] == originals == [p.name for p in list_faces(folder)]
    assert not (folder / MANIFEST).exists()


def test_sort_by_size_and_yaw(tmp_path: Path) -> None:
    folder = tmp_path / "B"
    folder.mkdir()
    specs = {"a": (60.0, 10.0), "b": (200.0, -30.0), "c": (120.0, 45.0), "d": (90.0, 0.0), "e": (150.0, -5.0)}
    for name, (side, yaw) in specs.items():
        _plain_face(folder / f"{name}.png", box=[10.0, 20.0, 10.0 + side, 20.0 + side], yaw=yaw)
    by_size = sort_faces(folder, "size", progress=False)
    assert [p.name[5:] for p in by_size] == ["b.png", "e.png", "c.png", "d.png", "a.png"]
    by_yaw = sort_faces(folder, "yaw", progress=False)  # re-sorting replaces the size prefixes
    assert [p.name for p in by_yaw] == ["0001_b.png", "0002_e.png", "0003_d.png", "0004_a.png", "0005_c.png"]
    assert json.loads((folder / MANIFEST).read_text())["original"]["0001_b.png"] == "b.png"


def test_sort_finishes_an_interrupted_rename(tmp_path: Path) -> None:
    folder = tmp_path / "C"
    folder.mkdir()
    for name, side in (("x", 50.0), ("y", 80.0)):
        _plain_face(folder / f"{name}.png", box=[0.0, 0.0, side, side])
    sort_faces(folder, "size", progress=False)
    # simulate a crash between the two rename steps: one face under its hidden name
    (folder / "0001_y.png").rename(folder / f"{PENDING}0001_y.png")
    assert [p.name for p in list_faces(folder)] == ["0002_x.png"]
    out = sort_faces(folder, "size", progress=False)
    assert [p.name for p in out] == ["0001_y.png", "0002_x.png"]
    assert not list(folder.glob(".changeling-sorting-*"))


def test_sort_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such faces folder"):
        sort_faces(tmp_path / "nope", "blur")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no face PNGs"):
        sort_faces(tmp_path / "empty", "blur")
    Image.fromarray(np.zeros((CROP, CROP, 3), np.uint8)).save(tmp_path / "empty" / "plain.png")
    with pytest.raises(UserError, match=r"plain\.png: no changeling metadata"):
        sort_faces(tmp_path / "empty", "size")
    assert (tmp_path / "empty" / "plain.png").exists()


@needs_dlib
def test_sort_by_identity_puts_the_other_person_last(embedder: FaceEmbedder, scene: Scene, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    _face_set(folder, scene, "ast", range(N_FRAMES))
    _face_set(folder, scene, "hop", range(2), extras=False)
    out = sort_faces(folder, "identity", embedder=embedder, progress=False)
    assert [_person(p) for p in out] == ["ast"] * (N_FRAMES + 4) + ["hop"] * 2


# --- identity score ---------------------------------------------------------------------------------------------

def test_identity_distances_closed_form() -> None:
    e = np.zeros((1, 128), np.float32)
    unit = np.zeros(128, np.float32)
    unit[3] = 1.0
    a = np.stack([e[0] + unit, e[0] + 3 * unit])  # distances 1 and 3: mean 2
    b = np.stack([e[0] + 0.2 * unit])
    s = identity_distances(e, a, b)
    assert s["to_A"] == pytest.approx(2.0) and s["to_B"] == pytest.approx(0.2)
    assert s["A_to_B"] == pytest.approx((0.8 + 2.8) / 2)
    assert s["closer_to_B"] == 1.0 and s["matches_B"] == 1.0 and (s["n_output"], s["n_A"], s["n_B"]) == (1, 2, 1)
    with pytest.raises(ValueError, match="faces in every set"):
        identity_distances(e, a, np.zeros((0, 128)))


@needs_dlib
def test_identity_score_of_b_faces(embedder: FaceEmbedder, scene: Scene, tmp_path: Path) -> None:
    faces_a = _face_set(tmp_path / "A", scene, "ast", range(3), extras=False)
    faces_b = _face_set(tmp_path / "B", scene, "hop", range(3), extras=False)
    outputs = [(scene.frames[i], scene.found[i]["hop"]) for i in range(3, N_FRAMES)]  # B's face in other frames
    s = identity_score(outputs, faces_a, faces_b, embedder=embedder)
    assert s["to_B"] < 0.6 < s["to_A"]
    assert s["closer_to_B"] == 1.0 and s["matches_B"] == 1.0
    r = identity_score([(scene.frames[i], scene.found[i]["ast"]) for i in range(3, N_FRAMES)], faces_a, faces_b,
                       embedder=embedder)
    assert r["to_A"] < r["to_B"] and r["closer_to_B"] == 0.0


# --- without the extra ------------------------------------------------------------------------------------------

def test_without_dlib_every_identity_feature_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    _plain_face(tmp_path / "f.png", box=[0.0, 0.0, 40.0, 40.0])
    for call in (FaceEmbedder, lambda: IdentityFilter([tmp_path / "f.png"]),
                 lambda: cluster_faces([tmp_path / "f.png"]), lambda: move_into_clusters(tmp_path),
                 lambda: sort_faces(tmp_path, "identity"), lambda: identity_score([], [], [])):
        with pytest.raises(UserError) as info:
            call()
        assert str(info.value) == INSTALL_HINT and "pip install 'changeling[identity]'" in INSTALL_HINT
    assert [p.name for p in list_faces(tmp_path)] == ["f.png"]  # nothing was renamed or moved
    assert sort_faces(tmp_path, "blur", progress=False)[0].name == "0001_f.png"  # the other sorts need no dlib


def test_without_the_model_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(UserError, match=re.escape("pip install 'changeling[identity]'")):
        embed_mod.model_file(embed_mod.EMBED_MODEL)
