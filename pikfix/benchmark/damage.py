"""Evaluation damage recipes, written independently of the training recipe.

A model tuned to its own synthetic damage looks better on it than it is, so the benchmark
damages photos with code that shares nothing with ``pikfix.training.degradation``: other
shapes (midpoint-displacement cracks, sinusoidal scratches, blotchy specks, Gaussian spots),
other tone curves (a gamma and contrast curve instead of linear black/white points), other
noise (signal-dependent Poisson-Gaussian), other blur (box) and its own JPEG settings.

Recipes, each a function of (clean grey photo, seed):

* ``eval``: fading and low contrast, blur, noise, JPEG, scratches, dust and spots;
* ``cracks``: cracks only, 3-15 px wide (the scan-resolution test at 2048 px);
* ``clean``: nothing (a restorer should leave the photo as it is);
* ``eval-no-local``, ``eval-no-fade``, ``eval-no-blur``, ``eval-no-noise`` (noise and JPEG):
  ``eval`` with one kind of damage left out, to see what each costs a restorer. The step left
  out still draws its random numbers, so every other step is drawn as in ``eval``.

Sizes are relative to the photo's long side (given for 512 px), so a 2048 px photo shows
defects four times as wide. The mask marks pixels a local defect changed by more than 2 %.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image, ImageDraw

EVAL_STEPS = ("local", "fade", "blur", "noise")  # what an ``eval-no-<step>`` recipe leaves out
RECIPES = ("eval", *(f"eval-no-{step}" for step in EVAL_STEPS), "cracks", "clean")
MASK_CHANGE = 0.02


@dataclass
class Damaged:
    """A damaged grey photo (H, W) in [0, 1] and its local-defect mask (H, W) bool."""

    grey: np.ndarray
    mask: np.ndarray


def _midpoint_crack(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, roughness: float, depth: int) -> np.ndarray:
    """Points of a fractal crack from ``a`` to ``b``: each segment's midpoint pushed sideways."""
    points = [a, b]
    for level in range(depth):
        new = [points[0]]
        for p, q in zip(points[:-1], points[1:]):
            d = q - p
            normal = np.array([-d[1], d[0]])
            new += [(p + q) / 2 + normal * rng.normal(0.0, roughness / 2**0.5), q]
        points = new
        roughness *= 0.6
    return np.array(points)


def _draw_cracks(
    img: np.ndarray, rng: np.random.Generator, count: int, width: tuple[float, float]
) -> np.ndarray:
    """Draw ``count`` cracks (some forked) with widths in px; returns the damaged image."""
    h, w = img.shape
    layer = Image.new("F", (w, h), 0.0)
    level = Image.new("F", (w, h), 0.0)
    da, dl = ImageDraw.Draw(layer), ImageDraw.Draw(level)
    for _ in range(count):
        a = rng.uniform((0, 0), (w, h))
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.3, 0.9) * max(h, w)
        b = a + length * np.array([math.cos(angle), math.sin(angle)])
        path = _midpoint_crack(rng, a, b, 0.25, 7)
        bright = rng.random() < 0.7
        value = rng.uniform(0.85, 1.0) if bright else rng.uniform(0.0, 0.15)
        opacity = rng.uniform(0.8, 1.0)
        widths = [rng.uniform(*width)]
        segments = [path]
        if rng.random() < 0.5:  # a fork from a random point
            i = int(rng.integers(1, len(path) - 1))
            tip = path[i] + 0.4 * length * np.array([math.cos(angle + 0.8), math.sin(angle + 0.8)])
            segments.append(_midpoint_crack(rng, path[i], tip, 0.25, 6))
            widths.append(widths[0] * 0.6)
        for seg, wd in zip(segments, widths):
            xy = [tuple(p) for p in seg.tolist()]
            da.line(xy, fill=opacity, width=max(1, round(wd)), joint="curve")
            dl.line(xy, fill=opacity * value, width=max(1, round(wd)), joint="curve")
    alpha = np.asarray(layer)
    return np.clip(img * (1 - alpha) + np.asarray(level), 0.0, 1.0)


def _scratches(img: np.ndarray, rng: np.random.Generator, unit: float) -> np.ndarray:
    """Long near-straight scratches with a sinusoidal wobble, anti-aliased by distance."""
    h, w = img.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = img.copy()
    for _ in range(int(rng.integers(1, 4))):
        theta = rng.uniform(0, math.pi)
        c, s = math.cos(theta), math.sin(theta)
        offset = rng.uniform(-0.4, 0.4) * max(h, w)
        along = (x - w / 2) * c + (y - h / 2) * s
        across = -(x - w / 2) * s + (y - h / 2) * c - offset
        across += rng.uniform(1, 4) * unit * np.sin(along / (rng.uniform(40, 120) * unit) + rng.uniform(0, 6))
        half = rng.uniform(0.5, 1.5) * unit
        extent = rng.uniform(0.3, 1.0) * max(h, w) / 2
        alpha = np.clip(half + 0.5 - np.abs(across), 0, 1) * (np.abs(along - rng.uniform(-0.3, 0.3) * w) < extent)
        value = 0.95 if rng.random() < 0.8 else 0.08
        out = out * (1 - alpha * 0.9) + alpha * 0.9 * value
    return out


def _specks(img: np.ndarray, rng: np.random.Generator, unit: float) -> np.ndarray:
    """Irregular dust specks (thresholded blurred noise blobs) and soft Gaussian spots."""
    h, w = img.shape
    out = img.copy()
    count = int(rng.integers(10, 60) * h * w / 512**2)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(count):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = unit * rng.uniform(0.7, 2.5)
        y0, y1, x0, x1 = int(max(0, cy - 3 * r)), int(min(h, cy + 3 * r + 1)), int(max(0, cx - 3 * r)), int(min(w, cx + 3 * r + 1))
        if y0 >= y1 or x0 >= x1:
            continue
        d = np.hypot(x[y0:y1, x0:x1] - cx, y[y0:y1, x0:x1] - cy) / r
        jag = 1 + 0.35 * np.sin(5 * np.arctan2(y[y0:y1, x0:x1] - cy, x[y0:y1, x0:x1] - cx) + rng.uniform(0, 6))
        alpha = np.clip((jag - d) * 2, 0, 1)
        value = 0.05 if rng.random() < 0.6 else 0.97
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + alpha * value
    for _ in range(int(rng.integers(0, 4))):  # soft spots (mould, stains)
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), unit * rng.uniform(4, 12)
        alpha = 0.5 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        out = out * (1 - alpha) + alpha * 0.2
    return out


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1
    padded = np.pad(img, radius, mode="edge")
    c = np.cumsum(np.cumsum(padded, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im, dtype=np.float32) / 255.0


def _eval_recipe(grey: np.ndarray, rng: np.random.Generator, leave_out: str | None = None) -> Damaged:
    """``leave_out`` (one of ``EVAL_STEPS``) skips that step but draws its random numbers."""
    h, w = grey.shape
    unit = max(h, w) / 512
    img = grey.astype(np.float32)
    local = img.copy()
    local = _scratches(local, rng, unit) if rng.random() < 0.7 else local
    local = _specks(local, rng, unit) if rng.random() < 0.8 else local
    mask = np.abs(local - img) > MASK_CHANGE
    if leave_out != "local":
        img = local
    # Fading: gamma and contrast towards grey (not the training recipe's linear black/white points).
    if rng.random() < 0.8:
        gamma = rng.uniform(0.7, 1.4)
        contrast = rng.uniform(0.55, 0.9)
        offset = rng.uniform(-0.05, 0.08)
        if leave_out != "fade":
            img = 0.5 + (np.power(img, gamma) - 0.5) * contrast + offset
    if rng.random() < 0.5:
        radius = int(rng.integers(1, 3))
        if leave_out != "blur":
            img = _box_blur(img, radius)
    if rng.random() < 0.7:  # Poisson-Gaussian noise, stronger in highlights
        sigma = rng.uniform(0.01, 0.04)
        noise = rng.normal(0, 1, img.shape).astype(np.float32)
        if leave_out != "noise":
            img = img + noise * np.sqrt(sigma**2 + 0.02 * np.clip(img, 0, 1) * sigma)
    img = np.clip(img, 0, 1)
    if rng.random() < 0.6:
        quality = int(rng.integers(30, 80))
        if leave_out != "noise":
            img = _jpeg(img, quality)
    return Damaged(np.clip(img, 0, 1).astype(np.float32), mask)


def _cracks_recipe(grey: np.ndarray, rng: np.random.Generator) -> Damaged:
    h, w = grey.shape
    unit = max(h, w) / 2048
    img = grey.astype(np.float32)
    damaged = _draw_cracks(img, rng, int(rng.integers(2, 6)), (3 * unit, 15 * unit))
    return Damaged(damaged.astype(np.float32), np.abs(damaged - img) > MASK_CHANGE)


def _clean_recipe(grey: np.ndarray, rng: np.random.Generator) -> Damaged:
    return Damaged(grey.astype(np.float32).copy(), np.zeros(grey.shape, dtype=bool))


_RECIPES: dict[str, Callable[[np.ndarray, np.random.Generator], Damaged]] = {
    "eval": _eval_recipe, **{f"eval-no-{step}": partial(_eval_recipe, leave_out=step) for step in EVAL_STEPS},
    "cracks": _cracks_recipe, "clean": _clean_recipe,
}


def damage(grey: np.ndarray, recipe: str, seed: int) -> Damaged:
    """Damage a clean grey photo (H, W) in [0, 1] (L / 100) with an evaluation recipe."""
    if recipe not in _RECIPES:
        raise ValueError(f"unknown damage recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    return _RECIPES[recipe](grey, np.random.default_rng(seed))
