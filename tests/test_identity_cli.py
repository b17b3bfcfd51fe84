"""Identity through the command line, on frames holding both public-domain portraits side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changeling.faces import list_faces, read_meta
from conftest import run_cli

dlib = pytest.importorskip("dlib", reason="pip install 'changeling[identity]'")


def _portraits() -> tuple[np.ndarray, np.ndarray]:
    import matplotlib.cbook
    import skimage.data

    a = skimage.data.astronaut()
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        b = np.asarray(Image.open(fh).convert("RGB"))
    h = 320
    a = np.asarray(Image.fromarray(a).resize((round(a.shape[1] * h / a.shape[0]), h)))
    b = np.asarray(Image.fromarray(b).resize((round(b.shape[1] * h / b.shape[0]), h)))
    return a, b


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    root = tmp_path_factory.mktemp("scene")
    a, b = _portraits()
    frames = root / "frames"
    frames.mkdir()
    for i, shift in enumerate((0, 6, 12)):
        canvas = np.zeros((340, a.shape[1] + b.shape[1] + 40, 3), np.uint8)
        canvas[10:10 + a.shape[0], shift:shift + a.shape[1]] = a
        canvas[10:10 + b.shape[0], a.shape[1] + 30:a.shape[1] + 30 + b.shape[1]] = b
        Image.fromarray(canvas).save(frames / f"f{i}.png")
    ref = root / "astronaut.png"
    Image.fromarray(a).save(ref)
    return frames, ref, a.shape[1] + 20  # x of the boundary between the two portraits


def test_reference_keeps_the_right_face_in_every_frame(tmp_path: Path, scene: tuple[Path, Path, int]) -> None:
    frames, ref, boundary = scene
    proj = tmp_path / "p"
    assert run_cli("init", str(proj)).returncode == 0
    r = run_cli("extract", "-p", str(proj), "--side", "A", str(frames), "--max-faces", "2", "--reference",
                str(ref), "-q", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    faces = list_faces(proj / "faces" / "A")
    assert len(faces) == 3
    for f in faces:
        box = read_meta(f).box
        assert (box[0] + box[2]) / 2 < boundary  # the astronaut's side of every frame
    assert "3 faces of other people dropped" in r.stdout


def test_cluster_separates_the_two_people(tmp_path: Path, scene: tuple[Path, Path, int]) -> None:
    frames, _, boundary = scene
    proj = tmp_path / "p"
    run_cli("init", str(proj))
    r = run_cli("extract", "-p", str(proj), "--side", "B", str(frames), "--max-faces", "2", "-q", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert len(list_faces(proj / "faces" / "B")) == 6
    r = run_cli("faces", "cluster", "-p", str(proj), "--side", "B", "-q")
    assert r.returncode == 0, r.stderr
    folders = sorted(p for p in (proj / "faces" / "B").iterdir() if p.is_dir())
    assert [len(list_faces(f)) for f in folders] == [3, 3]
    for folder in folders:
        sides = {(read_meta(f).box[0] + read_meta(f).box[2]) / 2 < boundary for f in list_faces(folder)}
        assert len(sides) == 1  # each cluster is one person
    r = run_cli("faces", "cluster", "-p", str(proj), "--side", "B", "--gather", "-q")
    assert r.returncode == 0 and len(list_faces(proj / "faces" / "B")) == 6


def test_convert_swaps_only_the_referenced_person(tmp_path: Path, scene: tuple[Path, Path, int]) -> None:
    frames, ref, boundary = scene
    proj = tmp_path / "p"
    run_cli("init", str(proj))
    hopper = tmp_path / "hopper.png"
    first = np.asarray(Image.open(sorted(frames.glob("*.png"))[0]).convert("RGB"))
    Image.fromarray(first[:, boundary + 10:]).save(hopper)
    for side, who in (("A", ref), ("B", hopper)):
        r = run_cli("extract", "-p", str(proj), "--side", side, str(frames), "--max-faces", "2", "--reference",
                    str(who), "-q", "--device", "cpu")
        assert r.returncode == 0, r.stderr
    r = run_cli("train", "-p", str(proj), "--max-steps", "2", "--batch-size", "2", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = run_cli("convert", "-p", str(proj), str(frames), "-o", str(out), "--writer", "images", "--which",
                "reference", "--reference", str(ref), "--color", "none", "-q")
    assert r.returncode == 0, r.stderr
    src = [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in sorted(frames.glob("*.png"))]
    got = [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in sorted(out.glob("*.png"))]
    assert len(got) == len(src) == 3
    boxes = {side: {read_meta(f).frame_index: read_meta(f).box for f in list_faces(proj / "faces" / side)}
             for side in ("A", "B")}

    def change(s: np.ndarray, g: np.ndarray, box: list[float]) -> float:
        x0, y0, x1, y1 = (round(v) for v in box)
        return float(np.abs(s[y0:y1, x0:x1] - g[y0:y1, x0:x1]).mean())

    for i, (s, g) in enumerate(zip(src, got, strict=True)):
        swapped, kept = change(s, g, boxes["A"][i]), change(s, g, boxes["B"][i])
        assert swapped > 5 * kept and swapped > 5  # the astronaut (the reference) was swapped
        assert kept < 2  # Grace Hopper was not: only the invisible watermark touched her face
