"""A portrait rigged for animation: its landmarks plus control points around the head and on the canvas border,
one triangulation, and the geometry that turns motion parameters into moved points.

Expressions displace landmark groups in the face's own axes (u along the eye line, v towards the chin),
measured in inter-ocular distances (IOD) so the same parameter means the same expression on every face; the
head then turns in 3-D about a pivot behind the face, and the camera moves the whole picture. Control points
around the face carry the head motion into the hair and neck with a falloff, and the canvas border stays put
relative to the camera, so the background moves only with the camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.masks import regions as R
from changeling.synth.portraits import MESH_POINTS, Portrait
from changeling.synth.warp import triangulate
from changeling.types import Frame

IOD_FRACTION = 0.22  # inter-ocular distance as a fraction of the output's shorter side
RING_SCALES = (1.35, 2.0, 2.8)  # control rings: face oval scaled about the face centre
RING_FOLLOW = (1.0, 0.3, 0.0)  # how much of the head's motion each ring follows (beyond the last: none)
JAW_OPEN_RAD = 0.22  # jaw rotation at mouth_open = 1: the lower lip drops by about 0.3 IOD
_BORDER_STEPS = 5  # control points per canvas edge

# Eye contours from masks.regions: [0] outer corner, [1:8] lower lid outer->inner, [8] inner corner,
# [9:16] upper lid inner->outer; upper[9 + j] closes onto lower[7 - j].
_LID_PAIRS = [(9 + j, 7 - j) for j in range(7)]
_LOWER_LIPS = R.LIPS_OUTER[1:10] + R.LIPS_INNER[1:10]
_UPPER_LIPS = R.LIPS_OUTER[11:20] + R.LIPS_INNER[11:20]
_LIP_CORNERS = (R.MOUTH_RIGHT, R.MOUTH_LEFT, R.LIPS_INNER[0], R.LIPS_INNER[10])


def _rotation(yaw: float, pitch: float, roll: float) -> NDArray[np.float64]:
    """R = Rz(roll) Rx(pitch) Ry(yaw) in image axes (x right, y down, z away from the camera)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])  # yaw > 0: the nose (nearer) moves to +x
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # pitch > 0: the nose moves down, chin down
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])  # roll > 0: clockwise on screen
    return rz @ rx @ ry


def _gaussian(points: NDArray[np.float64], centre: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    return np.exp(-0.5 * np.sum((points - centre) ** 2, axis=-1) / sigma**2)


@dataclass(frozen=True)
class Rig:
    """One portrait prepared for one output size. Coordinates are canvas pixels unless said otherwise."""

    name: str
    size: tuple[int, int]  # output (W, H)
    canvas: Frame = field(repr=False)  # the portrait scaled to the output's face size, padded with background
    points: NDArray[np.float64] = field(repr=False)  # (N, 3) rest control points: 468 landmarks, rings, border
    follow: NDArray[np.float64] = field(repr=False)  # (N,) share of the head's motion each point follows
    triangles: NDArray[np.int32] = field(repr=False)  # (M, 3)
    centre: NDArray[np.float64] = field(repr=False)  # (2,) face centre, shown at the output's centre
    pivot: NDArray[np.float64] = field(repr=False)  # (3,) the head turns about this point
    u: NDArray[np.float64] = field(repr=False)  # (2,) unit vector along the eye line (image left to right)
    v: NDArray[np.float64] = field(repr=False)  # (2,) unit vector towards the chin
    hinge: NDArray[np.float64] = field(repr=False)  # (3,) a point on the jaw's axis (which runs along u)
    iod: float = 0.0  # inter-ocular distance, canvas pixels

    @property
    def landmarks(self) -> NDArray[np.float64]:
        return self.points[:MESH_POINTS]


def _pad_canvas(image: Frame, pads: tuple[int, int, int, int]) -> Frame:
    """Extend the picture beyond its edges: the border mirrored, then melted into a heavy blur of itself with
    distance, so a camera that looks past the photo sees a soft continuation of its background."""
    top, bottom, left, right = pads
    if not any(pads):
        return image
    big = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    h, w = image.shape[:2]
    sigma = 0.08 * max(h, w)
    blurred = cv2.GaussianBlur(big, (0, 0), sigma)
    yy, xx = np.mgrid[0:big.shape[0], 0:big.shape[1]].astype(np.float32)
    outside = np.maximum.reduce([top - yy, yy - (top + h - 1), left - xx, xx - (left + w - 1), np.zeros_like(xx)])
    weight = np.clip(outside / (0.12 * max(h, w)), 0, 1)[..., None]
    return (big * (1 - weight) + blurred * weight + 0.5).astype(np.uint8)


def make_rig(portrait: Portrait, size: tuple[int, int]) -> Rig:
    """Scale the portrait so its face fills the output's framing, pad it for the camera's travel, and build the
    control points and their triangulation."""
    w, h = size
    if w < 32 or h < 32:
        raise ValueError(f"output size must be at least 32x32, got {w}x{h}")
    lm = portrait.landmarks
    iod0 = float(np.linalg.norm(lm[R.LEFT_EYE_OUTER, :2] - lm[R.RIGHT_EYE_OUTER, :2]))
    scale = IOD_FRACTION * min(w, h) / iod0
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    ph, pw = portrait.image.shape[:2]
    image = np.asarray(cv2.resize(portrait.image, (max(1, round(pw * scale)), max(1, round(ph * scale))),
                                  interpolation=interp), dtype=np.uint8)
    sx, sy = image.shape[1] / pw, image.shape[0] / ph
    points = lm * np.array([sx, sy, scale])
    centre = 0.5 * (points[:, :2].min(0) + points[:, :2].max(0))
    # The camera zooms out to 0.94 and pans 4%: cover the frame's half-diagonal / 0.85 around the face.
    reach = 0.5 * np.hypot(w, h) / 0.85
    pads = (max(0, int(np.ceil(reach - centre[1]))), max(0, int(np.ceil(centre[1] + reach - image.shape[0]))),
            max(0, int(np.ceil(reach - centre[0]))), max(0, int(np.ceil(centre[0] + reach - image.shape[1]))))
    canvas = _pad_canvas(image, pads)
    points[:, :2] += [pads[2], pads[0]]
    centre = centre + [pads[2], pads[0]]

    u = points[R.LEFT_EYE_OUTER, :2] - points[R.RIGHT_EYE_OUTER, :2]
    iod = float(np.linalg.norm(u))
    u /= iod
    v = np.array([-u[1], u[0]])
    eyes = 0.5 * (points[R.LEFT_EYE_OUTER] + points[R.RIGHT_EYE_OUTER])
    pivot = np.array([centre[0], eyes[1] + 0.4 * iod, points[R.NOSE_TIP, 2] + 1.5 * iod])
    mouth = 0.5 * (points[13] + points[14])
    hinge = np.array([*(eyes[:2] + 0.45 * (mouth[:2] - eyes[:2])), points[R.NOSE_TIP, 2] + 1.3 * iod])

    oval = points[list(R.FACE_OVAL)]
    rings, follow = [], []
    for k, f in zip(RING_SCALES, RING_FOLLOW, strict=True):
        ring = oval.copy()
        ring[:, :2] = centre + k * (oval[:, :2] - centre)
        ring[:, 2] = oval[:, 2]  # the ring moves like the face's edge: no fold between them
        rings.append(ring)
        follow.append(np.full(len(ring), f))
    ch, cw = canvas.shape[:2]
    t = np.linspace(0, 1, _BORDER_STEPS, endpoint=False)
    edge = np.concatenate([np.stack([t * (cw - 1), 0 * t], 1), np.stack([0 * t + cw - 1, t * (ch - 1)], 1),
                           np.stack([(1 - t) * (cw - 1), 0 * t + ch - 1], 1), np.stack([0 * t, (1 - t) * (ch - 1)], 1)])
    border = np.concatenate([edge, np.full((len(edge), 1), pivot[2] + 10 * iod)], axis=1)
    all_points = np.concatenate([points, *rings, border])
    all_follow = np.concatenate([np.ones(MESH_POINTS), *follow, np.zeros(len(border))])
    return Rig(name=portrait.name, size=(w, h), canvas=canvas, points=all_points, follow=all_follow,
               triangles=triangulate(all_points[:, :2]), centre=centre, pivot=pivot, u=u, v=v, hinge=hinge,
               iod=iod)


def expression_offsets(rig: Rig, mouth_open: float, smile: float, blink_left: float, blink_right: float,
                       brow_raise: float) -> NDArray[np.float64]:
    """(468, 2) image-plane displacement of each landmark for an expression, in canvas pixels."""
    p = rig.landmarks[:, :2]
    d, u, v = rig.iod, rig.u, rig.v
    out = np.zeros_like(p)
    # Mouth: the jaw turns down about a hinge behind the face at the ears' height (so the chin drops most and
    # the jaw's sides near the hinge hardly move); the upper lip lifts a little. Points below the mouth line
    # go with the jaw, over a band that widens towards the cheeks so the skin there stretches smoothly.
    mouth = 0.5 * (p[13] + p[14])
    half = 0.5 * float(np.linalg.norm(p[R.MOUTH_LEFT] - p[R.MOUTH_RIGHT]))
    pu, pv = (p - mouth) @ u, (p - mouth) @ v
    band = 0.08 * d + 0.5 * np.maximum(np.abs(pu) - half, 0.0)
    jaw = np.clip((pv + 0.02 * d) / band, 0, 1)
    jaw[list(_LOWER_LIPS)], jaw[list(_UPPER_LIPS)], jaw[list(_LIP_CORNERS)] = 1.0, 0.0, 0.4
    if mouth_open > 0:
        theta = mouth_open * JAW_OPEN_RAD
        z = rig.landmarks[:, 2]
        hinge_v = float((rig.hinge[:2] - mouth) @ v)  # the hinge's height relative to the mouth (negative: above)
        rel_v, rel_z = pv - hinge_v, z - rig.hinge[2]
        # rotate (v, z) about the hinge by theta: the front of the face (z < hinge) goes down
        new_v = rel_v * np.cos(theta) - rel_z * np.sin(theta)
        out += (jaw * (new_v - rel_v))[:, None] * v
        lift = 0.3 * np.clip(1 + pv / (0.35 * d), 0, 1) * (pv < 0) * np.clip(1.5 - np.abs(pu) / half, 0, 1)
        lift[list(_UPPER_LIPS)] = np.clip(1.5 - np.abs(pu[list(_UPPER_LIPS)]) / half, 0, 1)
        out -= (mouth_open * 0.06 * d * lift)[:, None] * v
    # Smile: the corners go out and up, dragging the cheeks.
    for corner in (R.MOUTH_RIGHT, R.MOUTH_LEFT):
        outward = np.sign((p[corner] - mouth) @ u) * u
        out += smile * d * _gaussian(p, p[corner], 0.28 * d)[:, None] * (0.10 * outward - 0.07 * v)
    # Blinks: the upper lid closes onto the lower one; the skin above follows with distance.
    for contour, amount in ((R.RIGHT_EYE, blink_right), (R.LEFT_EYE, blink_left)):
        if amount <= 0:
            continue
        idx = np.array(contour)
        ups = np.array([contour[a] for a, _ in _LID_PAIRS])
        downs = np.array([contour[b] for _, b in _LID_PAIRS])
        delta = amount * 0.85 * (p[downs] - p[ups])  # (7, 2)
        centre = p[idx].mean(0)
        k = np.stack([_gaussian(p, p[j], 0.12 * d) for j in ups], axis=1)  # (468, 7)
        share = (k @ delta) / (k.sum(1, keepdims=True) + 1e-9) * k.max(1, keepdims=True)
        share[(p - centre) @ v > 0] = 0.0  # nothing below the eye's middle line moves
        share[idx] = 0.0
        share[ups] = delta
        out += share
    # Brows: up (and a frown: down and towards the nose); the forehead follows, the eyes do not.
    brows = np.array(R.LEFT_BROW + R.RIGHT_BROW)
    bridge = p[R.NOSE_BRIDGE]
    inward = np.where(((p[brows] - bridge) @ u)[:, None] > 0, -u, u)
    brow_delta = d * (-0.12 * max(brow_raise, 0.0) * v + min(brow_raise, 0.0) * (-0.06 * v - 0.04 * inward))
    k = np.stack([_gaussian(p, p[j], 0.22 * d) for j in brows], axis=1)  # (468, 20)
    spread = (k @ brow_delta) / (k.sum(1, keepdims=True) + 1e-9) * k.max(1, keepdims=True)
    eyes_line = 0.5 * (p[R.LEFT_EYE_OUTER] + p[R.RIGHT_EYE_OUTER])
    spread[(p - eyes_line) @ v > -0.1 * d] = 0.0
    spread[brows] = brow_delta
    out += spread
    return out


@dataclass(frozen=True)
class Posed:
    """Control points of one frame in output pixels."""

    points: NDArray[np.float64]  # (N, 2)
    depth: NDArray[np.float64]  # (N,) larger is farther from the camera
    landmarks: NDArray[np.float32]  # (468, 3) x, y output pixels; z depth scaled like x
    to_canvas: NDArray[np.float64]  # (2, 3) output -> canvas for points that follow no head motion


def pose(rig: Rig, params: dict[str, float]) -> Posed:
    """Move the rig's points for one frame's motion parameters (see :data:`changeling.synth.motion.PARAMS`)."""
    offsets = expression_offsets(rig, params["mouth_open"], params["smile"], params["blink_left"],
                                 params["blink_right"], params["brow_raise"])
    pts = rig.points.copy()
    pts[:MESH_POINTS, :2] += offsets
    rot = _rotation(params["yaw"], params["pitch"], params["roll"])
    turned = (pts - rig.pivot) @ rot.T + rig.pivot
    pts = pts + rig.follow[:, None] * (turned - pts)
    # camera: a similarity about the output's centre, after placing the face centre there
    w, h = rig.size
    zoom, angle = params["cam_zoom"], params["cam_roll"]
    c, s = np.cos(angle) * zoom, np.sin(angle) * zoom
    lin = np.array([[c, -s], [s, c]])
    shift = np.array([w / 2 + params["cam_x"] * w, h / 2 + params["cam_y"] * h])
    xy = (pts[:, :2] - rig.centre) @ lin.T + shift
    cam = np.concatenate([lin, (shift - lin @ rig.centre)[:, None]], axis=1)  # canvas -> output
    landmarks = np.concatenate([xy[:MESH_POINTS], zoom * (pts[:MESH_POINTS, 2:] - rig.pivot[2])], axis=1)
    return Posed(points=xy, depth=pts[:, 2], landmarks=landmarks.astype(np.float32),
                 to_canvas=np.asarray(cv2.invertAffineTransform(cam), dtype=np.float64))
