"""Named regions of the 468/478-point face mesh, as ordered landmark indices (data only).

The mesh topology (which index is which point of the face) is that of Google's MediaPipe face landmark model,
Apache License 2.0, Copyright 2021 The MediaPipe Authors. The index sets below were derived from the edge lists
in ``mediapipe/python/solutions/face_mesh_connections.py`` (mediapipe 0.10.21) by walking each closed contour
into one ordered polygon; brows are closed by joining their lower and upper edges.

"Left" and "right" are the subject's own, as in MediaPipe: the subject's left eye is on the image's right
side in an unmirrored frontal view.
"""

from __future__ import annotations

MESH_POINTS = 468  # the face landmark model's points; the iris model adds 10 more (468-477)

# Closed contours, each an ordered polygon.
FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
LEFT_EYE: tuple[int, ...] = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE: tuple[int, ...] = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_BROW: tuple[int, ...] = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
RIGHT_BROW: tuple[int, ...] = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
LIPS_OUTER: tuple[int, ...] = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
)
LIPS_INNER: tuple[int, ...] = (
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
)
LEFT_IRIS: tuple[int, ...] = (474, 475, 476, 477)  # only with the iris model (478 points)
RIGHT_IRIS: tuple[int, ...] = (469, 470, 471, 472)

# Single points used by geometry code.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133
LEFT_EYE_OUTER, LEFT_EYE_INNER = 263, 362
NOSE_TIP = 1
NOSE_BRIDGE = 168  # between the eyes
CHIN = 152
FOREHEAD = 10  # top of the face oval
MOUTH_RIGHT, MOUTH_LEFT = 61, 291

# Points of the upper face oval (temples and forehead) that the extended mask pushes up over the forehead.
FOREHEAD_OVAL: tuple[int, ...] = (
    162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389,
)
