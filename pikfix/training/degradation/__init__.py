"""Synthetic old-photo damage: turns a clean colour photo into a damaged grey one.

Pik-Fix trains its restoration sub-net on pairs (damaged grey photo, clean L), and no large
set of real old photos with clean originals exists, so the damage is simulated (paper 4.1).
The recipe combines Pik-Fix's (cracks and dust, white polygons at the border, Gaussian blur
and noise) with Wan et al. 2020's (blur, noise, low resolution and JPEG, each with p = 0.7 in a
random order) and adds what real prints show: crack networks and crazing, holes, flaking,
paper showing through, folds, halftone screens, stains, mould, silvering, fading, vignetting
and paper texture. The kinds live in three modules: ``physical`` (damage to the print, with a
mask), ``capture`` (camera and scanner) and ``ageing`` (the print's slow changes).

Damage is drawn as on a whole scan: ``scan_crop`` picks a scan size (512-4000 px long side) and
a window of it, and defect sizes follow the scan, so training sees 1 px dust on small scans and
15 px cracks on large ones. Every operation ``op(img, rng, cfg, win)`` draws all its randomness
from the explicit ``np.random.Generator``: a seed reproduces a sample bit for bit and
data-loader workers never share hidden global state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pikfix.training.degradation import ageing, capture, physical
from pikfix.training.degradation.ageing import (
    colour_cast,
    fade,
    mould,
    paper_texture,
    silvering,
    vignette,
    water_stain,
)
from pikfix.training.degradation.capture import (
    defocus_blur,
    film_grain,
    gaussian_blur,
    gaussian_noise,
    halftone,
    jpeg,
    low_resolution,
    motion_blur,
    salt_and_pepper,
    speckle_noise,
)
from pikfix.training.degradation.common import Masked, Window, resize_channels, to_linear, to_srgb
from pikfix.training.degradation.config import DEFAULT_CONFIG, DEFECT_REFERENCE_SIZE, DegradationConfig
from pikfix.training.degradation.physical import (
    add_crack_network,
    add_cracks,
    add_crazing,
    add_creases,
    add_dust,
    add_flaking,
    add_folds,
    add_holes,
    add_noise_cracks,
    add_paper_mask,
    add_scratches,
    add_tears,
)

__all__ = [
    "DEFAULT_CONFIG", "DEFECT_REFERENCE_SIZE", "KINDS", "SCAN_LONG_SIDE", "Degraded", "DegradationConfig",
    "Window", "ageing", "capture", "degrade", "degrade_seeded", "physical", "scan_crop", "to_grey",
]

SCAN_LONG_SIDE = (512, 4000)  # long side of the simulated scans, px (drawn log-uniformly)

Op = Callable[..., Any]  # op(img, rng, cfg, win) -> image, or (image, mask) for physical damage
_NOISES: tuple[Op, ...] = (gaussian_noise, speckle_noise, salt_and_pepper)
_PHYSICAL: tuple[Op, ...] = (
    add_scratches, add_cracks, add_crack_network, add_crazing, add_noise_cracks, add_dust, add_tears,
    add_holes, add_flaking, add_paper_mask, add_creases, add_folds,
)
# Applied after defects and capture, in this order, each with its own probability.
_AGEING: tuple[tuple[str, Op], ...] = (
    ("p_stains", water_stain), ("p_mould", mould), ("p_silvering", silvering), ("p_fade", fade),
    ("p_cast", colour_cast), ("p_vignette", vignette), ("p_paper", paper_texture),
)


def _steps(cfg: DegradationConfig) -> list[tuple[float, Op | None]]:
    """Defects and capture steps that run in a random order; None is Wan et al.'s noise step."""
    return [
        (cfg.p_scratches, add_scratches), (cfg.p_cracks, add_cracks), (cfg.p_crack_network, add_crack_network),
        (cfg.p_crazing, add_crazing), (cfg.p_noise_cracks, add_noise_cracks), (cfg.p_dust, add_dust),
        (cfg.p_tears, add_tears), (cfg.p_holes, add_holes), (cfg.p_flaking, add_flaking),
        (cfg.p_paper_mask, add_paper_mask), (cfg.p_creases, add_creases), (cfg.p_folds, add_folds),
        (cfg.p_grain, film_grain), (cfg.p_blur, gaussian_blur), (cfg.p_defocus, defocus_blur),
        (cfg.p_motion, motion_blur), (cfg.p_noise, None), (cfg.p_lowres, low_resolution),
        (cfg.p_jpeg, jpeg), (cfg.p_halftone, halftone),
    ]


# Every operation by name, for `pikfix degrade --kind` previews.
KINDS: dict[str, Op] = {op.__name__: op for _, op in _steps(DEFAULT_CONFIG) if op is not None}
KINDS.update({op.__name__: op for op in _NOISES})
KINDS.update({op.__name__: op for _, op in _AGEING})


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """CIE-consistent grey: linear-light luminance Y = 0.2126 R + 0.7152 G + 0.0722 B, sRGB-encoded.

    A grey pixel g = sRGB(Y) has exactly the CIE L of the colour pixel, so for an undamaged
    photo the degraded input's L equals the restoration target's L (paper: the net works on L).
    ITU-R 601 luma of the sRGB values (``common.luma``, used only to modulate effects) would not.
    """
    y = to_linear(rgb) @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    return to_srgb(y)


@dataclass
class Degraded:
    """One synthetic old photo: the damaged grey image, where local defects hit, and what ran."""

    grey: np.ndarray  # H x W float32 in [0, 1]
    mask: np.ndarray  # H x W float32 in [0, 1]; 1 where a local defect destroyed the pixel
    ops: list[str]  # names of the applied operations, in order


def apply_kind(name: str, img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG,
               win: Window | None = None) -> Masked:
    """Run one named kind; (image, mask) for every kind, the mask empty for non-physical ones."""
    out = KINDS[name](img, rng, cfg, win)
    return out if isinstance(out, tuple) else (out, np.zeros(img.shape[:2], dtype=np.float32))


def degrade(
    rgb: np.ndarray, rng: np.random.Generator, config: DegradationConfig | None = None, win: Window | None = None
) -> Degraded:
    """Damage an H x W x 3 float RGB photo in [0, 1] into a synthetic old grey photo.

    Physical defects and capture defects run in a random order, each with its own probability
    (Wan et al.: blur, noise, low resolution and JPEG each with p = 0.7); then the print ages
    (stains, mould, silvering, fade, cast, vignette, paper texture, in that order); then
    ``to_grey``. ``win`` places the image in a larger scan (``scan_crop``); by default the image
    is the whole scan. ``rgb`` is never modified; the same generator state gives identical output.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB array, got shape {rgb.shape}")
    cfg = DEFAULT_CONFIG if config is None else config
    win = Window.whole(rgb) if win is None else win
    img = np.clip(rgb, 0.0, 1.0).astype(np.float32)  # a new array: the caller's stays untouched
    mask = np.zeros(img.shape[:2], dtype=np.float32)
    ops: list[str] = []
    steps = _steps(cfg)
    for index in rng.permutation(len(steps)):
        probability, op = steps[index]
        if rng.random() >= probability:
            continue
        if op is None:
            op = _NOISES[int(rng.integers(len(_NOISES)))]
        if op in _PHYSICAL:
            img, op_mask = op(img, rng, cfg, win)
            mask = np.maximum(mask, op_mask)
        else:
            img = op(img, rng, cfg, win)
        ops.append(op.__name__)
    for name, op in _AGEING:
        if rng.random() < getattr(cfg, name):
            img = op(img, rng, cfg, win)
            ops.append(op.__name__)
    return Degraded(grey=to_grey(img), mask=mask, ops=ops)


def degrade_seeded(rgb: np.ndarray, seed: int, config: DegradationConfig | None = None) -> Degraded:
    """``degrade`` with a fresh generator from ``seed``: one seed, one reproducible sample."""
    return degrade(rgb, np.random.default_rng(seed), config)


def scan_crop(
    photo: np.ndarray, crop: int, rng: np.random.Generator, long_side: tuple[float, float] = SCAN_LONG_SIDE
) -> tuple[np.ndarray, Window]:
    """A random ``crop`` x ``crop`` window of ``photo`` (H, W, 3) as scanned at a random size.

    The scan's long side is drawn log-uniformly in ``long_side`` (raised so the scan's shorter
    side holds the crop); the window is resampled from the photo (area-filtered when the scan
    is smaller, bicubic when larger), and the returned ``Window`` tells ``degrade`` where it lies.
    """
    h, w = photo.shape[:2]
    lo = max(long_side[0], crop * max(h, w) / min(h, w))
    hi = max(lo, long_side[1])
    factor = math.exp(rng.uniform(math.log(lo), math.log(hi))) / max(h, w)
    scan_h, scan_w = max(crop, round(h * factor)), max(crop, round(w * factor))
    top, left = int(rng.integers(scan_h - crop + 1)), int(rng.integers(scan_w - crop + 1))
    fy, fx = scan_h / h, scan_w / w  # per axis: rounding makes them differ slightly
    box = (left / fx, top / fy, min(w, (left + crop) / fx), min(h, (top + crop) / fy))
    window = resize_channels(photo, (crop, crop), Image.Resampling.BICUBIC, box)
    return np.clip(window, 0.0, 1.0), Window(scan_h, scan_w, float(top), float(left))
