"""MediaPipe's original face landmark model through LiteRT, for the tools that derive data from it
(``make_template.py``, ``make_portrait_landmarks.py``). Development only: needs the test extra."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

INPUT = 192  # the model sees a 192x192 RGB crop in [0, 1]
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


class LiteRTMesh:
    """The original model on a rotated square crop; points come back in image pixels."""

    def __init__(self, model: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(model))
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]["index"]
        self.output = next(o["index"] for o in self.interp.get_output_details() if int(np.prod(o["shape"])) == 1404)

    def run(self, image: np.ndarray, cx: float, cy: float, side: float, angle: float) -> np.ndarray:
        """(468, 3) points in image pixels (z scaled like x) for the square crop of side ``side`` centred at
        (cx, cy) and turned by ``angle`` radians."""
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

    def refine(self, image: np.ndarray, box: tuple[float, float, float, float], iters: int) -> np.ndarray:
        """Track the face as MediaPipe does from a rough box: the landmarks' bounding box, scaled 1.5, squared,
        rotated by the eye line, ``iters`` times. (468, 3) points in image pixels."""
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
