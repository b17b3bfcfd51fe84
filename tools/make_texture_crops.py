"""Make the texture crops in src/changeling/assets/textures from the sample images scikit-image ships.

Run once (needs scikit-image, a test dependency): ``python tools/make_texture_crops.py``. The crops feed the
synthetic occluders (``changeling.synth.occluders``) and the occlusion segmenter's pasted occluders; see
``assets/textures/ATTRIBUTION.md`` for where each image comes from and its licence.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "src" / "changeling" / "assets" / "textures"
SIZE = 128
# name -> (loader, (y0, x0, side) of the square taken before resizing to SIZE)
CROPS = {
    "brick": (data.brick, (100, 100, 256)),
    "grass": (data.grass, (0, 0, 256)),
    "gravel": (data.gravel, (128, 128, 256)),
    "coffee": (data.coffee, (200, 0, 200)),
    "chelsea": (data.chelsea, (150, 40, 140)),
    "rocket": (data.rocket, (220, 20, 200)),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (load, (y, x, side)) in CROPS.items():
        img = np.asarray(load())
        crop = img[y:y + side, x:x + side]
        small = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        Image.fromarray(small).save(OUT / f"{name}.png", optimize=True)
        print(name, small.shape)


if __name__ == "__main__":
    main()
