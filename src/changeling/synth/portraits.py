"""The bundled public-domain portraits and their face-mesh landmarks (``changeling/assets/portraits``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from changeling.types import Frame

PortraitName = Literal["astronaut", "grace_hopper"]
PORTRAITS: tuple[PortraitName, ...] = ("astronaut", "grace_hopper")
MESH_POINTS = 468


@dataclass(frozen=True)
class Portrait:
    """A still picture of one face: the image and its 468 landmarks (x, y pixels, z depth scaled like x)."""

    name: str
    image: Frame = field(repr=False)  # (H, W, 3) uint8 RGB
    landmarks: NDArray[np.float64] = field(repr=False)  # (468, 3)

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {self.image.shape} {self.image.dtype}")
        if self.landmarks.shape != (MESH_POINTS, 3):
            raise ValueError(f"expected (468, 3) landmarks, got {self.landmarks.shape}")


def _assets() -> resources.abc.Traversable:
    return resources.files("changeling") / "assets" / "portraits"


def load_portrait(name: str) -> Portrait:
    """One of :data:`PORTRAITS`, read from the package's assets."""
    if name not in PORTRAITS:
        raise ValueError(f"unknown portrait {name!r}; bundled: {', '.join(PORTRAITS)}")
    folder = _assets()
    doc = json.loads((folder / "landmarks.json").read_text())
    entry = doc["portraits"][name]
    with (folder / entry["file"]).open("rb") as fh, Image.open(fh) as img:
        image = np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    if image.shape[:2] != (entry["height"], entry["width"]):
        raise ValueError(f"portrait {name}: image is {image.shape[1]}x{image.shape[0]}, landmarks were made "
                         f"for {entry['width']}x{entry['height']}")
    return Portrait(name=name, image=image, landmarks=np.asarray(entry["landmarks"], dtype=np.float64))
