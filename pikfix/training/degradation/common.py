"""Helpers shared by the damage kinds: sampling, filters, a drawing canvas, noise fields and the
``Window`` that places a crop inside its whole scan."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from pikfix.training.degradation.config import DEFECT_REFERENCE_SIZE, DegradationConfig

Masked = tuple[np.ndarray, np.ndarray]  # (damaged image, damage mask) from a local defect


@dataclass(frozen=True)
class Window:
    """Where the image being damaged lies in the whole scan, in scan pixels.

    Damage is drawn as on the whole scan: defect sizes follow the scan's size (``scale``) and
    position-dependent effects (vignette, tears) its geometry, while only the window's pixels
    are computed. ``Window.whole(img)`` says the image is the whole scan.
    """

    scan_h: int
    scan_w: int
    top: float = 0.0
    left: float = 0.0

    @classmethod
    def whole(cls, img: np.ndarray) -> "Window":
        return cls(img.shape[0], img.shape[1])

    @property
    def scale(self) -> float:
        """Local-defect size factor: the scan's shorter side over ``DEFECT_REFERENCE_SIZE``."""
        return min(self.scan_h, self.scan_w) / DEFECT_REFERENCE_SIZE

    @property
    def long_side(self) -> int:
        return max(self.scan_h, self.scan_w)


def window_of(img: np.ndarray, win: Window | None) -> Window:
    return Window.whole(img) if win is None else win


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def randint(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1], endpoint=True))


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian truncated at 3 sigma; sigma near 0 gives the identity [1]."""
    radius = math.ceil(3.0 * sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    return (k / k.sum()).astype(np.float32)


def correlate_axis(img: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """1-D filter along ``axis`` (0 or 1) as a sum of shifted copies of a mirror-padded image.

    Mirroring (not zero padding) keeps borders from darkening. A banded sum costs
    O(pixels x taps), cheap for the small kernels used here, and needs no scipy.
    """
    radius = len(kernel) // 2
    pad = [(0, 0)] * img.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(img, pad, mode="reflect")
    n = img.shape[axis]
    out = np.zeros_like(img)
    for i, weight in enumerate(kernel):
        shifted = padded[i : i + n] if axis == 0 else padded[:, i : i + n]
        out += weight * shifted
    return out


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an H x W or H x W x C array."""
    kernel = gaussian_kernel(sigma)
    if len(kernel) == 1:
        return img.copy()
    return correlate_axis(correlate_axis(img, kernel, 0), kernel, 1)


def correlate_2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D filter with an odd-sized kernel, summing only its non-zero taps (disk and line kernels)."""
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(img, ((ry, ry), (rx, rx), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for dy, dx in zip(*np.nonzero(kernel)):
        out += kernel[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return out


def luma(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of sRGB values: a cheap brightness for modulating effects, not the output grey."""
    return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def resize_channels(
    img: np.ndarray, size: tuple[int, int], resample: Image.Resampling, box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """Resize each channel (of region ``box`` when given) as a float ('F') Pillow image, so no
    8-bit rounding is added."""
    planes = [Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32)) for c in range(img.shape[2])]
    return np.stack([np.asarray(plane.resize(size, resample, box=box)) for plane in planes], axis=-1)


class Canvas:
    """Opacity and premultiplied-level layers for drawing defects with Pillow.

    Where strokes overlap, the last one wins in both layers, so ``apply`` blends each damaged
    pixel towards exactly one stroke's level.
    """

    def __init__(self, height: int, width: int) -> None:
        self.alpha = Image.new("F", (width, height), 0.0)
        self.value = Image.new("F", (width, height), 0.0)
        self._draw_alpha = ImageDraw.Draw(self.alpha)
        self._draw_value = ImageDraw.Draw(self.value)

    def line(self, points: np.ndarray, width: int, opacity: float, level: float) -> None:
        xy = [tuple(p) for p in points.tolist()]
        self._draw_alpha.line(xy, fill=opacity, width=width, joint="curve")
        self._draw_value.line(xy, fill=opacity * level, width=width, joint="curve")

    def ellipse(self, box: tuple[float, float, float, float], opacity: float, level: float) -> None:
        self._draw_alpha.ellipse(box, fill=opacity)
        self._draw_value.ellipse(box, fill=opacity * level)

    def polygon(self, points: np.ndarray, opacity: float, level: float) -> None:
        xy = [tuple(p) for p in points.tolist()]
        self._draw_alpha.polygon(xy, fill=opacity)
        self._draw_value.polygon(xy, fill=opacity * level)

    def apply(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blend the drawn defects into ``img``; the mask marks the pixels they visibly changed."""
        alpha = np.asarray(self.alpha)
        out = np.clip(img * (1.0 - alpha)[..., None] + np.asarray(self.value)[..., None], 0.0, 1.0)
        return out, damage_mask(img, out)


def defect_look(rng: np.random.Generator, cfg: DegradationConfig) -> tuple[float, float]:
    """Opacity and level of one defect: mostly bright (lost emulsion), sometimes dark (dirt)."""
    opacity = uniform(rng, cfg.defect_opacity)
    dark = rng.random() < cfg.defect_dark_fraction
    level = uniform(rng, cfg.defect_dark_level if dark else cfg.defect_bright_level)
    return opacity, level


def draw_stroke(
    canvas: Canvas, points: np.ndarray, width: float, rng: np.random.Generator, cfg: DegradationConfig
) -> None:
    """Draw a polyline in a few pieces of different width, so strokes thin and thicken."""
    opacity, level = defect_look(rng, cfg)
    pieces = int(rng.integers(1, 5))
    bounds = np.linspace(0, len(points) - 1, pieces + 1).round().astype(int)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        piece = width * rng.uniform(0.6, 1.4)
        # Thinner than a pixel (a small scan): one pixel wide, proportionally fainter.
        canvas.line(points[start : stop + 1], max(1, round(piece)), opacity * min(1.0, piece), level)


def bezier(control: np.ndarray, n: int) -> np.ndarray:
    """``n`` points on the Bezier curve with the given (k, 2) control points (Bernstein form)."""
    degree = len(control) - 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    return sum(math.comb(degree, i) * t**i * (1 - t) ** (degree - i) * control[i] for i in range(degree + 1))


def unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def near_window(rng: np.random.Generator, h: int, w: int, margin: float = 0.0) -> np.ndarray:
    """A random (x, y) point in the h x w window grown by ``margin`` on every side.

    Defects are placed where they meet the window, so a small crop of a large scan is as
    likely to show damage as a whole small photo.
    """
    return rng.uniform((-margin, -margin), (w + margin, h + margin))


def value_noise(h: int, w: int, cell: float, rng: np.random.Generator, octaves: int = 3) -> np.ndarray:
    """Smooth random field (H, W), mean 0 and std about 1 over a large area: bicubic value noise,
    ``octaves`` layers each half the cell size and half the weight. ``cell`` is the coarsest
    feature size in px. It is normalised by its expected spread, not by the window's own, so a
    window much smaller than a cell sees a nearly flat field, as a crop of a large scan would."""
    out = np.zeros((h, w), dtype=np.float32)
    for octave in range(octaves):
        size = max(cell / 2**octave, 1.0)
        grid = (math.ceil(w / size) + 4, math.ceil(h / size) + 4)
        coarse = Image.fromarray(rng.standard_normal(grid[::-1], dtype=np.float32))
        # Upsample only the part of the lattice under the window (one cell = ``size`` px),
        # starting at a random point of its second cell.
        ox, oy = 1.0 + rng.random(), 1.0 + rng.random()
        box = (ox, oy, ox + w / size, oy + h / size)
        out += 0.5**octave * np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC, box=box))
    spread = _BICUBIC_NOISE_STD * math.sqrt(sum(0.25**o for o in range(octaves)))
    return out / np.float32(spread)


_BICUBIC_NOISE_STD = 0.81  # std of unit-normal lattice values after bicubic upsampling (measured)


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear light (IEC 61966-2-1)."""
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055).astype(np.float32)


def blend(img: np.ndarray, alpha: np.ndarray, level: np.ndarray | float) -> Masked:
    """Blend ``img`` towards ``level`` with opacity ``alpha`` (H, W), with its damage mask."""
    out = np.clip(img * (1.0 - alpha)[..., None] + (alpha * level)[..., None], 0.0, 1.0).astype(np.float32)
    return out, damage_mask(img, out)


MASK_CHANGE = 0.02  # a defect pixel is marked damaged when it changed by more than this (5 / 255)


def damage_mask(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """1 where a defect visibly changed the pixel: a faint, invisible stroke destroys nothing,
    and a detector trained to find it would learn to see damage that is not there."""
    return (np.abs(after - before).max(axis=-1) > MASK_CHANGE).astype(np.float32)
