"""Derive the canonical 2-D face template in ``src/changeling/detect/template.py``.

How (run ``python tools/make_template.py`` from the repository root; needs the test extra for LiteRT and
scikit-image; the original ``face_landmark.tflite`` of the mediapipe 0.10.21 wheel is in tests/data/mediapipe).
The output is deterministic (rerunning it reproduces template.py):

1. Run MediaPipe's face landmark model (the original .tflite through LiteRT) on the two public-domain
   portraits bundled with scikit-image (astronaut) and matplotlib (Grace Hopper), and on their mirror images.
   The region of interest is refined a few times the way MediaPipe tracks a face: the landmarks' bounding box,
   scaled 1.5, squared, rotated by the eye line.
2. Find the mesh's mirror symmetry (which point is the left/right twin of which): first fit the head's yaw and
   roll from the twins known from the contours (eye, brow, lip and oval polygons, midline points), then match
   every point of the frontalised mesh to its nearest point of the mirrored mesh (an optimal assignment).
   The mirror-image runs give a second observation of each face with the twins swapped.
3. Frontalise each 3-D mesh: yaw and roll make it left/right symmetric; pitch is fixed by the convention that
   the top of the face oval (10) and the chin (152) lie at equal depth. Project orthographically to 2-D,
   average each mesh with its mirrored twin (exactly symmetric), and average the portraits after a
   least-squares similarity alignment.
4. Normalise: the x axis is the line of the outer eye corners, the origin their midpoint, and their distance is
   1 (template units). The face-type squares are computed from the template (see ``face_type_squares``).
5. The stable subset used to fit alignments (``STABLE``) is chosen by hand: eye corners, brows, nose bridge,
   tip and nostrils, mouth corners and cheeks; not the jaw line or the lips, which move with speech.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares, linear_sum_assignment
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from litert_mesh import LiteRTMesh  # noqa: E402

from changeling.masks import regions as R  # noqa: E402

DEFAULT_MODEL = ROOT / "tests/data/mediapipe/face_landmark.tflite"  # the original, kept for the port tests

# Landmarks that move little with expression: eye corners, brows, nose bridge and tip, nostrils, mouth
# corners, cheeks. Jaw and lips are left out (they move when talking).
STABLE = (33, 133, 362, 263, 70, 105, 107, 336, 334, 300, 168, 6, 197, 195, 4, 1, 2, 98, 327,
          61, 291, 50, 280, 116, 345)
MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 13, 14, 17, 18, 200, 199, 175, 152)


def portraits() -> list[np.ndarray]:
    import matplotlib.cbook as cbook
    import skimage.data
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as img:
        hopper = np.asarray(img.convert("RGB"))
    return [skimage.data.astronaut(), hopper]


# rough face boxes (x0, y0, x1, y1) to start the refinement from
START_BOXES = [(175, 60, 275, 180), (155, 130, 365, 340)]


def known_twins() -> list[tuple[int, int]]:
    pairs = list(zip(R.LEFT_EYE, R.RIGHT_EYE, strict=True)) + list(zip(R.LEFT_BROW, R.RIGHT_BROW, strict=True))
    n = len(R.FACE_OVAL)
    pairs += [(R.FACE_OVAL[i], R.FACE_OVAL[-i % n]) for i in range(1, n // 2)]
    for lips in (R.LIPS_OUTER, R.LIPS_INNER):  # corners at positions 0 and 10 of 20
        pairs += [(lips[i], lips[(10 - i) % 20]) for i in range(20)]
    return pairs + [(i, i) for i in MIDLINE]


def yaw_roll(mesh: np.ndarray, pairs: list[tuple[int, int]]) -> Rotation:
    """Rotation (yaw about y, roll about z) that makes the twins mirror images across a plane x = x0."""
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    centred = mesh - mesh.mean(0)

    def residual(params: np.ndarray) -> np.ndarray:
        rot = Rotation.from_euler("zy", params[:2])
        m = rot.apply(centred)
        return np.concatenate([m[a, 0] + m[b, 0] - 2 * params[2], m[a, 1] - m[b, 1], m[a, 2] - m[b, 2]])

    res = least_squares(residual, np.zeros(3))
    return Rotation.from_euler("zy", res.x[:2])


def frontalise(mesh: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    m = yaw_roll(mesh, pairs).apply(mesh - mesh.mean(0))
    # pitch: forehead top and chin at equal depth
    d = m[R.CHIN] - m[R.FOREHEAD]
    pitch = np.arctan2(d[2], d[1])
    return Rotation.from_euler("x", pitch).apply(m)


def mirror_permutation(meshes: list[np.ndarray]) -> np.ndarray:
    pairs = known_twins()
    cost = np.zeros((468, 468))
    for mesh in meshes:
        f = frontalise(mesh, pairs)
        f = f - np.array([np.mean([f[i, 0] for i in MIDLINE]), 0, 0])
        flipped = f * [-1, 1, 1]
        cost += ((f[:, None, :] - flipped[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    perm = cols[np.argsort(rows)]
    for a, b in pairs:
        if perm[a] != b:
            raise SystemExit(f"mirror assignment disagrees with the contours: {a} -> {perm[a]}, expected {b}")
    if not np.array_equal(perm[perm], np.arange(468)):
        raise SystemExit("mirror assignment is not an involution")
    return perm


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2, 3) mapping src (N, 2) onto dst (N, 2) (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    e = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / (s**2).sum(1).mean()
    out = np.zeros((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - out[:, :2] @ mu_s
    return out


def make_template(meshes: list[np.ndarray], perm: np.ndarray) -> np.ndarray:
    pairs = known_twins()
    flat = []
    for mesh in meshes:
        xy = frontalise(mesh, pairs)[:, :2]
        flat.append(xy)
    ref = flat[0]
    aligned = [ref] + [f @ similarity(f, ref)[:, :2].T + similarity(f, ref)[:, 2] for f in flat[1:]]
    mean = np.mean(aligned, axis=0)
    # exact symmetry: average with the mirror image (x negated about the midline, twins swapped)
    x0 = mean[list(MIDLINE), 0].mean()
    mirrored = mean[perm] * [-1, 1] + [2 * x0, 0]
    sym = (mean + mirrored) / 2
    # normalise: outer eye corners at (-0.5, 0) and (0.5, 0)
    r, le = sym[R.RIGHT_EYE_OUTER], sym[R.LEFT_EYE_OUTER]
    centre = (r + le) / 2
    return (sym - centre) / np.linalg.norm(le - r)


def face_type_squares(t: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """(centre x, centre y, side) of each face type's square crop, in template units (H: face oval height).

    half: the inner face, brow tops to lower lip (its height, 5 % margin); the outer brow ends and the cheeks
    may be cut.
    full: the brow tops to the chin by the width of the face oval, 5 % margin; the forehead is left out.
    mid: halfway between half and full (centre and side).
    whole: the face oval with the forehead up to the hairline (0.25 H above the oval's top), 5 % margin.
    head: the whole head with the hair and some neck: from 1.6 H above the chin (the crown) to 0.15 H below it.
    Each square is grown where needed so that each face type contains the one before it.
    """
    brows, eyes = R.LEFT_BROW + R.RIGHT_BROW, R.LEFT_EYE + R.RIGHT_EYE
    inner = t[list(brows + eyes + R.LIPS_OUTER) + [R.NOSE_TIP]]
    oval = t[list(R.FACE_OVAL)]
    brow_top = float(t[list(brows), 1].min())
    chin = float(t[R.CHIN, 1])
    height = chin - float(oval[:, 1].min())
    half_w = float(np.abs(oval[:, 0]).max())

    def square(x0: float, y0: float, x1: float, y1: float, grow: float) -> tuple[float, float, float]:
        return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * grow

    def contain(outer: tuple[float, float, float], inner: tuple[float, float, float]) -> tuple[float, float, float]:
        lo = np.minimum(np.subtract(outer[:2], outer[2] / 2), np.subtract(inner[:2], inner[2] / 2))
        hi = np.maximum(np.add(outer[:2], outer[2] / 2), np.add(inner[:2], inner[2] / 2))
        return square(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]), 1.0)

    lo, hi = inner.min(0), inner.max(0)
    half = square(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]), 1.0)
    half = (half[0], half[1], float(hi[1] - lo[1]) * 1.05)
    full = contain(square(-half_w, brow_top, half_w, chin, 1.05), half)
    mid = (float((half[0] + full[0]) / 2), float((half[1] + full[1]) / 2), float((half[2] + full[2]) / 2))
    whole = contain(square(-half_w, float(oval[:, 1].min()) - 0.25 * height, half_w, chin, 1.05), full)
    head = contain(square(-half_w, chin - 1.6 * height, half_w, chin + 0.15 * height, 1.05), whole)
    return {"half": half, "mid": mid, "full": full, "whole": whole, "head": head}


def write_module(path: Path, template: np.ndarray, perm: np.ndarray,
                 squares: dict[str, tuple[float, float, float]]) -> None:
    lines = [
        '"""Canonical 2-D face template: generated by ``tools/make_template.py`` (do not edit by hand; see there',
        "for how it was derived). Units: the outer eye corners (33, 263) are at (-0.5, 0) and (0.5, 0); y points",
        "down. The mesh topology is MediaPipe's face landmark model (Apache-2.0, Copyright The MediaPipe Authors);",
        'the coordinates are our own measurement of that model\'s output on two public-domain portraits."""',
        "",
        "from __future__ import annotations",
        "",
        "# Landmarks used to fit the alignment: eye corners, brows, nose, mouth corners, cheeks (not jaw, not lips).",
        f"STABLE: tuple[int, ...] = {STABLE!r}",
        "",
        "# Square crop of each face type: (centre x, centre y, side) in template units.",
        "FACE_TYPE_SQUARES: dict[str, tuple[float, float, float]] = {",
    ]
    for name, (cx, cy, side) in squares.items():
        lines.append(f'    "{name}": ({cx:.4f}, {cy:.4f}, {side:.4f}),')
    lines += ["}", "", "# MIRROR[i]: the left/right twin of point i (itself on the midline).",
              "MIRROR: tuple[int, ...] = ("]
    for i in range(0, 468, 20):
        lines.append("    " + " ".join(f"{int(v)}," for v in perm[i:i + 20]))
    lines += [")", "", "# (x, y) of each of the 468 mesh points, frontal and exactly left/right symmetric.",
              "POINTS: tuple[tuple[float, float], ...] = ("]
    for i in range(0, 468, 6):
        lines.append("    " + " ".join(f"({x:.4f}, {y:.4f})," for x, y in template[i:i + 6]))
    lines += [")", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--out", type=Path, default=ROOT / "src/changeling/detect/template.py")
    args = ap.parse_args()
    lm = LiteRTMesh(args.model)
    observations = []  # per portrait: (original mesh, mirrored-image mesh mapped back)
    for image, box in zip(portraits(), START_BOXES, strict=True):
        w = image.shape[1]
        mesh = lm.refine(image, box, iters=6)
        flipped = np.ascontiguousarray(image[:, ::-1])
        fbox = (w - box[2], box[1], w - box[0], box[3])
        fmesh = lm.refine(flipped, fbox, iters=6)
        fmesh[:, 0] = w - fmesh[:, 0]
        observations.append((mesh, fmesh))
    perm = mirror_permutation([m for m, _ in observations])
    meshes = []
    for mesh, fmesh in observations:
        meshes.append(mesh)
        meshes.append(fmesh[perm])  # the mirror-image run, twins swapped back: a second look at the same face
    template = make_template(meshes, perm)
    squares = face_type_squares(template)
    write_module(args.out, template, perm, squares)
    print(f"wrote {args.out}")
    for name, sq in squares.items():
        print(f"  {name}: centre ({sq[0]:.3f}, {sq[1]:.3f}) side {sq[2]:.3f}")


if __name__ == "__main__":
    main()
