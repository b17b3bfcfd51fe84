"""Compute the bundled portraits' face-mesh landmarks: ``src/changeling/assets/portraits/landmarks.json``.

Run from the repository root: ``python tools/make_portrait_landmarks.py`` (needs the test extra for LiteRT).
The sample-clip generator (``changeling.synth``) reads the JSON, so the package needs neither LiteRT nor the
model file at run time. The output is deterministic: rerunning it reproduces the file.

How: MediaPipe's face landmark model (the original ``face_landmark.tflite`` of the mediapipe 0.10.21 wheel,
kept in tests/data/mediapipe) sees a 192x192 RGB crop in [0, 1] and returns 468 points (x, y, z) in crop
pixels. The crop is a square around the face, rotated so the eyes are level; starting from a rough face box it
is refined the way MediaPipe tracks a face (the landmarks' bounding box, scaled 1.5, squared, rotated by the
eye line) until it settles. Points are mapped back to portrait pixels; z is scaled like x (pixels, smaller is
nearer the camera).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "changeling" / "assets" / "portraits"
MODEL = ROOT / "tests" / "data" / "mediapipe" / "face_landmark.tflite"
INPUT = 192
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263

# file name, rough face box (x0, y0, x1, y1) in the portrait to start the refinement from
PORTRAITS = {"astronaut": ("astronaut.png", (175, 60, 275, 180)),
             "grace_hopper": ("grace_hopper.jpg", (155, 130, 365, 340))}


class Landmarker:
    """The original model through LiteRT, on a rotated square crop."""

    def __init__(self, model: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(model))
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]["index"]
        self.output = next(o["index"] for o in self.interp.get_output_details() if int(np.prod(o["shape"])) == 1404)

    def run(self, image: np.ndarray, cx: float, cy: float, side: float, angle: float) -> np.ndarray:
        """(468, 3) points in image pixels for the square crop of side ``side`` centred at (cx, cy)."""
        k = INPUT / side
        c, s = np.cos(angle) * k, np.sin(angle) * k
        a = np.array([[c, s, 0.0], [-s, c, 0.0]])
        a[:, 2] = INPUT / 2 - a[:, :2] @ [cx, cy]
        crop = cv2.warpAffine(image, a, (INPUT, INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        self.interp.set_tensor(self.input, (crop.astype(np.float32) / 255.0)[None])
        self.interp.invoke()
        out = self.interp.get_tensor(self.output).reshape(468, 3).astype(np.float64)
        inv = cv2.invertAffineTransform(a)
        xy = out[:, :2] @ inv[:, :2].T + inv[:, 2]
        return np.concatenate([xy, out[:, 2:] / k], axis=1)

    def refine(self, image: np.ndarray, box: tuple[float, float, float, float], iters: int = 8) -> np.ndarray:
        x0, y0, x1, y1 = box
        cx, cy, side, angle = (x0 + x1) / 2, (y0 + y1) / 2, 1.5 * max(x1 - x0, y1 - y0), 0.0
        points = np.zeros((468, 3))
        for _ in range(iters):
            points = self.run(image, cx, cy, side, angle)
            d = points[LEFT_EYE_OUTER, :2] - points[RIGHT_EYE_OUTER, :2]
            angle = float(np.arctan2(d[1], d[0]))
            lo, hi = points[:, :2].min(0), points[:, :2].max(0)
            cx, cy = (lo + hi) / 2
            side = 1.5 * float(max(hi - lo))
        return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL, help="face_landmark.tflite of mediapipe 0.10.21")
    parser.add_argument("--out", type=Path, default=ASSETS / "landmarks.json")
    args = parser.parse_args()
    landmarker = Landmarker(args.model)
    doc: dict[str, object] = {
        "about": "468 face-mesh landmarks per portrait: x, y in portrait pixels, z relative depth scaled like x "
                 "(smaller is nearer). Made by tools/make_portrait_landmarks.py with MediaPipe's face_landmark "
                 "model (mediapipe 0.10.21, Apache-2.0) through LiteRT.",
        "portraits": {},
    }
    for name, (fname, box) in PORTRAITS.items():
        with Image.open(ASSETS / fname) as img:
            image = np.asarray(img.convert("RGB"))
        points = landmarker.refine(image, box)
        doc["portraits"][name] = {  # type: ignore[index]
            "file": fname,
            "width": image.shape[1],
            "height": image.shape[0],
            "landmarks": np.round(points, 2).tolist(),
        }
        iod = float(np.linalg.norm(points[LEFT_EYE_OUTER, :2] - points[RIGHT_EYE_OUTER, :2]))
        print(f"{name}: inter-ocular distance {iod:.1f} px")
    args.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
