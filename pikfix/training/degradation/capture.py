"""Capture and scanning defects: film grain, blurs, noise, low resolution, JPEG and halftone screens.

Each operation ``op(img, rng, cfg, win)`` returns the damaged image; these defects are in pixels
of the image as given (the camera, enlarger or scanner worked at that resolution), so ``win``
is accepted for a uniform signature and not needed.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from pikfix.training.degradation.common import (
    Window,
    blur,
    correlate_2d,
    luma,
    randint,
    resize_channels,
    uniform,
    unit,
)
from pikfix.training.degradation.config import DEFAULT_CONFIG, DegradationConfig


def film_grain(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Clumpy (blurred) monochrome noise, strongest in mid-tones as with silver grain."""
    h, w = img.shape[:2]
    grain = blur(rng.standard_normal((h, w), dtype=np.float32), uniform(rng, cfg.grain_size))
    grain /= max(float(grain.std()), 1e-6)  # blurring shrinks the spread; restore unit std
    brightness = np.clip(luma(img), 0.0, 1.0)
    amplitude = uniform(rng, cfg.grain_strength) * 2.0 * np.sqrt(brightness * (1.0 - brightness))
    return np.clip(img + (amplitude * grain)[..., None], 0.0, 1.0)


def gaussian_blur(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Out-of-focus or soft lens: separable Gaussian, sigma from ``blur_sigma``."""
    return blur(img, uniform(rng, cfg.blur_sigma))


def defocus_blur(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Lens defocus: a disk kernel (anti-aliased edge), sharper-edged bokeh than a Gaussian."""
    radius = uniform(rng, cfg.defocus_radius)
    r = math.ceil(radius + 0.5)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0).astype(np.float32)
    return correlate_2d(img, kernel / kernel.sum())


def motion_blur(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Camera shake: a line kernel of random length and angle (anti-aliased by distance to the line)."""
    length = uniform(rng, cfg.motion_length)
    half = unit(rng.uniform(0.0, math.pi)) * length / 2
    r = math.ceil(length / 2 + 1)
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    # Distance from each tap to the segment -half..half.
    t = np.clip((x * half[0] + y * half[1]) / (half @ half), -1.0, 1.0)
    distance = np.hypot(x - t * half[0], y - t * half[1])
    kernel = np.clip(1.0 - distance, 0.0, 1.0).astype(np.float32)
    return correlate_2d(img, kernel / kernel.sum())


def gaussian_noise(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Additive sensor/scanner noise, independent per channel (Wan et al.)."""
    sigma = uniform(rng, cfg.noise_sigma)
    return np.clip(img + sigma * rng.standard_normal(img.shape, dtype=np.float32), 0.0, 1.0)


def speckle_noise(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Multiplicative noise: stronger in bright areas (Wan et al.)."""
    sigma = uniform(rng, cfg.noise_sigma)
    return np.clip(img * (1.0 + sigma * rng.standard_normal(img.shape, dtype=np.float32)), 0.0, 1.0)


def salt_and_pepper(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Isolated black and white pixels (Wan et al.)."""
    h, w = img.shape[:2]
    hit = rng.random((h, w)) < uniform(rng, cfg.salt_pepper_amount)
    salt = rng.random((h, w)) < 0.5
    return np.where(hit[..., None], salt[..., None].astype(np.float32), img)


def low_resolution(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Shrink each axis by its own factor and enlarge back (nearest or bilinear), as Wan et al."""
    h, w = img.shape[:2]
    small = (max(1, round(w * uniform(rng, cfg.lowres_scale))), max(1, round(h * uniform(rng, cfg.lowres_scale))))
    up = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    down = resize_channels(img, small, Image.Resampling.BICUBIC)
    return np.clip(resize_channels(down, (w, h), up), 0.0, 1.0)


def jpeg(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """Round-trip through an in-memory JPEG: blocking and ringing, as on web copies of old photos."""
    quality = randint(rng, cfg.jpeg_quality)
    buffer = io.BytesIO()
    Image.fromarray(np.round(img * 255.0).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0


def halftone(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> np.ndarray:
    """A printed reproduction: an amplitude-modulated dot screen at a random angle, dots growing
    with darkness, anti-aliased, then slightly softened as a scanner sees it."""
    h, w = img.shape[:2]
    period = uniform(rng, cfg.halftone_period)
    angle = rng.uniform(0.0, math.pi / 2)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (x * math.cos(angle) + y * math.sin(angle)) * (2 * math.pi / period)
    v = (-x * math.sin(angle) + y * math.cos(angle)) * (2 * math.pi / period)
    screen = 0.5 + 0.25 * (np.cos(u) + np.cos(v))  # in [0, 1], a dot lattice
    ink = np.clip(luma(img), 0.0, 1.0)
    printed = np.clip((ink - screen) * period + 0.5, 0.0, 1.0)  # white where lighter than the screen
    tone = blur(printed, rng.uniform(0.3, 0.8))
    gain = tone / np.maximum(ink, 1e-3)  # keep the colours' ratios: the screen changes brightness only
    return np.clip(img * gain[..., None], 0.0, 1.0).astype(np.float32)
