"""Synthetic old-photo damage: turns a clean colour photo into a damaged grey one.

Pik-Fix trains its restoration sub-net on pairs (damaged grey photo, clean L), and no large
set of real old photos with clean originals exists, so the damage is simulated (paper 4.1).
The recipe combines Pik-Fix's (cracks and dust, white polygons at the border, Gaussian blur
and noise) with Wan et al. 2020's (blur, noise, low resolution and JPEG, each with p = 0.7 in a
random order) and adds what real prints also show: fading, sepia/yellow casts, film grain,
vignetting, paper texture, folds and spots.

Every operation is a small pure function ``op(img, rng, cfg)`` on a float32 H x W x 3 image in
[0, 1] that draws all its randomness from the explicit ``np.random.Generator``, so a seed
reproduces a sample bit for bit and data-loader workers never share hidden global state.
Local defects (scratches, cracks, dust, tears, creases) also return a damage mask, which
tells a restoration model (or a loss) where pixels were destroyed rather than merely degraded.

Sizes of local defects (widths, radii, dust counts) are given for a 256-pixel image, the
training crop size, and grow with larger images so a full scan shows damage of a visible size.
Capture defects (blur sigma, noise) are in pixels of the image as given, as in the recipes.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pikfix.config import reject_unknown_keys

DEFECT_REFERENCE_SIZE = 256  # local-defect sizes in the config are pixels at this image size

Masked = tuple[np.ndarray, np.ndarray]  # (damaged image, damage mask) from a local defect

# Tints of aged prints, R > G > B: a cast is a random mix of the two.
_SEPIA = np.array([1.0, 0.80, 0.58], dtype=np.float32)
_YELLOW = np.array([1.0, 0.95, 0.70], dtype=np.float32)


# --------------------------------------------------------------------------- configuration


def _prob(default: float) -> Any:
    return field(default=default, metadata={"kind": "prob"})


def _scalar(default: float, lower: float, upper: float) -> Any:
    return field(default=default, metadata={"kind": "scalar", "bounds": (lower, upper)})


def _range(default: tuple[float, float], lower: float, upper: float, integer: bool = False) -> Any:
    kind = "int_range" if integer else "range"
    return field(default=default, metadata={"kind": kind, "bounds": (lower, upper)})


def _is_number(value: Any, integer: bool = False) -> bool:
    # bool is an int subclass, but `true` in a JSON config is a mistake, not a 1.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _check_field(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Raise ValueError naming ``name`` if ``value`` breaks the rules in ``meta``."""
    kind = meta["kind"]
    if kind == "prob":
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: must be a probability in [0, 1], got {value!r}")
        return
    lower, upper = meta["bounds"]
    if kind == "scalar":
        if not _is_number(value) or not lower <= value <= upper:
            raise ValueError(f"{name}: must be a number in [{lower}, {upper}], got {value!r}")
        return
    integer = kind == "int_range"
    what = "integers" if integer else "numbers"
    if not (isinstance(value, tuple) and len(value) == 2 and all(_is_number(v, integer) for v in value)):
        raise ValueError(f"{name}: must be a pair [lo, hi] of {what}, got {value!r}")
    lo, hi = value
    if lo > hi:
        raise ValueError(f"{name}: lo > hi in {list(value)}")
    if lo < lower or hi > upper:
        raise ValueError(f"{name}: {list(value)} is outside [{lower}, {upper}]")


@dataclass(frozen=True)
class DegradationConfig:
    """Every parameter of the damage recipe; ``p_*`` are per-sample probabilities of an operation.

    Ranges are (lo, hi) pairs sampled uniformly (integer ranges include hi). The object is
    frozen and validated on construction so a recorded config always describes what ran.
    """

    # Local physical defects; each also writes the damage mask.
    p_scratches: float = _prob(0.5)
    scratch_count: tuple[int, int] = _range((1, 5), 0, 1000, integer=True)
    scratch_length: tuple[float, float] = _range((0.2, 1.0), 0.0, 2.0)  # fraction of the longer side
    scratch_width: tuple[float, float] = _range((1.0, 3.0), 0.5, 64.0)  # px at 256
    p_cracks: float = _prob(0.3)
    crack_count: tuple[int, int] = _range((1, 3), 0, 1000, integer=True)
    crack_length: tuple[float, float] = _range((0.1, 0.5), 0.0, 2.0)  # fraction of the longer side
    crack_width: tuple[float, float] = _range((1.0, 2.0), 0.5, 64.0)  # px at 256
    crack_branch_prob: float = _prob(0.4)  # chance that a crack has side branches
    p_dust: float = _prob(0.5)
    dust_count: tuple[int, int] = _range((3, 30), 0, 100_000, integer=True)  # per 256 x 256 pixels
    dust_radius: tuple[float, float] = _range((0.4, 2.0), 0.1, 64.0)  # px at 256; small ones dominate
    defect_dark_fraction: float = _prob(0.2)  # share of scratches/cracks/dust that are dark
    defect_opacity: tuple[float, float] = _range((0.5, 1.0), 0.0, 1.0)
    defect_bright_level: tuple[float, float] = _range((0.8, 1.0), 0.0, 1.0)
    defect_dark_level: tuple[float, float] = _range((0.0, 0.25), 0.0, 1.0)
    p_tears: float = _prob(0.2)
    tear_count: tuple[int, int] = _range((1, 3), 0, 100, integer=True)
    tear_max_area: float = _scalar(0.05, 0.0, 1.0)  # all tears together cover less than this fraction
    tear_protect_centre: float = _scalar(0.6, 0.0, 1.0)  # centred box (fraction of H and W) never torn
    p_creases: float = _prob(0.15)
    crease_count: tuple[int, int] = _range((1, 2), 0, 100, integer=True)
    crease_strength: tuple[float, float] = _range((0.05, 0.2), 0.0, 1.0)  # light/dark edge amplitude
    crease_width: tuple[float, float] = _range((1.0, 3.0), 0.5, 64.0)  # px at 256
    # Capture and scanning defects (Wan et al.: blur, noise, low resolution, JPEG with p = 0.7).
    p_grain: float = _prob(0.3)
    grain_strength: tuple[float, float] = _range((0.01, 0.05), 0.0, 1.0)  # std in mid-tones
    grain_size: tuple[float, float] = _range((0.5, 1.2), 0.0, 10.0)  # blur sigma of the grain, px
    p_blur: float = _prob(0.7)
    blur_sigma: tuple[float, float] = _range((0.0, 3.0), 0.0, 20.0)  # Pik-Fix's range, px
    p_defocus: float = _prob(0.1)
    defocus_radius: tuple[float, float] = _range((1.0, 3.0), 0.0, 20.0)  # px
    p_motion: float = _prob(0.1)
    motion_length: tuple[float, float] = _range((3.0, 9.0), 1.0, 50.0)  # px
    p_noise: float = _prob(0.7)  # then Gaussian, speckle or salt-and-pepper, equally likely
    noise_sigma: tuple[float, float] = _range((5 / 255, 50 / 255), 0.0, 1.0)  # Wan et al.
    salt_pepper_amount: tuple[float, float] = _range((0.0, 0.01), 0.0, 1.0)  # fraction of pixels
    p_lowres: float = _prob(0.7)
    lowres_scale: tuple[float, float] = _range((0.5, 1.0), 0.05, 1.0)  # per axis, Wan et al.
    p_jpeg: float = _prob(0.7)
    jpeg_quality: tuple[int, int] = _range((40, 100), 1, 100, integer=True)
    # Ageing of the print, applied after the defects in this fixed order.
    p_fade: float = _prob(0.5)
    fade_black: tuple[float, float] = _range((0.0, 0.2), 0.0, 1.0)  # new black point
    fade_white: tuple[float, float] = _range((0.8, 1.0), 0.0, 1.0)  # new white point
    p_cast: float = _prob(0.9)  # about 10 % of samples keep neutral tones
    cast_strength: tuple[float, float] = _range((0.3, 1.0), 0.0, 1.0)
    p_vignette: float = _prob(0.4)
    vignette_strength: tuple[float, float] = _range((0.1, 0.5), 0.0, 1.0)  # darkening at the corners
    p_paper: float = _prob(0.4)
    paper_strength: tuple[float, float] = _range((0.02, 0.08), 0.0, 1.0)  # std of the texture gain

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f.name, getattr(self, f.name), f.metadata)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (pairs become lists), e.g. for a checkpoint."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegradationConfig:
        """Build from a (partial) dict such as parsed JSON; unknown keys are an error, not ignored."""
        reject_unknown_keys(data, cls, "degradation config")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


DEFAULT_CONFIG = DegradationConfig()


# --------------------------------------------------------------------------- small helpers


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _randint(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1], endpoint=True))


def _defect_scale(img: np.ndarray) -> float:
    return min(img.shape[0], img.shape[1]) / DEFECT_REFERENCE_SIZE


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian truncated at 3 sigma; sigma near 0 gives the identity [1]."""
    radius = math.ceil(3.0 * sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    return (k / k.sum()).astype(np.float32)


def _correlate_axis(img: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
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


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an H x W or H x W x C array."""
    kernel = _gaussian_kernel(sigma)
    if len(kernel) == 1:
        return img.copy()
    return _correlate_axis(_correlate_axis(img, kernel, 0), kernel, 1)


def _correlate_2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D filter with an odd-sized kernel, summing only its non-zero taps (disk and line kernels)."""
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(img, ((ry, ry), (rx, rx), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for dy, dx in zip(*np.nonzero(kernel)):
        out += kernel[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return out


def _luma(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of sRGB values: a cheap brightness for modulating effects, not the output grey."""
    return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _resize_channels(img: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize each channel as a float ('F') Pillow image, so no 8-bit rounding is added."""
    planes = [Image.fromarray(np.ascontiguousarray(img[..., c])) for c in range(img.shape[2])]
    return np.stack([np.asarray(plane.resize(size, resample)) for plane in planes], axis=-1)


class _Canvas:
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

    def apply(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blend the drawn defects into ``img``; the mask is 1 wherever anything was drawn."""
        alpha = np.asarray(self.alpha)
        out = img * (1.0 - alpha)[..., None] + np.asarray(self.value)[..., None]
        return np.clip(out, 0.0, 1.0), (alpha > 0).astype(np.float32)


def _defect_look(rng: np.random.Generator, cfg: DegradationConfig) -> tuple[float, float]:
    """Opacity and level of one defect: mostly bright (lost emulsion), sometimes dark (dirt)."""
    opacity = _uniform(rng, cfg.defect_opacity)
    dark = rng.random() < cfg.defect_dark_fraction
    level = _uniform(rng, cfg.defect_dark_level if dark else cfg.defect_bright_level)
    return opacity, level


def _draw_stroke(
    canvas: _Canvas, points: np.ndarray, width: float, rng: np.random.Generator, cfg: DegradationConfig
) -> None:
    """Draw a polyline in a few pieces of different width, so strokes thin and thicken."""
    opacity, level = _defect_look(rng, cfg)
    pieces = int(rng.integers(1, 5))
    bounds = np.linspace(0, len(points) - 1, pieces + 1).round().astype(int)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        piece_width = max(1, round(width * rng.uniform(0.6, 1.4)))
        canvas.line(points[start : stop + 1], piece_width, opacity, level)


def _bezier(control: np.ndarray, n: int) -> np.ndarray:
    """``n`` points on the Bezier curve with the given (k, 2) control points (Bernstein form)."""
    degree = len(control) - 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    return sum(math.comb(degree, i) * t**i * (1 - t) ** (degree - i) * control[i] for i in range(degree + 1))


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


# --------------------------------------------------------------------------- local physical defects


def add_scratches(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> Masked:
    """Long smooth scratches: quadratic or cubic Bezier strokes of varying width and brightness."""
    h, w = img.shape[:2]
    scale = _defect_scale(img)
    canvas = _Canvas(h, w)
    for _ in range(_randint(rng, cfg.scratch_count)):
        length = _uniform(rng, cfg.scratch_length) * max(h, w)
        start = rng.uniform((0.0, 0.0), (w, h))
        direction = _unit(rng.uniform(0.0, 2 * math.pi))
        normal = np.array([-direction[1], direction[0]])
        inner = [start + direction * length * t + normal * rng.normal(0.0, 0.2 * length) for t in (0.33, 0.67)]
        control = np.array([start, *inner[: int(rng.integers(1, 3))], start + direction * length])
        points = _bezier(control, max(8, int(length / 3)))
        _draw_stroke(canvas, points, _uniform(rng, cfg.scratch_width) * scale, rng, cfg)
    return canvas.apply(img)


def _crack_path(rng: np.random.Generator, start: np.ndarray, angle: float, length: float, step: float) -> np.ndarray:
    """A jagged random walk: the heading wanders a little at every step, like a crack in emulsion."""
    n = max(2, int(length / step))
    headings = angle + np.cumsum(rng.normal(0.0, 0.35, n))
    steps = np.stack([np.cos(headings), np.sin(headings)], axis=1) * step
    return start + np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def add_cracks(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> Masked:
    """Jagged, thin cracks (random-walk polylines), some with side branches."""
    h, w = img.shape[:2]
    scale = _defect_scale(img)
    step = max(2.0, 4.0 * scale)
    canvas = _Canvas(h, w)
    for _ in range(_randint(rng, cfg.crack_count)):
        length = _uniform(rng, cfg.crack_length) * max(h, w)
        width = _uniform(rng, cfg.crack_width) * scale
        path = _crack_path(rng, rng.uniform((0.0, 0.0), (w, h)), rng.uniform(0.0, 2 * math.pi), length, step)
        _draw_stroke(canvas, path, width, rng, cfg)
        if rng.random() < cfg.crack_branch_prob:
            for _ in range(int(rng.integers(1, 4))):
                i = int(rng.integers(0, len(path) - 1))
                heading = math.atan2(*(path[i + 1] - path[i])[::-1])
                turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.2)
                branch = _crack_path(rng, path[i], heading + turn, length * rng.uniform(0.2, 0.5), step)
                _draw_stroke(canvas, branch, max(1.0, 0.7 * width), rng, cfg)
    return canvas.apply(img)


def add_dust(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> Masked:
    """Dust specks and spots: small ellipses, their count growing with the image area."""
    h, w = img.shape[:2]
    scale = _defect_scale(img)
    count = round(_randint(rng, cfg.dust_count) * h * w / DEFECT_REFERENCE_SIZE**2)
    lo, hi = cfg.dust_radius
    canvas = _Canvas(h, w)
    for _ in range(count):
        cx, cy = rng.uniform((0.0, 0.0), (w, h))
        # Cubing a uniform number makes most specks tiny and a few of them real spots.
        rx = (lo + (hi - lo) * rng.random() ** 3) * scale
        ry = rx * rng.uniform(0.6, 1.4)
        canvas.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), *_defect_look(rng, cfg))
    return canvas.apply(img)


def _tear_polygon(rng: np.random.Generator, depth_limit: float) -> np.ndarray:
    """A torn region in unit coordinates at the top-left corner or along the top edge.

    Vertices sit slightly outside the unit square so the tear reaches the border cleanly;
    ``depth_limit`` is the border band it should stay within (the caller clips anyway).
    """
    if rng.random() < 0.5:  # torn corner: a jagged cut from the top edge to the left edge
        a, b = rng.uniform(0.04, depth_limit, size=2)
        t = np.linspace(0.0, 1.0, 12)[1:-1]
        cut = np.stack([a * (1 - t), b * t], axis=1) + rng.normal(0.0, 0.012, (len(t), 2))
        return np.vstack([[-0.01, -0.01], [a, -0.01], cut, [-0.01, b]])
    length = rng.uniform(0.05, 0.25)
    depth = rng.uniform(0.02, min(0.1, depth_limit))
    x0 = rng.uniform(0.0, 1.0 - length)
    t = np.linspace(0.0, 1.0, 14)
    inward = depth * np.sin(math.pi * t) ** 0.7 + rng.normal(0.0, 0.15 * depth, len(t))
    cut = np.stack([x0 + length * t, np.clip(inward, -0.01, None)], axis=1)
    return np.vstack([[x0, -0.01], cut, [x0 + length, -0.01]])


def add_tears(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> Masked:
    """Torn corners and missing border pieces, filled pure white as Pik-Fix does.

    The centred box of ``tear_protect_centre`` (fraction of each side) is never touched, and a
    tear that would push the total area to ``tear_max_area`` or beyond is skipped, so the photo's
    subject survives as in the paper's recipe.
    """
    h, w = img.shape[:2]
    band = (1.0 - cfg.tear_protect_centre) / 2
    y0, y1, x0, x1 = round(band * h), round((1 - band) * h), round(band * w), round((1 - band) * w)
    budget = cfg.tear_max_area * h * w
    torn = np.zeros((h, w), dtype=bool)
    for _ in range(_randint(rng, cfg.tear_count)):
        # Place the canonical tear at any corner/edge by one of the 8 symmetries of the square.
        uv = _tear_polygon(rng, max(band, 0.05))
        if rng.random() < 0.5:
            uv = uv[:, ::-1]
        uv = np.where(rng.random(2) < 0.5, 1.0 - uv, uv)
        layer = Image.new("1", (w, h), 0)
        ImageDraw.Draw(layer).polygon([(u * w, v * h) for u, v in uv.tolist()], fill=1)
        candidate = torn | np.asarray(layer, dtype=bool)
        candidate[y0:y1, x0:x1] = False
        if candidate.sum() < budget:
            torn = candidate
    out = np.where(torn[..., None], np.float32(1.0), img)
    return out, torn.astype(np.float32)


def add_creases(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> Masked:
    """Folds: a long, slightly bent line across the photo with a light edge beside a dark one."""
    h, w = img.shape[:2]
    scale = _defect_scale(img)
    field_img = Image.new("F", (w, h), 0.0)
    draw = ImageDraw.Draw(field_img)
    for _ in range(_randint(rng, cfg.crease_count)):
        if rng.random() < 0.5:  # left edge to right edge
            ends = np.array([[0.0, rng.uniform(0.1, 0.9) * h], [w, rng.uniform(0.1, 0.9) * h]])
        else:  # top edge to bottom edge
            ends = np.array([[rng.uniform(0.1, 0.9) * w, 0.0], [rng.uniform(0.1, 0.9) * w, h]])
        direction = (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
        normal = np.array([-direction[1], direction[0]])
        bend = ends.mean(axis=0) + normal * rng.normal(0.0, 0.03 * max(h, w))
        points = _bezier(np.array([ends[0], bend, ends[1]]), 64)
        width = max(1.0, _uniform(rng, cfg.crease_width) * scale)
        strength = _uniform(rng, cfg.crease_strength)
        side = rng.choice([-1.0, 1.0])  # which edge catches the light
        for sign in (side, -side):
            offset = points + normal * sign * 0.5 * width
            draw.line([tuple(p) for p in offset.tolist()], fill=float(sign * strength), width=round(width))
    edges = np.asarray(field_img)
    mask = (edges != 0).astype(np.float32)
    out = img + _blur(edges, max(0.5, 0.5 * scale))[..., None]  # soften the drawn edges
    return np.clip(out, 0.0, 1.0), mask


# --------------------------------------------------------------------------- capture and scanning defects


def film_grain(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Clumpy (blurred) monochrome noise, strongest in mid-tones as with silver grain."""
    h, w = img.shape[:2]
    grain = _blur(rng.standard_normal((h, w), dtype=np.float32), _uniform(rng, cfg.grain_size))
    grain /= max(float(grain.std()), 1e-6)  # blurring shrinks the spread; restore unit std
    luma = np.clip(_luma(img), 0.0, 1.0)
    amplitude = _uniform(rng, cfg.grain_strength) * 2.0 * np.sqrt(luma * (1.0 - luma))
    return np.clip(img + (amplitude * grain)[..., None], 0.0, 1.0)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Out-of-focus or soft lens: separable Gaussian, sigma from ``blur_sigma``."""
    return _blur(img, _uniform(rng, cfg.blur_sigma))


def defocus_blur(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Lens defocus: a disk kernel (anti-aliased edge), sharper-edged bokeh than a Gaussian."""
    radius = _uniform(rng, cfg.defocus_radius)
    r = math.ceil(radius + 0.5)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0).astype(np.float32)
    return _correlate_2d(img, kernel / kernel.sum())


def motion_blur(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Camera shake: a line kernel of random length and angle (anti-aliased by distance to the line)."""
    length = _uniform(rng, cfg.motion_length)
    half = _unit(rng.uniform(0.0, math.pi)) * length / 2
    r = math.ceil(length / 2 + 1)
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    # Distance from each tap to the segment -half..half.
    t = np.clip((x * half[0] + y * half[1]) / (half @ half), -1.0, 1.0)
    distance = np.hypot(x - t * half[0], y - t * half[1])
    kernel = np.clip(1.0 - distance, 0.0, 1.0).astype(np.float32)
    return _correlate_2d(img, kernel / kernel.sum())


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Additive sensor/scanner noise, independent per channel (Wan et al.)."""
    sigma = _uniform(rng, cfg.noise_sigma)
    return np.clip(img + sigma * rng.standard_normal(img.shape, dtype=np.float32), 0.0, 1.0)


def speckle_noise(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Multiplicative noise: stronger in bright areas (Wan et al.)."""
    sigma = _uniform(rng, cfg.noise_sigma)
    return np.clip(img * (1.0 + sigma * rng.standard_normal(img.shape, dtype=np.float32)), 0.0, 1.0)


def salt_and_pepper(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Isolated black and white pixels (Wan et al.)."""
    h, w = img.shape[:2]
    hit = rng.random((h, w)) < _uniform(rng, cfg.salt_pepper_amount)
    salt = rng.random((h, w)) < 0.5
    return np.where(hit[..., None], salt[..., None].astype(np.float32), img)


def low_resolution(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Shrink each axis by its own factor and enlarge back (nearest or bilinear), as Wan et al."""
    h, w = img.shape[:2]
    small = (max(1, round(w * _uniform(rng, cfg.lowres_scale))), max(1, round(h * _uniform(rng, cfg.lowres_scale))))
    up = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    down = _resize_channels(img, small, Image.Resampling.BICUBIC)
    return np.clip(_resize_channels(down, (w, h), up), 0.0, 1.0)


def jpeg(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Round-trip through an in-memory JPEG: blocking and ringing, as on web copies of old photos."""
    quality = _randint(rng, cfg.jpeg_quality)
    buffer = io.BytesIO()
    Image.fromarray(np.round(img * 255.0).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0


# --------------------------------------------------------------------------- ageing of the print


def fade(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Faded print: blacks lift to grey and whites dim, so contrast drops."""
    black = _uniform(rng, cfg.fade_black)
    white = max(black, _uniform(rng, cfg.fade_white))
    return black + (white - black) * img


def colour_cast(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Sepia toning or yellowing: blend towards the luma tinted by a warm colour (R > G > B)."""
    tint = _SEPIA + (_YELLOW - _SEPIA) * np.float32(rng.random())
    strength = np.float32(_uniform(rng, cfg.cast_strength))
    toned = _luma(img)[..., None] * tint
    return (1.0 - strength) * img + strength * toned


def vignette(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Lens fall-off: darkening that grows with the distance from a slightly off-centre point."""
    h, w = img.shape[:2]
    cy, cx = (0.5 + rng.normal(0.0, 0.05, 2)).tolist()
    y = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - cy)[:, None]
    x = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - cx)[None, :]
    radius_sq = (x * x + y * y) * 2.0  # about 1 at the corners
    gain = np.clip(1.0 - _uniform(rng, cfg.vignette_strength) * radius_sq, 0.0, 1.0)
    return img * gain[..., None]


def paper_texture(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Uneven paper and blotchy ageing: a smooth random gain field (two octaves) multiplied in."""
    h, w = img.shape[:2]
    field_sum = np.zeros((h, w), dtype=np.float32)
    for cells, weight in ((4, 1.0), (16, 0.5)):
        grid = (max(2, round(cells * w / max(h, w))), max(2, round(cells * h / max(h, w))))
        coarse = Image.fromarray(rng.standard_normal(grid[::-1], dtype=np.float32))
        field_sum += weight * np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC))
    field_sum = (field_sum - field_sum.mean()) / max(float(field_sum.std()), 1e-6)
    gain = 1.0 + _uniform(rng, cfg.paper_strength) * field_sum
    return np.clip(img * gain[..., None], 0.0, 1.0)


# --------------------------------------------------------------------------- grey conversion and pipeline


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """CIE-consistent grey: linear-light luminance Y = 0.2126 R + 0.7152 G + 0.0722 B, sRGB-encoded.

    A grey pixel g = sRGB(Y) has exactly the CIE L of the colour pixel, so for an undamaged
    photo the degraded input's L equals the restoration target's L (paper: the net works on L).
    ITU-R 601 luma of the sRGB values (``_luma``, used only to modulate effects) would not.
    """
    rgb = np.clip(rgb, 0.0, 1.0)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    grey = np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(y, 1.0 / 2.4) - 0.055)
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


@dataclass
class Degraded:
    """One synthetic old photo: the damaged grey image, where local defects hit, and what ran."""

    grey: np.ndarray  # H x W float32 in [0, 1]
    mask: np.ndarray  # H x W float32 in [0, 1]; 1 where a local defect destroyed the pixel
    ops: list[str]  # names of the applied operations, in order


Op = Callable[[np.ndarray, np.random.Generator, DegradationConfig], np.ndarray]
DefectOp = Callable[[np.ndarray, np.random.Generator, DegradationConfig], Masked]

_DEFECTS: tuple[DefectOp, ...] = (add_scratches, add_cracks, add_dust, add_tears, add_creases)
_NOISES: tuple[Op, ...] = (gaussian_noise, speckle_noise, salt_and_pepper)


def degrade(rgb: np.ndarray, rng: np.random.Generator, config: DegradationConfig | None = None) -> Degraded:
    """Damage an H x W x 3 float RGB photo in [0, 1] into a synthetic old grey photo.

    Local physical defects and capture defects run in a random order, each with its own
    probability (Wan et al.: blur, noise, low resolution and JPEG each with p = 0.7); then the
    print ages (fade, colour cast, vignette, paper texture, in that order); then ``to_grey``.
    ``rgb`` is never modified; the same generator state gives bit-identical output.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB array, got shape {rgb.shape}")
    cfg = DEFAULT_CONFIG if config is None else config
    img = np.clip(rgb, 0.0, 1.0).astype(np.float32)  # a new array: the caller's stays untouched
    mask = np.zeros(img.shape[:2], dtype=np.float32)
    ops: list[str] = []

    # None stands for Wan et al.'s noise step, which picks one of three kinds when it runs.
    steps: list[tuple[float, Callable[..., Any] | None]] = [
        (cfg.p_scratches, add_scratches),
        (cfg.p_cracks, add_cracks),
        (cfg.p_dust, add_dust),
        (cfg.p_tears, add_tears),
        (cfg.p_creases, add_creases),
        (cfg.p_grain, film_grain),
        (cfg.p_blur, gaussian_blur),
        (cfg.p_defocus, defocus_blur),
        (cfg.p_motion, motion_blur),
        (cfg.p_noise, None),
        (cfg.p_lowres, low_resolution),
        (cfg.p_jpeg, jpeg),
    ]
    for index in rng.permutation(len(steps)):
        probability, op = steps[index]
        if rng.random() >= probability:
            continue
        if op is None:
            op = _NOISES[int(rng.integers(len(_NOISES)))]
        if op in _DEFECTS:
            img, op_mask = op(img, rng, cfg)
            mask = np.maximum(mask, op_mask)
        else:
            img = op(img, rng, cfg)
        ops.append(op.__name__)

    ageing: list[tuple[float, Op]] = [
        (cfg.p_fade, fade),
        (cfg.p_cast, colour_cast),
        (cfg.p_vignette, vignette),
        (cfg.p_paper, paper_texture),
    ]
    for probability, op in ageing:
        if rng.random() < probability:
            img = op(img, rng, cfg)
            ops.append(op.__name__)
    return Degraded(grey=to_grey(img), mask=mask, ops=ops)


def degrade_seeded(rgb: np.ndarray, seed: int, config: DegradationConfig | None = None) -> Degraded:
    """``degrade`` with a fresh generator from ``seed``: one seed, one reproducible sample."""
    return degrade(rgb, np.random.default_rng(seed), config)
