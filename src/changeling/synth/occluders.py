"""Seeded occluders that pass in front of a face, with their exact masks: skin-coloured hands, a microphone-like
bar, textured patches (crops of the public-domain images in ``assets/textures``) and glasses frames.

An occluder is a :class:`Sprite` (colour and coverage, drawn in units where the face's inter-ocular distance is
``UNIT`` pixels) and a :class:`OccluderPass` says when and where it crosses the face: its placement in a frame is
a similarity transform computed from that frame's landmarks, so the same pass placed with A's landmarks can be
composited into B's frame under the same motion (the paired benchmark's truth).

Seeds from ``HELD_OUT_SEED_BASE`` up and the kinds in ``HELD_OUT_KINDS`` are for evaluation only: the occlusion
segmenter's training pastes draw seeds below the base, only ``TRAINING_KINDS``, and only the training textures.

    from changeling.synth.occluders import occluder_schedule, occlude
    passes = occluder_schedule(seed=HELD_OUT_SEED_BASE + 1, duration=4.0, kinds=KINDS)
    image, covered = occlude(frame.image, frame.landmarks, frame.time, passes)  # covered: (H, W) float32
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from changeling.masks import regions as R
from changeling.types import Affine, Frame, Mask

OccluderKind = Literal["hand", "bar", "texture", "glasses"]
KINDS: tuple[OccluderKind, ...] = ("hand", "bar", "texture", "glasses")
TRAINING_KINDS: tuple[OccluderKind, ...] = ("hand", "bar", "texture")
HELD_OUT_KINDS: tuple[OccluderKind, ...] = ("glasses",)
HELD_OUT_SEED_BASE = 1_000_000  # seeds from here up never appear in training
TRAINING_TEXTURES = ("brick", "grass", "coffee", "chelsea")
HELD_OUT_TEXTURES = ("gravel", "rocket")
GREY_TEXTURES = ("brick", "grass", "gravel")
UNIT = 100.0  # sprites are drawn where the inter-ocular distance (outer eye corners) is this many pixels
_SS = 2  # supersampling of sprite drawing: antialiased edges

# Skin tones (RGB) from light to dark; a hand takes one and jitters it.
SKIN_TONES = np.array([[255, 219, 190], [236, 188, 150], [224, 172, 138], [198, 134, 99], [160, 105, 72],
                       [120, 76, 50], [92, 58, 40]], np.float32)


@dataclass(frozen=True)
class Sprite:
    """An occluder in its own pixels: ``image`` (h, w, 3) uint8 RGB and ``alpha`` (h, w) float32 in [0, 1]
    (its exact coverage; 1 is opaque). ``centre`` (x, y) is the point that the placement puts on its path."""

    kind: str
    image: Frame = field(repr=False)
    alpha: Mask = field(repr=False)
    centre: tuple[float, float]
    source: str = ""  # the bundled texture it shows, if any


def is_held_out(seed: int) -> bool:
    """Whether a seed is reserved for evaluation (training never draws it)."""
    return seed >= HELD_OUT_SEED_BASE


@lru_cache(maxsize=16)
def load_texture(name: str) -> Frame:
    """A bundled texture crop (128, 128, 3) uint8 RGB (grey ones as three equal channels)."""
    if name not in TRAINING_TEXTURES + HELD_OUT_TEXTURES:
        raise ValueError(f"unknown texture {name!r}")
    with (resources.files("changeling") / "assets" / "textures" / f"{name}.png").open("rb") as fh, \
            Image.open(fh) as img:
        out = np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    out.setflags(write=False)
    return out


def textured(name: str, rng: np.random.Generator, size: tuple[int, int]) -> Frame:
    """(h, w, 3) uint8: the texture ``name`` tiled (mirrored) over ``size`` (w, h), grey ones tinted."""
    tex = load_texture(name).astype(np.float32)
    if name in GREY_TEXTURES:
        tint = rng.uniform(0.45, 1.15, 3).astype(np.float32)
        tex = tex * tint
    w, h = size
    reps = (int(np.ceil(h / tex.shape[0])) + 1, int(np.ceil(w / tex.shape[1])) + 1)
    tiles = _mirror_tile(tex, reps)
    y0 = int(rng.integers(0, tex.shape[0]))
    x0 = int(rng.integers(0, tex.shape[1]))
    return np.clip(tiles[y0:y0 + h, x0:x0 + w] + 0.5, 0, 255).astype(np.uint8)


def _mirror_tile(tex: NDArray[np.float32], reps: tuple[int, int]) -> NDArray[np.float32]:
    """Tile a texture with every other copy mirrored, so the seams do not show as edges."""
    row = np.concatenate([tex if j % 2 == 0 else tex[:, ::-1] for j in range(reps[1])], axis=1)
    return np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps[0])], axis=0)


def _canvas(w: int, h: int) -> NDArray[np.uint8]:
    return np.zeros((h * _SS, w * _SS), np.uint8)


def _down(mask: NDArray[np.uint8]) -> Mask:
    """Supersampled 0/255 drawing -> (h, w) float32 coverage."""
    h, w = mask.shape[0] // _SS, mask.shape[1] // _SS
    return np.asarray(cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA), np.float32) / 255.0


def _capsule(mask: NDArray[np.uint8], a: NDArray[np.float64], b: NDArray[np.float64], width: float,
             value: int = 255) -> None:
    """A stroke with round ends from a to b (sprite pixels), drawn supersampled."""
    p, q = tuple(int(round(v * _SS)) for v in a), tuple(int(round(v * _SS)) for v in b)
    cv2.line(mask, p, q, value, max(1, int(round(width * _SS))), lineType=cv2.LINE_8)
    for c in (p, q):
        cv2.circle(mask, c, max(1, int(round(width * _SS / 2))), value, -1, lineType=cv2.LINE_8)


def _shade(base: NDArray[np.float32], h: int, w: int, rng: np.random.Generator, strength: float = 0.25
           ) -> NDArray[np.float32]:
    """(h, w, 3) colour with a soft light gradient and a little grain."""
    ang = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    along = ((xs - w / 2) * np.cos(ang) + (ys - h / 2) * np.sin(ang)) / max(h, w)
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.5) * 4.0
    return base[None, None, :] * (1 + strength * along)[..., None] + grain[..., None]


def hand_sprite(seed: int) -> Sprite:
    """An open hand (palm and five fingers), skin-coloured, fingers up; about 2 x 2.6 inter-ocular distances."""
    rng = np.random.default_rng(seed)
    w, h = 230, 280
    m = _canvas(w, h)
    palm_c = np.array([115.0, 190.0])
    axes = (rng.uniform(55, 66), rng.uniform(62, 74))
    cv2.ellipse(m, (int(palm_c[0] * _SS), int(palm_c[1] * _SS)), (int(axes[0] * _SS), int(axes[1] * _SS)),
                rng.uniform(-8, 8), 0, 360, 255, -1)
    edges = _canvas(w, h)
    width = rng.uniform(20, 25)
    lengths = np.array([80, 100, 105, 88]) * rng.uniform(0.85, 1.1)
    spread = rng.uniform(0.03, 0.12)
    for k, x in enumerate(np.linspace(palm_c[0] - 42, palm_c[0] + 42, 4)):
        ang = (k - 1.5) * spread + rng.normal(0, 0.03)
        base = np.array([x, palm_c[1] - axes[1] * 0.55])
        tip = base + lengths[k] * np.array([np.sin(ang), -np.cos(ang)])
        _capsule(m, base, tip, width)
        _capsule(edges, base, tip, width + 1.5)
    side = 1 if rng.random() < 0.5 else -1
    t_base = palm_c + np.array([side * axes[0] * 0.75, -5.0])
    t_ang = side * rng.uniform(0.7, 1.1)
    thumb = t_base + rng.uniform(60, 75) * np.array([np.sin(t_ang), -np.cos(t_ang)])
    _capsule(m, t_base, thumb, width + 3)
    alpha = _down(m)
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.08, 3).astype(np.float32)
    colour = _shade(tone, h, w, rng)
    # darker creases where the fingers meet each other
    crease = _down(np.asarray(cv2.subtract(edges, cv2.erode(edges, np.ones((5, 5), np.uint8))), np.uint8))
    colour *= (1 - 0.25 * crease)[..., None]
    return Sprite("hand", np.clip(colour + 0.5, 0, 255).astype(np.uint8), alpha, (115.0, 170.0))


def bar_sprite(seed: int) -> Sprite:
    """A microphone: a handle about 3.2 inter-ocular distances long with a meshed ball at its top."""
    rng = np.random.default_rng(seed)
    w, h = 110, 420
    m = _canvas(w, h)
    head_r = rng.uniform(32, 44)
    top = np.array([55.0, head_r + 4])
    handle_w = rng.uniform(18, 28)
    _capsule(m, top + [0, head_r * 0.6], np.array([55.0, h - 16.0]), handle_w)
    cv2.circle(m, (int(top[0] * _SS), int(top[1] * _SS)), int(head_r * _SS), 255, -1)
    alpha = _down(m)
    dark = rng.random() < 0.6
    base = np.array([38, 38, 42], np.float32) if dark else np.array([170, 172, 178], np.float32)
    colour = _shade(base * rng.uniform(0.85, 1.15), h, w, rng, strength=0.5)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # a highlight along the handle and a wire mesh on the head
    colour += (40 * np.exp(-0.5 * ((xs - 55 + handle_w * 0.2) / 3.0) ** 2))[..., None] * (ys > top[1] + head_r)[..., None]
    in_head = (xs - top[0]) ** 2 + (ys - top[1]) ** 2 < head_r**2
    mesh = ((np.mod(xs + ys, 7) < 1.2) | (np.mod(xs - ys, 7) < 1.2)) & in_head
    colour[mesh] = colour[mesh] * 0.55 + 60
    return Sprite("bar", np.clip(colour + 0.5, 0, 255).astype(np.uint8), alpha, (55.0, h / 2))


def blob_alpha(rng: np.random.Generator, w: int, h: int, roughness: float = 0.25) -> Mask:
    """(h, w) coverage of a random smooth closed shape filling most of the box."""
    n = 96
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 6):
        r += roughness / k * rng.standard_normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.45, 1.4) / max(float(np.max(r)), 1e-6)
    pts = np.stack([w / 2 + 0.48 * w * r * np.cos(t), h / 2 + 0.48 * h * r * np.sin(t)], 1)
    m = _canvas(w, h)
    cv2.fillPoly(m, [np.round(pts * _SS).astype(np.int32)], 255, lineType=cv2.LINE_8)
    return _down(m)


def texture_sprite(seed: int) -> Sprite:
    """A patch of a bundled texture in a random blob shape, about 1.3 to 1.9 inter-ocular distances across.
    Held-out seeds draw only the held-out textures."""
    rng = np.random.default_rng(seed)
    names = HELD_OUT_TEXTURES if is_held_out(seed) else TRAINING_TEXTURES
    name = names[int(rng.integers(len(names)))]
    w, h = int(rng.uniform(130, 190)), int(rng.uniform(130, 190))
    alpha = blob_alpha(rng, w, h)
    return Sprite("texture", textured(name, rng, (w, h)), alpha, (w / 2, h / 2), source=name)


def glasses_sprite(seed: int) -> Sprite:
    """Glasses seen from the front: two rims, a bridge and the temples; dark lenses in about a third of them.
    Drawn so the rims' centres sit on the eyes when ``centre`` is put between the eyes."""
    rng = np.random.default_rng(seed)
    w, h = 260, 110
    m = _canvas(w, h)
    cx, cy = w / 2, h / 2
    half = UNIT * rng.uniform(0.3, 0.36)  # eye centres sit about 0.33 IOD from the middle
    ax, ay = UNIT * rng.uniform(0.24, 0.3), UNIT * rng.uniform(0.17, 0.24)
    thick = rng.uniform(4, 9)
    round_rims = rng.random() < 0.5
    lenses = _canvas(w, h)
    for s in (-1, 1):
        c = (int((cx + s * half) * _SS), int(cy * _SS))
        axes = (int(ax * _SS), int(ay * _SS))
        if round_rims:
            cv2.ellipse(m, c, axes, 0, 0, 360, 255, int(thick * _SS))
            cv2.ellipse(lenses, c, axes, 0, 0, 360, 255, -1)
        else:
            p0 = (c[0] - axes[0], c[1] - axes[1])
            p1 = (c[0] + axes[0], c[1] + axes[1])
            cv2.rectangle(m, p0, p1, 255, int(thick * _SS))
            cv2.rectangle(lenses, p0, p1, 255, -1)
    bridge_y = cy - ay * 0.3
    _capsule(m, np.array([cx - half + ax, bridge_y]), np.array([cx + half - ax, bridge_y]), thick * 0.8)
    for s in (-1, 1):
        _capsule(m, np.array([cx + s * (half + ax), cy - ay * 0.5]), np.array([cx + s * (w / 2 - 6), cy - ay * 0.7]),
                 thick * 0.7)
    dark = rng.random() < 0.35
    if dark:
        m = np.maximum(m, lenses)
    alpha = _down(m)
    frame_col = np.array([[20, 20, 24], [90, 60, 30], [150, 30, 30], [180, 180, 190], [30, 40, 110]],
                         np.float32)[rng.integers(5)]
    colour = _shade(frame_col, h, w, rng, strength=0.4)
    if dark:
        lens = _down(lenses)[..., None]
        colour = colour * (1 - lens) + _shade(np.array([25, 28, 30], np.float32), h, w, rng, 0.6) * lens
    return Sprite("glasses", np.clip(colour + 0.5, 0, 255).astype(np.uint8), alpha, (cx, cy))


_MAKERS = {"hand": hand_sprite, "bar": bar_sprite, "texture": texture_sprite, "glasses": glasses_sprite}


def make_sprite(kind: str, seed: int) -> Sprite:
    """The sprite of an occluder ``kind`` drawn from ``seed`` (the same seed gives the same sprite)."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown occluder kind {kind!r}; known: {', '.join(KINDS)}")
    return _MAKERS[kind](seed)


# ---------------------------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class OccluderPass:
    """One occluder crossing the face between ``start`` and ``end`` seconds.

    The path is in the face's own axes, in inter-ocular distances from the face centre: from ``entry`` to
    ``exit`` (x along the eye line, y towards the chin), the sprite turned by ``angle`` radians and scaled by
    ``scale``. Glasses follow the eyes instead: they rest on them with a small drift."""

    kind: str
    seed: int
    start: float
    end: float
    entry: tuple[float, float]
    exit: tuple[float, float]
    angle: float
    scale: float

    def active(self, time: float) -> bool:
        return self.start <= time <= self.end

    def sprite(self) -> Sprite:
        return _cached_sprite(self.kind, self.seed)


@lru_cache(maxsize=64)
def _cached_sprite(kind: str, seed: int) -> Sprite:
    return make_sprite(kind, seed)


def make_pass(kind: str, seed: int, start: float, end: float) -> OccluderPass:
    """A seeded pass of ``kind`` over [start, end] seconds: it enters from one side, crosses the face in a
    direction that depends on the kind (hands and patches sweep sideways or diagonally, the bar rises from
    below or sweeps, glasses rest on the eyes) and leaves on the other side."""
    if end <= start:
        raise ValueError(f"a pass needs end > start, got {start}..{end}")
    rng = np.random.default_rng(seed + 104_729)
    side = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "glasses":
        drift = rng.uniform(-0.08, 0.08, 2)
        return OccluderPass(kind, seed, start, end, (float(drift[0]), float(drift[1])),
                            (float(-drift[0]), float(-drift[1])), float(rng.normal(0, 0.04)), float(rng.uniform(0.95, 1.1)))
    lane = rng.uniform(-0.6, 0.9)  # how far below the face centre the path runs, IOD
    reach = 2.6
    if kind == "bar" and rng.random() < 0.5:  # a microphone brought up from below to the mouth and down again
        entry, exit_ = (side * rng.uniform(0.0, 0.4), 3.0), (side * rng.uniform(0.0, 0.4), 0.9)
        angle = rng.normal(0, 0.15)
    else:
        tilt = rng.uniform(-0.5, 0.5)
        entry, exit_ = (-side * reach, lane - tilt), (side * reach, lane + tilt)
        angle = rng.normal(0, 0.35) if kind != "bar" else side * rng.uniform(0.2, 0.7)
    return OccluderPass(kind, seed, start, end, (float(entry[0]), float(entry[1])), (float(exit_[0]), float(exit_[1])),
                        float(angle), float(rng.uniform(0.8, 1.15)))


def occluder_schedule(seed: int, duration: float, kinds: Sequence[str] = KINDS, *, every: float = 2.0,
                      share: float = 0.6) -> list[OccluderPass]:
    """Passes over ``duration`` seconds: one per ``every`` seconds, each lasting ``share`` of that slot and
    starting at a seeded time within it (so about ``1 - share`` of the frames have no occluder). The kinds
    take turns; pass k's seed is ``seed + k``, so a held-out ``seed`` gives held-out passes."""
    if duration <= 0 or every <= 0 or not 0 < share <= 1:
        raise ValueError("occluder_schedule needs duration > 0, every > 0 and 0 < share <= 1")
    if not kinds:
        raise ValueError("occluder_schedule needs at least one kind")
    rng = np.random.default_rng(seed)
    order = list(kinds)
    rng.shuffle(order)
    passes = []
    for k, t0 in enumerate(np.arange(0.0, duration, every)):
        length = every * share
        begin = float(t0 + rng.uniform(0, every - length))
        if begin >= duration:
            break
        passes.append(make_pass(order[k % len(order)], seed + k, begin, min(begin + length, duration)))
    return passes


def face_frame(landmarks: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """The face's centre (2,), its unit eye-line axis u (2,) and inter-ocular distance (px) from (468+, 2+)
    landmarks in frame pixels."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    right, left = lm[R.RIGHT_EYE_OUTER], lm[R.LEFT_EYE_OUTER]
    u = left - right
    iod = float(np.linalg.norm(u))
    u = u / max(iod, 1e-9)
    oval = lm[list(R.FACE_OVAL)]
    return 0.5 * (oval.min(0) + oval.max(0)), u, iod


def eye_centre(landmarks: NDArray[np.floating]) -> NDArray[np.float64]:
    lm = np.asarray(landmarks, np.float64)[:, :2]
    return 0.5 * (lm[list(R.LEFT_EYE)].mean(0) + lm[list(R.RIGHT_EYE)].mean(0))


def placement(p: OccluderPass, landmarks: NDArray[np.floating], time: float) -> Affine | None:
    """(2, 3) map from sprite pixels to frame pixels at ``time`` (None when the pass is not on screen then)."""
    if not p.active(time):
        return None
    s = (time - p.start) / max(p.end - p.start, 1e-9)
    centre, u, iod = face_frame(landmarks)
    v = np.array([-u[1], u[0]])
    if p.kind == "glasses":
        centre = eye_centre(landmarks)
    off = np.asarray(p.entry) + s * (np.asarray(p.exit) - np.asarray(p.entry))
    at = centre + iod * (off[0] * u + off[1] * v)
    k = iod / UNIT * p.scale
    ang = float(np.arctan2(u[1], u[0])) + p.angle
    c, sn = np.cos(ang) * k, np.sin(ang) * k
    lin = np.array([[c, -sn], [sn, c]])
    sc = np.asarray(p.sprite().centre)
    return np.concatenate([lin, (at - lin @ sc)[:, None]], axis=1)


def composite(frame: Frame, sprite: Sprite, affine: Affine) -> tuple[Frame, Mask]:
    """Paint ``sprite`` over ``frame`` (H, W, 3) uint8 through ``affine`` (sprite -> frame pixels). Returns the
    new frame and the sprite's coverage in frame pixels (H, W) float32 in [0, 1]: the exact occluder mask."""
    h, w = frame.shape[:2]
    a = np.asarray(cv2.warpAffine(sprite.alpha, affine, (w, h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0.0), np.float32)
    if not a.any():
        return frame, a
    ys, xs = np.nonzero(a)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    shifted = affine.copy()
    shifted[:, 2] -= [x0, y0]
    img = np.asarray(cv2.warpAffine(sprite.image, shifted, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE), np.float32)
    out = frame.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    al = a[y0:y1, x0:x1, None]
    out[y0:y1, x0:x1] = np.clip(region * (1 - al) + img * al + 0.5, 0, 255).astype(np.uint8)
    return out, a


def occlude(image: Frame, landmarks: NDArray[np.floating], time: float, passes: Sequence[OccluderPass]
            ) -> tuple[Frame, Mask]:
    """Composite every pass on screen at ``time`` (placed by ``landmarks``) over ``image``; the union of their
    coverage (H, W) float32 (all zeros when none is on screen)."""
    covered = np.zeros(image.shape[:2], np.float32)
    for p in passes:
        aff = placement(p, landmarks, time)
        if aff is None:
            continue
        image, a = composite(image, p.sprite(), aff)
        covered = np.maximum(covered, a)
    return image, covered
