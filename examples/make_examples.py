"""Rebuild examples/ from the development photos (public-domain / CC0 ones, all held out of training).

    .venv/bin/python examples/make_examples.py ../shared/data/photos

old/<name>.png: the photo damaged by pikfix's own degradation (seeded) and turned grey.
refs/<name>-ref.jpg: a different crop of the same colour photo, mirrored, standing in for a
related photo of the same occasion.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pikfix.training.degradation import degrade_seeded
from pikfix.imageio import from_float, read_image, to_float, write_image

PHOTOS = ["gcompris__animals-dog.jpg", "gcompris__animals-horse.jpg", "gcompris__animals-koala.jpg",
          "gcompris__resource-sea2.jpg"]
LONG_SIDE = 768


def main(source: Path) -> None:
    here = Path(__file__).parent
    for seed, name in enumerate(PHOTOS):
        rgb = to_float(read_image(source / name).pixels)
        img = Image.fromarray(from_float(rgb, "uint8"))
        img.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
        rgb = np.asarray(img, dtype=np.float32) / 255.0
        short = name.split("__")[1].split(".")[0].split("-")[-1]
        grey = degrade_seeded(rgb, seed=100 + seed).grey
        write_image(here / "old" / f"{short}.jpg", from_float(np.repeat(grey[..., None], 3, axis=2), "uint8"))
        h, w = rgb.shape[:2]
        crop = rgb[h // 8 : h - h // 10, w // 5 :, :][:, ::-1]  # another view: cropped and mirrored
        write_image(here / "refs" / f"{short}-ref.jpg", from_float(np.ascontiguousarray(crop), "uint8"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
