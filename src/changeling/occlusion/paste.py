"""Training examples for the segmenter without hand labels: random occluders pasted on the project's own faces.

What is pasted: sprites of the synthetic occluders' training kinds and seeds (hands, bars, texture patches),
random shapes (polygons, ellipses, thick strokes) filled with flat colour, gradients, noise or a training
texture, and patches of the same footage's background (cut from well outside the face outline of another face
of the batch). Nothing skin-like but the hands: plain skin pasted on skin would teach that clear skin is covered. The target is the face outline minus what was pasted.
Nothing here draws a held-out seed, kind or texture (see :mod:`changeling.synth.occluders`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.synth.occluders import (
    HELD_OUT_SEED_BASE,
    TRAINING_KINDS,
    TRAINING_TEXTURES,
    Sprite,
    blob_alpha,
    make_sprite,
    textured,
)

BANK_SIZE = 120


def _shape_sprite(rng: np.random.Generator) -> Sprite:
    """A random shape with a random fill, 60-200 px across."""
    w, h = int(rng.uniform(60, 200)), int(rng.uniform(60, 200))
    kind = rng.integers(3)
    m = np.zeros((h, w), np.uint8)
    alpha: NDArray[np.float32]
    if kind == 0:  # polygon
        n = int(rng.integers(3, 8))
        pts = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], 1)
        cv2.fillPoly(m, [cv2.convexHull(pts.astype(np.float32)).astype(np.int32)], 255, cv2.LINE_AA)
        alpha = (m / np.float32(255)).astype(np.float32)
    elif kind == 1:  # thick strokes (cables, straps, frames, fingers)
        for _ in range(int(rng.integers(1, 4))):
            pts = np.stack([rng.uniform(0, w, 3), rng.uniform(0, h, 3)], 1).astype(np.int32)
            cv2.polylines(m, [pts], False, 255, int(rng.uniform(3, 14)), cv2.LINE_AA)
        alpha = (m / np.float32(255)).astype(np.float32)
    else:
        alpha = blob_alpha(rng, w, h, roughness=float(rng.uniform(0.1, 0.6)))
    fill, source = int(rng.integers(4)), ""
    if fill == 0:
        img = np.broadcast_to(rng.uniform(0, 255, 3), (h, w, 3)).astype(np.float32)
    elif fill == 1:
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        img = np.broadcast_to(c0 + (c1 - c0) * t, (h, w, 3)).astype(np.float32)
    elif fill == 2:
        noise = cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), rng.uniform(0.5, 4))
        img = rng.uniform(40, 215, 3) + noise * rng.uniform(20, 80)
    else:
        source = TRAINING_TEXTURES[int(rng.integers(len(TRAINING_TEXTURES)))]
        img = textured(source, rng, (w, h)).astype(np.float32)
    return Sprite("shape", np.clip(img, 0, 255).astype(np.uint8), alpha.astype(np.float32), (w / 2, h / 2),
                  source=source)


def make_bank(seed: int, size: int = BANK_SIZE) -> list[Sprite]:
    """Sprites to paste: half synthetic occluders of the training kinds with training seeds, half shapes."""
    rng = np.random.default_rng(seed)
    bank = []
    for i in range(size):
        if i % 2 == 0:
            kind = TRAINING_KINDS[(i // 2) % len(TRAINING_KINDS)]
            bank.append(make_sprite(kind, int(rng.integers(0, HELD_OUT_SEED_BASE))))
        else:
            bank.append(_shape_sprite(rng))
    return bank


@dataclass
class PasteSettings:
    none: float = 0.2  # share of examples left without an occluder
    two: float = 0.3  # share (of those with one) that get a second
    background: float = 0.2  # share of occluders that are background patches
    lowres: float = 0.5  # share of examples shrunk and blown up again (convert's small crops)


def _placement(rng: np.random.Generator, sprite_wh: tuple[int, int], size: int, target: tuple[float, float]
               ) -> NDArray[np.float64]:
    """(2, 3) sprite -> crop: a random turn, a size 25-90% of the crop, centred near ``target``."""
    w, h = sprite_wh
    k = rng.uniform(0.25, 0.9) * size / max(w, h)
    ang = rng.uniform(-np.pi, np.pi)
    c, s = np.cos(ang) * k, np.sin(ang) * k
    lin = np.array([[c, -s], [s, c]])
    at = np.asarray(target) + rng.normal(0, 0.12 * size, 2)
    return np.concatenate([lin, (at - lin @ np.array([w / 2, h / 2]))[:, None]], axis=1)


def _background_patch(rng: np.random.Generator, image: NDArray[np.uint8], outline: NDArray[np.float32]
                      ) -> Sprite | None:
    """A blob-shaped patch of ``image`` from well away from its face outline (None if there is no such place):
    not the neck or the ears either, whose skin pasted on the face would teach that skin is an occluder."""
    size = image.shape[0]
    r = max(1, int(0.15 * size))
    away = cv2.dilate((outline > 0.5).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    for _ in range(8):
        w, h = int(rng.uniform(0.15, 0.35) * size), int(rng.uniform(0.15, 0.35) * size)
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        if away[y:y + h, x:x + w].mean() < 0.02:
            alpha = blob_alpha(rng, w, h)
            return Sprite("background", np.ascontiguousarray(image[y:y + h, x:x + w]), alpha, (w / 2, h / 2))
    return None


def paste_occluders(images: NDArray[np.uint8], outlines: NDArray[np.float32], rng: np.random.Generator,
                    bank: list[Sprite], settings: PasteSettings | None = None,
                    regions: NDArray[np.float32] | None = None,
                    ) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]:
    """Paste random occluders on a batch of faces.

    images: (B, S, S, 3) uint8 aligned faces; outlines: (B, S, S) float32 [0, 1] the visible-face target before
    pasting (the face outline, or a hand correction); regions: (B, S, S) where the loss counts (default: all).
    Returns the pasted images (B, S, S, 3) uint8, targets (B, S, S) float32 = outline * (1 - pasted coverage)
    and the regions, all flipped together at random."""
    st = settings or PasteSettings()
    n, size = images.shape[0], images.shape[1]
    out = images.copy()
    targets = outlines.astype(np.float32).copy()
    where = np.ones_like(targets) if regions is None else regions.astype(np.float32).copy()
    for i in range(n):
        count = 0 if rng.random() < st.none else (2 if rng.random() < st.two else 1)
        ys, xs = np.nonzero(outlines[i] > 0.5)
        for _ in range(count):
            j = int(rng.integers(n))
            r = rng.random()
            sprite: Sprite | None
            if r < st.background:
                sprite = _background_patch(rng, images[j], outlines[j])
            else:
                sprite = bank[int(rng.integers(len(bank)))]
            if sprite is None:
                sprite = bank[int(rng.integers(len(bank)))]
            k = int(rng.integers(len(xs))) if len(xs) else -1
            centre = (float(xs[k]), float(ys[k])) if k >= 0 else (size / 2, size / 2)
            h, w = sprite.alpha.shape
            aff = _placement(rng, (w, h), size, centre)
            a = np.asarray(cv2.warpAffine(sprite.alpha, aff, (size, size), flags=cv2.INTER_LINEAR), np.float32)
            img = np.asarray(cv2.warpAffine(sprite.image, aff, (size, size), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE), np.float32)
            blended = out[i].astype(np.float32) * (1 - a[..., None]) + img * a[..., None]
            out[i] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
            targets[i] *= 1 - a
        if rng.random() < st.lowres:
            small = int(size * rng.uniform(0.35, 0.9))
            tiny = cv2.resize(out[i], (small, small), interpolation=cv2.INTER_AREA)
            out[i] = cv2.resize(tiny, (size, size), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            out[i] = out[i][:, ::-1]
            targets[i] = targets[i][:, ::-1]
            where[i] = where[i][:, ::-1]
    return out, targets, where
