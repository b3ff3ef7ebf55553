"""Seconds and peak memory of the colour path (``FixPipeline.restore_colour_photo``: a photo with
its own colour) on a synthetic grainy colour photo, with a model's colour tone head or, with
``--rules``, without it. The photo is handed over as `pikfix fix` hands over an 8-bit file (as
decoded) and comes back at 8 bits. One case per process, so the peak is this case's own. ``--grain 0
--keep-tone`` times a clean photo the head leaves as it is, whose own chroma goes on at full
resolution.

    .venv/bin/python benchmarks/colour_path_speed.py --model models/pikfix-lite.safetensors --megapixels 24

``fix_speed.py`` times grey photos on the presets' architectures; the presets have no colour
tone head, so this one loads a checkpoint.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from pikfix.imageio import from_float
from pikfix.pipeline import FixPipeline

STRIP = 200  # rows: the test photo is drawn in strips, so drawing it costs no extra memory


def _photo(megapixels: float, grain: float = 0.02, seed: int = 0) -> np.ndarray:
    """A 3:2 colour photo of smooth hues with grain, (H, W, 3) uint8 as decoded from a file."""
    h = max(STRIP, round((megapixels * 1e6 / 1.5) ** 0.5))
    w = round(h * 1.5)
    rgb = np.empty((h, w, 3), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    xs = np.arange(w, dtype=np.float32) / w
    for y0 in range(0, h, STRIP):
        ys = (np.arange(y0, min(h, y0 + STRIP), dtype=np.float32) / w)[:, None]
        strip = np.empty((len(ys), w, 3), dtype=np.float32)
        for c in range(3):
            noise = rng.normal(0, grain, (len(ys), w)).astype(np.float32) if grain > 0 else 0.0
            strip[..., c] = 0.5 + 0.3 * np.sin(9 * xs + 2 * c) * np.cos(7 * ys) + noise
        rgb[y0 : y0 + STRIP] = from_float(strip, np.uint8)
    return rgb


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rules", action="store_true", help="drop the colour tone head: the rule-based correction")
    parser.add_argument("--grain", type=float, default=0.02, help="grain's standard deviation (0: a clean photo)")
    parser.add_argument("--keep-tone", action="store_true", help="skip the colour tone head, as `fix --keep-tone`")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = FixPipeline.from_checkpoint(args.model, device="cpu", keep_tone=args.keep_tone)
    if args.rules:
        pipe.model.restoration.colour_tone = None
    rgb = _photo(args.megapixels, args.grain)
    before = _peak_mib()
    start = time.perf_counter()
    pipe.restore_colour_photo(rgb, dtype=np.uint8)
    print(f"{rgb.shape[0] * rgb.shape[1] / 1e6:.1f} MP colour path ({'rules' if args.rules else 'head'}): "
          f"{time.perf_counter() - start:.1f} s, peak RSS {_peak_mib():.0f} MiB ({before:.0f} MiB with model and photo)")


if __name__ == "__main__":
    main()
