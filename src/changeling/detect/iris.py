"""MediaPipe's iris-landmark network (``iris_landmark.tflite``) and how its output maps onto the face mesh.

Input (B, 3, 64, 64) RGB in [0, 1], a crop around one eye; the model was trained on the eye that appears on the
image's left (mesh points 33/133), so the other eye is mirrored before and after. Output: 71 eye-contour and
brow points (B, 71, 3) and 5 iris points (B, 5, 3) — centre first, then the contour — in crop pixels (0..64).
Submodules are registered in the order the weight converter walks the TFLite graph, so do not reorder them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from changeling.detect.layers import Conv, add_shortcut, max_pool2

INPUT_SIZE = 64
NUM_CONTOUR = 71
NUM_IRIS = 5
ROI_SCALE = 2.3  # eye ROI side = 2.3 × distance between the two eye corners

# Mesh points that define each eye's ROI (start -> end of the rotation vector), as MediaPipe picks them.
LEFT_EYE_CORNERS = (33, 133)  # the eye on the image's left in a frontal face; fed to the model unmirrored
RIGHT_EYE_CORNERS = (362, 263)  # mirrored before the model

# Mesh indices that the 71 refined eye-contour points replace, for the unmirrored eye (MediaPipe's
# UpdateFaceLandmarksCalculator table), then for the mirrored one.
CONTOUR_TO_MESH_LEFT = np.array([
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
    130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
    226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
    35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
    156, 70, 63, 105, 66, 107, 55, 193,
])
CONTOUR_TO_MESH_RIGHT = np.array([
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
    359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
    446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
    265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
    383, 300, 293, 334, 296, 336, 285, 417,
])


class IrisOutput(NamedTuple):
    contour: torch.Tensor  # (B, 71, 3) float32, crop pixels
    iris: torch.Tensor  # (B, 5, 3) float32, crop pixels


class _Bottleneck(nn.Module):
    """1×1 (or 2×2 /2) conv to half width + PReLU, dw 3×3, 1×1 back; add the (pooled) input; PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        mid = cout // 2
        self.stride, self.cout = stride, cout
        self.reduce = Conv(cin, mid, 2, 2, padding="valid") if stride == 2 else Conv(cin, mid, 1)
        self.reduce_act = nn.PReLU(mid)
        self.dw = Conv(mid, mid, 3, depthwise=True)
        self.expand = Conv(mid, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.dw(self.reduce_act(self.reduce(x))))
        shortcut = max_pool2(x) if self.stride == 2 else x
        return self.act(add_shortcut(y, shortcut))


def _branch(out_values: int) -> nn.Sequential:
    """Per-output tail: 8×8 -> 4×4 -> 2×2 bottlenecks, then a 2×2 'valid' conv to one vector."""
    blocks = [_Bottleneck(128, 128), _Bottleneck(128, 128)]
    for _ in range(2):
        blocks += [_Bottleneck(128, 128, 2), _Bottleneck(128, 128), _Bottleneck(128, 128)]
    return nn.Sequential(*blocks, Conv(128, out_values, 2, padding="valid"))


class IrisNet(nn.Module):
    """Eye contour + iris regressor for one (left-looking) eye crop."""

    input_size = INPUT_SIZE

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [Conv(3, 64, 3, 2), nn.PReLU(64)]
        layers += [_Bottleneck(64, 64) for _ in range(4)]
        layers += [_Bottleneck(64, 128, 2)] + [_Bottleneck(128, 128) for _ in range(4)]
        layers += [_Bottleneck(128, 128, 2)]
        self.backbone = nn.Sequential(*layers)  # -> (B, 128, 8, 8)
        self.contour = _branch(NUM_CONTOUR * 3)
        self.iris = _branch(NUM_IRIS * 3)

    def forward(self, x: torch.Tensor) -> IrisOutput:
        features = self.backbone(x)
        b = x.shape[0]
        return IrisOutput(self.contour(features).reshape(b, NUM_CONTOUR, 3),
                          self.iris(features).reshape(b, NUM_IRIS, 3))
