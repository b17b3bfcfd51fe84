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

import numpy as np
from litert_mesh import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, LiteRTMesh
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "changeling" / "assets" / "portraits"
MODEL = ROOT / "tests" / "data" / "mediapipe" / "face_landmark.tflite"

# file name, rough face box (x0, y0, x1, y1) in the portrait to start the refinement from
PORTRAITS = {"astronaut": ("astronaut.png", (175, 60, 275, 180)),
             "grace_hopper": ("grace_hopper.jpg", (155, 130, 365, 340))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL, help="face_landmark.tflite of mediapipe 0.10.21")
    parser.add_argument("--out", type=Path, default=ASSETS / "landmarks.json")
    args = parser.parse_args()
    landmarker = LiteRTMesh(args.model)
    doc: dict[str, object] = {
        "about": "468 face-mesh landmarks per portrait: x, y in portrait pixels, z relative depth scaled like x "
                 "(smaller is nearer). Made by tools/make_portrait_landmarks.py with MediaPipe's face_landmark "
                 "model (mediapipe 0.10.21, Apache-2.0) through LiteRT.",
        "portraits": {},
    }
    for name, (fname, box) in PORTRAITS.items():
        with Image.open(ASSETS / fname) as img:
            image = np.asarray(img.convert("RGB"))
        points = landmarker.refine(image, box, iters=8)
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
