"""Face masks: named landmark regions, mask polygons from landmarks, rasterising and mask operations."""

from changeling.masks.masks import (
    clip_polygon,
    combine_masks,
    convex_hull,
    erode_dilate,
    face_masks,
    feather,
    rasterize_masks,
)
from changeling.masks.raster import polygon_mask

__all__ = ["clip_polygon", "combine_masks", "convex_hull", "erode_dilate", "face_masks", "feather",
           "polygon_mask", "rasterize_masks"]
