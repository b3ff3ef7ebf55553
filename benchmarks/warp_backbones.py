"""Which frozen backbone matches a reference best, per second, before any training?

    .venv/bin/python benchmarks/warp_backbones.py --photos /work/shared/data/photos [--count 24]

A training-free stand-in for the similarity sub-net (paper 3.2): each backbone's four levels
are L2-normalised per position, resized to the 1/8 grid and concatenated; the input's grey
positions attend (eq. 2: mean-centred cosine, softmax at temperature 0.01) over the
reference's; the reference ab is warped with those weights and compared with the input's
true ab (mean absolute error in Lab units, lower is better). Input: a photo at 256 px;
reference: the same photo mirrored, cropped to 85 % and resized (what the trainer's
same-photo reference looks like). Baselines: the reference's mean ab everywhere, and the
unwarped mirrored reference. Also reported: seconds per backbone pass (input + reference).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pikfix.backbones import build_backbone
from pikfix.color import normalize_l, rgb_to_lab
from pikfix.imageio import find_images, read_image
from pikfix.nets.similarity import warp

SIDE = 256
GRID = SIDE // 8
TEMPERATURE = 0.01


def lab_of(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> Lab (1, 3, H, W)."""
    t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return rgb_to_lab(t)[None]


def pair(path: Path, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(input Lab, reference Lab), both SIDE x SIDE: the photo, and a mirrored 85 % crop of it."""
    img = Image.fromarray(read_image(path).pixels).convert("RGB")
    w, h = img.size
    cw, ch = int(w * 0.85), int(h * 0.85)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    ref = img.crop((left, top, left + cw, top + ch)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return lab_of(img.resize((SIDE, SIDE), Image.BICUBIC)), lab_of(ref.resize((SIDE, SIDE), Image.BICUBIC))


def grid_features(backbone: torch.nn.Module, grey: torch.Tensor) -> torch.Tensor:
    levels = [F.normalize(F.interpolate(f, size=(GRID, GRID), mode="area" if f.shape[-1] > GRID else "bilinear"),
                          dim=1) for f in backbone(grey)]
    return torch.cat(levels, dim=1) / len(levels) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("/work/shared/data/photos"))
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "vgg19"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = [p for p, _ in find_images([args.photos])]
    paths = [paths[i] for i in np.random.default_rng(0).choice(len(paths), args.count, replace=False)]
    rng = np.random.default_rng(1)
    pairs = [pair(p, rng) for p in paths]
    print(f"{len(pairs)} photos at {SIDE} px, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")

    def mae(ab: torch.Tensor, gt: torch.Tensor) -> float:
        return float((ab - gt).abs().mean())

    base_mean = [mae(r[:, 1:].mean(dim=(2, 3), keepdim=True).expand_as(x[:, 1:]), x[:, 1:]) for x, r in pairs]
    base_flip = [mae(r[:, 1:], x[:, 1:]) for x, r in pairs]
    print(f"baseline reference mean ab: ab MAE {np.mean(base_mean):.2f}; unwarped reference: {np.mean(base_flip):.2f}")
    for name in args.backbones:
        backbone = build_backbone(name, "imagenet").eval()
        errors, seconds = [], []
        with torch.inference_mode():
            for x, r in pairs:
                start = time.perf_counter()
                fx, fr = grid_features(backbone, normalize_l(x[:, :1])), grid_features(backbone, normalize_l(r[:, :1]))
                seconds.append(time.perf_counter() - start)
                ref_ab = F.adaptive_avg_pool2d(r[:, 1:], GRID)
                warped, _ = warp(fx, fr, ref_ab, TEMPERATURE, 1 << 24)
                warped = F.interpolate(warped, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
                errors.append(mae(warped, x[:, 1:]))
        print(f"{name:18s}: warped ab MAE {np.mean(errors):.2f} (95 % CI +-{1.96 * np.std(errors) / len(errors) ** 0.5:.2f}), "
              f"{np.median(seconds):.3f} s per input + reference pass (median), load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
