"""Face files for tests and benchmarks, cut from the two public-domain portraits that ship inside
scikit-image (astronaut, side A) and matplotlib (Grace Hopper, side B), with small random variations.

They follow the face file contract (``changeling.faces.facefile``) with synthetic landmarks (478 points on the
face outline) and elliptical mask polygons; real faces come from ``changeling extract``.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from changeling.faces.facefile import FaceMeta, write_face
from changeling.types import Frame

# (centre x, centre y, side) of a loose face crop in each portrait, in its pixels
_CROPS = {"A": (225.0, 118.0, 170.0), "B": (262.0, 236.0, 250.0)}
# mask ellipses in crop units: centre x, centre y, radius x, radius y
_HULL = (0.5, 0.53, 0.34, 0.43)
_EYES = ((0.36, 0.43, 0.08, 0.04), (0.64, 0.43, 0.08, 0.04))
_MOUTH = (0.5, 0.73, 0.13, 0.05)


def portrait(side: str) -> Frame:
    """The source portrait of a test side: (H, W, 3) uint8 RGB."""
    if side == "A":
        from skimage import data

        return np.ascontiguousarray(data.astronaut())
    if side == "B":
        from matplotlib import cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
            return np.ascontiguousarray(np.asarray(img.convert("RGB")))
    raise ValueError(f"side must be 'A' or 'B', got {side!r}")


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24, scale: float = 1.0) -> list[list[float]]:
    """A closed polygon of ``n`` points on an ellipse, times ``scale``."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return [[float((cx + rx * math.cos(a)) * scale), float((cy + ry * math.sin(a)) * scale)] for a in t]


def make_faces(folder: Path, side: str, n: int, *, size: int = 64, face_type: str = "whole", seed: int = 0,
               variation: float = 1.0) -> list[Path]:
    """Write ``n`` face PNGs of ``side`` into ``folder``; ``variation`` scales the random pose/light changes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = portrait(side)
    cx, cy, crop = _CROPS[side]
    rng = np.random.default_rng(seed * 2 + (side == "B"))
    paths = []
    for i in range(n):
        angle = math.radians(rng.uniform(-6, 6) * variation)
        scale = size / crop * (1 + rng.uniform(-0.05, 0.05) * variation)
        dx, dy = rng.uniform(-0.04, 0.04, 2) * crop * variation
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        # frame -> crop: rotate and scale about the (shifted) face centre, which lands at the crop centre
        px, py = cx + dx, cy + dy
        affine = np.array([[cos, sin, size / 2 - (cos * px + sin * py)],
                           [-sin, cos, size / 2 - (-sin * px + cos * py)]])
        face = cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        gain = 1 + rng.uniform(-0.06, 0.06) * variation
        face = np.clip(face.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        inv = cv2.invertAffineTransform(affine)
        outline = np.array(ellipse(*_HULL, n=478, scale=size))
        landmarks = np.concatenate([outline @ inv[:, :2].T + inv[:, 2], np.zeros((478, 1))], 1)
        x0, y0 = landmarks[:, :2].min(0)
        x1, y1 = landmarks[:, :2].max(0)
        meta = FaceMeta(source=f"{side}.png", frame_index=i, face_index=0, size=size, face_type=face_type,
                        affine=affine.tolist(), landmarks=landmarks.tolist(), box=[x0, y0, x1, y1], score=1.0,
                        masks={"hull": ellipse(*_HULL, scale=size),
                               "extended": ellipse(_HULL[0], _HULL[1] - 0.05, _HULL[2], _HULL[3] + 0.05, scale=size),
                               "left_eye": ellipse(*_EYES[0], n=12, scale=size),
                               "right_eye": ellipse(*_EYES[1], n=12, scale=size),
                               "mouth": ellipse(*_MOUTH, n=16, scale=size)},
                        side=side)
        path = folder / f"{side.lower()}_{i:05d}.png"
        write_face(path, face, meta)
        paths.append(path)
    return paths
