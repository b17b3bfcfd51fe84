"""Blend masks for convert, in face-crop pixels (pure functions).

The landmark masks (face-oval hull, extended over the forehead) are the polygons that
:func:`changeling.masks.masks.face_masks` gives extraction, so convert cuts the face where training learned it;
the decoder's predicted mask comes from the model; the occlusion mask from the project's occlusion segmenter
(:mod:`changeling.occlusion`: 1 where the face is visible, 0 where a hand, a microphone or glasses cover it).
Masks compose by the element-wise minimum; then erode (or
dilate) and feather, the feather lying inside the mask so nothing from outside the face is pasted. All masks
are (S, S) float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from changeling.masks import regions
from changeling.masks.masks import combine_masks, convex_hull, erode_dilate, face_masks
from changeling.masks.masks import feather as feather_centred
from changeling.masks.raster import polygon_mask
from changeling.types import Mask
from changeling.vocab import MASK_KINDS, MaskKind, check_registry


@dataclass(frozen=True)
class MaskRecipe:
    """What one mask kind is made of, combined by the minimum: a landmark ``outline`` (or none), the decoder's
    ``predicted`` mask, and the occlusion mask (``"required"``, ``"optional"``: used when there is one, or
    ``"unused"``)."""

    outline: Literal["hull", "extended"] | None
    predicted: bool
    occlusion: Literal["required", "optional", "unused"]


MASK_RECIPES: dict[str, MaskRecipe] = {
    "predicted": MaskRecipe(None, True, "unused"),
    "hull": MaskRecipe("hull", False, "unused"),
    "extended": MaskRecipe("extended", False, "unused"),
    "combined": MaskRecipe("hull", True, "optional"),
    "occlusion": MaskRecipe("hull", False, "required"),
}
check_registry("mask", MASK_RECIPES, MASK_KINDS)
OCCLUSION_KINDS: tuple[MaskKind, ...] = tuple(k for k in MASK_KINDS if MASK_RECIPES[k].occlusion != "unused")


def landmark_mask(points: np.ndarray, size: int, name: Literal["hull", "extended"]) -> Mask:
    """The ``hull`` or ``extended`` mask of a face. ``points``: (468|478, 2+) landmarks in crop pixels."""
    polys = face_masks(np.asarray(points, dtype=np.float64)[:, :2], size)
    poly = polys.get(name)
    if poly is None:  # the face lies outside the crop
        return np.zeros((size, size), np.float32)
    return polygon_mask(size, [poly])


def hull_mask(points: np.ndarray, size: int) -> Mask:
    """Face-oval hull mask (S, S) from landmarks in crop pixels: the same polygon as ``face_masks``' hull
    (rasterising clips it to the crop), without computing the other regions (this runs once per frame)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < regions.MESH_POINTS or p.shape[1] not in (2, 3):
        raise ValueError(f"expected (468 or 478, 2 or 3) landmarks, got {p.shape}")
    hull = convex_hull(p[list(regions.FACE_OVAL), :2])
    return polygon_mask(size, [hull.tolist()])


def extended_mask(points: np.ndarray, size: int) -> Mask:
    """The hull extended over the forehead (S, S) from landmarks in crop pixels."""
    return landmark_mask(points, size, "extended")


def combine(*masks: Mask) -> Mask:
    """Element-wise minimum of masks of one shape."""
    return combine_masks(list(masks))


def erode(mask: Mask, pixels: int) -> Mask:
    """Shrink the mask by ``pixels`` (> 0), or grow it by ``-pixels`` (< 0), with a disk."""
    return erode_dilate(mask, -int(pixels))


def feather(mask: Mask, width: int) -> Mask:
    """Soften the edge over ``width`` pixels inside the mask: erode by ``width / 2``, then blur with a
    Gaussian truncated at ``width / 2``. The result is 0 wherever the input was 0 and equals the input deeper
    than ``width`` pixels inside."""
    if width <= 0:
        return np.asarray(mask, dtype=np.float32)
    half = max(1, int(width) // 2)
    return feather_centred(erode(mask, half), half)


OCCLUSION_LOW, OCCLUSION_HIGH = 0.35, 0.65


def occlusion_ramp(probability: Mask) -> Mask:
    """The segmenter's probability of 'visible face' as a blend weight: 0 up to ``OCCLUSION_LOW``, 1 from
    ``OCCLUSION_HIGH``, linear between. An occluder the segmenter is fairly sure of gets none of the swapped
    face (a faint 0.1 over a hand would still tint it), and the edge stays soft."""
    p = np.asarray(probability, dtype=np.float32)
    return np.clip((p - OCCLUSION_LOW) / (OCCLUSION_HIGH - OCCLUSION_LOW), 0.0, 1.0)


def clear_border(mask: Mask, pixels: int = 1) -> Mask:
    """Zero a ring of ``pixels`` at the crop's edge, so the pasted face never ends in a hard line there."""
    out = np.array(mask, dtype=np.float32, copy=True)
    if pixels > 0:
        out[:pixels, :] = 0
        out[-pixels:, :] = 0
        out[:, :pixels] = 0
        out[:, -pixels:] = 0
    return out


@dataclass(frozen=True)
class MaskBuilder:
    """Builds the blend mask of one face from the decoder's mask and the landmarks in crop pixels.

    ``kind``: ``predicted`` (the decoder's), ``hull``, ``extended``, ``occlusion`` (the hull minus what the
    occlusion segmenter sees covering the face) or ``combined`` (the minimum of the predicted mask, the hull
    and, when there is one, the occlusion mask). ``erode`` > 0 shrinks (< 0 grows) and ``blur`` feathers, both
    in crop pixels.
    """

    kind: MaskKind = "combined"
    erode: int = 0
    blur: int = 8

    @property
    def uses_occlusion(self) -> bool:
        """Whether this kind takes the occlusion mask (``combined`` works without one too)."""
        return self.kind in OCCLUSION_KINDS

    def raw(self, predicted: Mask | None, points: np.ndarray | None, size: int, occlusion: Mask | None = None
            ) -> Mask:
        """The mask before erosion and feathering (S, S) float32. ``occlusion`` (S, S): the segmenter's
        visible-face mask of this crop."""
        recipe = MASK_RECIPES[self.kind]
        parts: list[Mask] = []
        if recipe.outline is not None:
            if points is None:
                raise ValueError(f"mask {self.kind!r} needs landmarks")
            parts.append(hull_mask(points, size) if recipe.outline == "hull" else extended_mask(points, size))
        if recipe.predicted:
            if predicted is None:
                raise ValueError(f"mask {self.kind!r} needs the decoder's predicted mask")
            parts.append(np.asarray(predicted, dtype=np.float32))
        if recipe.occlusion == "required" and occlusion is None:
            raise ValueError(f"mask {self.kind!r} needs the occlusion segmenter's mask")
        if recipe.occlusion != "unused" and occlusion is not None:
            parts.append(occlusion_ramp(occlusion))
        return parts[0] if len(parts) == 1 else combine(*parts)

    def __call__(self, predicted: Mask | None, points: np.ndarray | None, size: int,
                 occlusion: Mask | None = None) -> Mask:
        m = erode(self.raw(predicted, points, size, occlusion), self.erode)
        m = clear_border(m, max(1, self.blur // 2))
        return np.clip(feather(m, self.blur), 0.0, 1.0)
