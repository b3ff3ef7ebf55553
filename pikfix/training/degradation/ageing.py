"""Ageing of the print: water stains, mould, silvering, fading, casts, vignetting, paper texture.

Restoration must undo what changes the luminance (stains, mould, silvering, fading and low
contrast, the darkening of yellowed prints, vignetting, paper texture): its target is the
clean photo's L. A colour cast is hue only (``colour_cast`` keeps each pixel's luminance), so
it never asks the net to relight a photo; a yellowed print's loss of brightness is modelled by
``fade`` (its white point). Each operation ``op(img, rng, cfg, win)`` returns the aged image.
"""

from __future__ import annotations

import numpy as np

from pikfix.training.degradation.common import (
    Window,
    blur,
    luma,
    near_window,
    to_linear,
    to_srgb,
    uniform,
    value_noise,
    window_of,
)
from pikfix.training.degradation.config import DEFAULT_CONFIG, DegradationConfig

# Tints of aged prints, R > G > B: a cast is a random mix of the two.
_SEPIA = np.array([1.0, 0.80, 0.58], dtype=np.float32)
_YELLOW = np.array([1.0, 0.95, 0.70], dtype=np.float32)
_LINEAR_Y = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def water_stain(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """A dried water stain: a blotch slightly darkened inside, with a darker tide line at its edge."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    radius = rng.uniform(0.05, 0.3) * win.long_side
    cx, cy = near_window(rng, h, w, margin=0.5 * radius)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    wobble = 0.25 * radius * value_noise(h, w, max(4.0, 0.3 * radius), rng, octaves=2)
    inside = (radius + wobble) - np.hypot(x - cx, y - cy)  # > 0 inside, px to the edge
    ring_width = max(1.5, rng.uniform(0.01, 0.04) * radius)
    tide = np.exp(-0.5 * (inside / ring_width) ** 2)
    darkening = rng.uniform(0.03, 0.12) * np.clip(inside / ring_width, 0.0, 1.0) + rng.uniform(0.1, 0.3) * tide
    return np.clip(img * (1.0 - darkening)[..., None], 0.0, 1.0).astype(np.float32)


def mould(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Mould or foxing: clusters of small spots with fuzzy halos, dark or pale."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    spots = np.zeros((h, w), dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = near_window(rng, h, w)
        spread = rng.uniform(0.02, 0.1) * win.long_side
        for _ in range(int(rng.integers(10, 60))):
            sx, sy = int(cx + rng.normal(0.0, spread)), int(cy + rng.normal(0.0, spread))
            if 0 <= sx < w and 0 <= sy < h:
                spots[sy, sx] += rng.uniform(0.5, 1.0)
    halo = blur(spots, max(0.7, rng.uniform(0.2, 0.8) * win.scale))
    halo = np.clip(halo / max(float(halo.max()), 1e-6) * rng.uniform(1.0, 3.0), 0.0, 1.0)
    level = rng.uniform(0.1, 0.35) if rng.random() < 0.7 else rng.uniform(0.7, 0.9)
    return np.clip(img * (1.0 - halo[..., None]) + level * halo[..., None], 0.0, 1.0).astype(np.float32)


def silvering(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Silver mirroring: the darks of an old gelatin print turn into a grey sheen, strongest
    towards the scan's edges."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    y = (np.arange(h, dtype=np.float32) + win.top) / max(win.scan_h - 1, 1)
    x = (np.arange(w, dtype=np.float32) + win.left) / max(win.scan_w - 1, 1)
    edge = np.maximum(np.abs(2 * y - 1)[:, None], np.abs(2 * x - 1)[None, :]) ** 2  # 0 centre, 1 edges
    dark = (1.0 - np.clip(luma(img), 0.0, 1.0)) ** 2
    patchy = np.clip(0.6 + 0.4 * value_noise(h, w, max(8.0, 0.1 * win.long_side), rng, octaves=2), 0.0, 1.0)
    sheen = rng.uniform(0.2, 0.5) * edge * dark * patchy
    return np.clip(img + sheen[..., None], 0.0, 1.0).astype(np.float32)


def fade(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Faded print: the tone curve bends (mid-tones lighten or darken, as silver images fade
    unevenly), blacks lift to grey and whites dim (also a yellowed print's darkening), so
    contrast drops."""
    curve = np.float32(uniform(rng, cfg.fade_curve))
    black = uniform(rng, cfg.fade_black)
    white = max(black, uniform(rng, cfg.fade_white))
    return black + (white - black) * np.power(np.clip(img, 0.0, 1.0), curve)


def colour_cast(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Sepia toning or yellowing, hue only: blend towards a warm tint (R > G > B) of each pixel,
    then rescale so its linear luminance (hence its CIE L and its grey) is unchanged."""
    tint = _SEPIA + (_YELLOW - _SEPIA) * np.float32(rng.random())
    strength = np.float32(uniform(rng, cfg.cast_strength))
    toned = (1.0 - strength) * img + strength * luma(img)[..., None] * tint
    before, after = to_linear(img) @ _LINEAR_Y, to_linear(toned) @ _LINEAR_Y
    scaled = to_linear(toned) * (before / np.maximum(after, 1e-6))[..., None]
    # Scaling can push a saturated channel past 1; those few pixels keep the untoned colour.
    out = np.where((scaled.max(axis=-1, keepdims=True) > 1.0), to_linear(img), scaled)
    return to_srgb(out)


def vignette(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Lens fall-off: darkening that grows with the distance from a slightly off-centre point of
    the scan (a window shows its part of it)."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    cy, cx = (0.5 + rng.normal(0.0, 0.05, 2)).tolist()
    y = ((np.arange(h, dtype=np.float32) + win.top) / max(win.scan_h - 1, 1) - cy)[:, None]
    x = ((np.arange(w, dtype=np.float32) + win.left) / max(win.scan_w - 1, 1) - cx)[None, :]
    radius_sq = (x * x + y * y) * 2.0  # about 1 at the corners
    gain = np.clip(1.0 - uniform(rng, cfg.vignette_strength) * radius_sq, 0.0, 1.0)
    return img * gain[..., None]


def paper_texture(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Uneven paper and blotchy ageing: a smooth random gain field, features a quarter and a
    sixteenth of the scan in size, multiplied in."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    field = value_noise(h, w, win.long_side / 4, rng, octaves=3)
    gain = 1.0 + uniform(rng, cfg.paper_strength) * field
    return np.clip(img * gain[..., None], 0.0, 1.0)
