"""A contact sheet of restoration alone on real photos: input | each model's restored luminance
(and its damage mask, for models with a detector). For looking at real scans, which have no
ground truth.

    .venv/bin/python benchmarks/restoration_sheet.py ../shared/data/real-old/old_w_scratch_*.png \
        --model old=/tmp/old-lite.safetensors --model new=models/pikfix-lite.safetensors -o sheet.jpg
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads must not spin

import numpy as np  # noqa: E402

from pikfix.color import luminance  # noqa: E402
from pikfix.imageio import read_image, to_float, write_image  # noqa: E402
from pikfix.pipeline import FixPipeline  # noqa: E402
from pikfix.sheet import grid  # noqa: E402


def _grey(plane: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (np.repeat(np.clip(plane, 0, 1)[..., None], 3, -1) * 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--model", action="append", required=True, help="NAME=checkpoint.safetensors")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--height", type=int, default=384)
    args = parser.parse_args()
    models = [(name, FixPipeline.from_checkpoint(path, "cpu")) for name, path in (m.split("=", 1) for m in args.model)]
    rows = []
    for photo in args.photos:
        l = luminance(to_float(read_image(photo).pixels))
        row = [(photo.name, _grey(l / 100))]
        for name, pipe in models:
            restored = pipe.restore_l(l)
            row.append((name, _grey(restored.l / 100)))
            if restored.mask is not None:
                row.append((f"{name} mask", _grey(restored.mask)))
        rows.append(row)
    write_image(args.out, np.asarray(grid(rows, height=args.height)))


if __name__ == "__main__":
    main()
