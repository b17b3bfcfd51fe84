"""The fixed geometry every model is scored in: the ``whole`` face type at the view size (default 256 px, about
a face's size in a 720p frame). A model's output, whatever its face type and resolution, is warped into it, so a
change of face type or preset is compared on the same pixels (a tighter crop scored in its own frame would look
better only because the face is bigger there). Pure functions."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.detect.align import compose, invert_affine, template_to_crop
from changeling.types import Affine, FaceType

VIEW_FACE_TYPE: FaceType = "whole"
VIEW_SIZE = 256


def crop_to_view(face_type: FaceType, resolution: int, view_size: int = VIEW_SIZE) -> Affine:
    """(2, 3) affine from the pixels of a ``resolution`` crop of ``face_type`` to the pixels of the view.

    Both crops come from one fit of the landmarks to the template, so the map between them does not depend on
    the face: template -> view after crop -> template."""
    return compose(template_to_crop(VIEW_FACE_TYPE, view_size), invert_affine(template_to_crop(face_type, resolution)))


def to_view(images: NDArray[np.floating], face_type: FaceType, view_size: int = VIEW_SIZE
            ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Warp (T, S, S, 3) float crops of ``face_type`` into the view: (T, V, V, 3) float32 and the (V, V) float32
    coverage (1 where the crop has pixels, 0 outside it). Bilinear, as convert pastes faces back."""
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[3] != 3:
        raise ValueError(f"expected (T, S, S, 3) crops, got {x.shape}")
    a = crop_to_view(face_type, x.shape[1], view_size)
    if x.shape[1] == view_size and np.allclose(a, np.eye(2, 3), rtol=0.0, atol=1e-9):
        out = x.copy()  # already the view's geometry (up to float rounding): nothing to resample
    else:
        out = np.stack([cv2.warpAffine(img, a, (view_size, view_size), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE) for img in x])
    ones = np.ones(x.shape[1:3], np.float32)
    cover = cv2.warpAffine(ones, a, (view_size, view_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)
    # only pixels wholly inside the crop count (the bilinear edge is half crop, half border)
    inside = np.asarray(cv2.erode(cover, np.ones((3, 3), np.uint8)) > 0.999, np.float32)
    return out.astype(np.float32, copy=False), inside
