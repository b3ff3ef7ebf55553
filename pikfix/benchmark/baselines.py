"""Training-free baselines for the benchmark: what a learned model has to beat.

* ``grey_baseline``: the old photo's lightness with no colour (a = b = 0).
* ``classical_restore``: 3x3 median against noise and dust, plus detection and inpainting of
  thin scratches, on the lightness channel.
* ``reinhard_transfer``: Reinhard et al. (2001) style statistics transfer from a colour
  reference in Lab, in its colourisation-only form (the input has no chroma to rescale).
* ``classical_baseline``: the two above chained.
* ``median3`` and ``tophat_inpaint``: the two classical restorers the restoration benchmark
  compares against (a 3x3 median; top-hat defect detection with diffusion inpainting).

Images are numpy float32 arrays: RGB shaped (H, W, 3) in [0, 1]; single-channel "grey"
images are the Lab lightness divided by 100, shaped (H, W) in [0, 1]. Everything runs on the
CPU in row strips, so 24-megapixel scans need only a few hundred MB beyond the image itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pikfix.color import STRIP_ROWS, lab_to_rgb, rgb_to_lab
from pikfix.nets.restoration import tophats

# Scratch detection: a pixel is a defect when it differs from its 5x5 median by more than this
# (in lightness / 100). A 5x5 median erases lines up to 2 px thick, so only thin structures
# (scratches, hairs, dust specks) stand out; straight edges are preserved by the median.
SCRATCH_THRESHOLD = 0.1
# Gaussian of the normalised-convolution fill (sigma in px, radius 4 px).
_FILL_SIGMA = 1.5
_FILL_RADIUS = 4
# Context rows each strip needs on both sides so strip results equal whole-image results:
# 5x5 median (2) + 1 px dilation (1) + fill radius (4), rounded up.
_HALO = 8
# Reference pixels used for the colour statistics (sampled on a regular grid).
_REF_SAMPLES = 1_000_000
# Lightness bins holding less than this share of the reference are too noisy to trust.
_MIN_BIN_SHARE = 0.002


def _as_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """Validate an (H, W, 3) float RGB array and return it as float32."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be shaped (H, W, 3), got {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"{name} must be float RGB in [0, 1], got dtype {image.dtype}")
    return np.asarray(image, dtype=np.float32)


def _as_grey(image: np.ndarray, name: str) -> np.ndarray:
    """Validate an (H, W) float lightness array (L/100) and return it as float32."""
    if image.ndim != 2:
        raise ValueError(f"{name} must be shaped (H, W), got {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"{name} must be float L/100 in [0, 1], got dtype {image.dtype}")
    return np.asarray(image, dtype=np.float32)


def _map_strips(image: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Apply a per-pixel (3, h, W) -> (3, h, W) torch function to an (H, W, 3) array strip by strip."""
    out = np.empty_like(image)
    for r0 in range(0, image.shape[0], STRIP_ROWS):
        strip = torch.from_numpy(np.ascontiguousarray(image[r0 : r0 + STRIP_ROWS])).permute(2, 0, 1)
        out[r0 : r0 + STRIP_ROWS] = fn(strip).permute(1, 2, 0).numpy()
    return out


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    return _map_strips(rgb, rgb_to_lab)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    return _map_strips(lab, lab_to_rgb)


def grey_baseline(old_rgb: np.ndarray) -> np.ndarray:
    """The input as a neutral grey image: Lab L kept, a = b = 0 (the 'no colourisation' floor)."""
    lab = _rgb_to_lab(_as_rgb(old_rgb, "old_rgb"))
    lab[..., 1:] = 0.0
    return _lab_to_rgb(lab)


# ---------------------------------------------------------------------------------------------
# Classical restoration of the lightness channel.


def _median(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Median over a (2r+1)^2 window of an (h, W) tensor, borders replicated."""
    size = 2 * radius + 1
    padded = F.pad(x[None, None], (radius,) * 4, mode="replicate")
    patches = F.unfold(padded, size)  # (1, size*size, h*W)
    return patches.median(dim=1).values.view_as(x)


def _gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian of an (h, W) tensor with zero padding (normalised convolution divides it out)."""
    offsets = torch.arange(-_FILL_RADIUS, _FILL_RADIUS + 1, dtype=x.dtype)
    taps = torch.exp(-(offsets**2) / (2.0 * _FILL_SIGMA**2))
    size = taps.numel()
    out = F.conv2d(x[None, None], taps.view(1, 1, size, 1), padding=(_FILL_RADIUS, 0))
    return F.conv2d(out, taps.view(1, 1, 1, size), padding=(0, _FILL_RADIUS))[0, 0]


def _restore_strip(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Denoise an (h, W) strip and inpaint its thin defects."""
    smooth = _median(x, 1)
    defect = (x - _median(x, 2)).abs() > threshold
    # Grow the mask by 1 px: a scratch's blurred rim is also damaged.
    defect = F.max_pool2d(defect[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    valid = (~defect).to(x.dtype)
    # Normalised convolution: a Gaussian-weighted mean of the valid neighbours only.
    weight = _gaussian_blur(valid)
    filled = _gaussian_blur(smooth * valid) / weight.clamp(min=1e-6)
    # Defects wider than the fill radius have no valid neighbours: fall back to the 5x5 median.
    filled = torch.where(weight > 1e-3, filled, _median(smooth, 2))
    return torch.where(defect, filled, smooth)


def classical_restore(grey: np.ndarray, threshold: float = SCRATCH_THRESHOLD) -> np.ndarray:
    """Remove noise, dust and thin scratches from a lightness image (H, W) in [0, 1].

    Every pixel gets a 3x3 median. Pixels that differ from their 5x5 median by more than
    ``threshold`` (thin bright or dark lines and specks, up to about 2 px wide) plus a 1-px rim
    are treated as missing and filled with a Gaussian-weighted mean of the valid pixels around
    them. Works in row strips with enough overlap that the result equals whole-image processing.
    """
    out = _filter_strips(_as_grey(grey, "grey"), _HALO, lambda strip: _restore_strip(strip, threshold))
    return np.clip(out, 0.0, 1.0)


def _filter_strips(grey: np.ndarray, halo: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Apply an (h, W) -> (h, W) filter strip by strip, each strip with ``halo`` rows of context
    on both sides, so the result equals whole-image filtering for filters that reach that far."""
    x = torch.from_numpy(grey)
    height = x.shape[0]
    out = np.empty(x.shape, dtype=np.float32)
    for r0 in range(0, height, STRIP_ROWS):
        r1 = min(r0 + STRIP_ROWS, height)
        top, bottom = max(0, r0 - halo), min(height, r1 + halo)
        out[r0:r1] = fn(x[top:bottom])[r0 - top : r1 - top].numpy()
    return out


def median3(grey: np.ndarray) -> np.ndarray:
    """3x3 median of a lightness image (H, W) in [0, 1]: the simplest classical restorer."""
    return _filter_strips(_as_grey(grey, "grey"), 1, lambda strip: _median(strip, 1))


def _push_pull_fill(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill the invalid pixels of (1, 1, H, W) by diffusion from the valid ones: a push-pull
    pyramid (mean of valid pixels at coarser and coarser scales, then back down), refined by a
    few Jacobi sweeps of the Laplace equation at full resolution."""
    if x.shape[-1] <= 1 or x.shape[-2] <= 1 or bool(valid.all()):
        return x
    small_x = F.avg_pool2d(x * valid, 2, ceil_mode=True)
    small_w = F.avg_pool2d(valid, 2, ceil_mode=True)
    coarse = _push_pull_fill(small_x / small_w.clamp_min(1e-6), (small_w > 0).float())
    up = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
    out = torch.where(valid > 0, x, up)
    kernel = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3)
    for _ in range(8):
        smoothed = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel)
        out = torch.where(valid > 0, x, smoothed)
    return out


def tophat_inpaint(grey: np.ndarray, max_width: float | None = None, threshold: float = 0.08) -> np.ndarray:
    """Classical inpainting of detected defects: a white and a black morphological top-hat
    (the image minus its opening, its closing minus the image) with a square wider than the
    widest defect find thin bright and dark structures (scratches, cracks, dust); those pixels,
    grown by 1 px, are filled by diffusion from their surroundings. Everything else is kept.

    ``max_width`` (px) defaults to 16 px per 2048 px of the long side (at least 3 px).
    """
    x = torch.from_numpy(_as_grey(grey, "grey"))[None, None]
    width = max_width if max_width is not None else max(3.0, 16.0 * max(x.shape[-2:]) / 2048)
    size = 2 * math.ceil(width / 2) + 1
    defect = tophats(x, size).amax(dim=1, keepdim=True) > threshold
    defect = F.max_pool2d(defect.float(), 3, stride=1, padding=1) > 0
    filled = _push_pull_fill(x, (~defect).float())
    return filled[0, 0].clamp(0.0, 1.0).numpy()


# ---------------------------------------------------------------------------------------------
# Reference colour transfer.


def _lightness(image: np.ndarray) -> np.ndarray:
    """Lab L in [0, 100] of a grey (H, W) image (L/100) or an RGB (H, W, 3) image."""
    if image.ndim == 2:
        return _as_grey(image, "grey_or_rgb") * 100.0
    return _rgb_to_lab(_as_rgb(image, "image"))[..., 0]


def reinhard_transfer(grey_or_rgb: np.ndarray, ref_rgb: np.ndarray, bins: int = 16) -> np.ndarray:
    """Colourise with the reference's Lab statistics (Reinhard et al. 2001, colourisation-only).

    The output keeps the input's lightness L. Its a, b come from the reference: the reference's
    L is first matched to the input's L mean and standard deviation (so a darker scan still
    maps shadows to shadows), the matched L is split into ``bins`` equal bins over [0, 100],
    and each input pixel takes the reference's mean a, b at its L, interpolated linearly
    between the bins' mean L (no banding). Sparse bins are skipped. ``bins=1`` is the plain
    variant: the reference's mean a, b everywhere.

    ``grey_or_rgb`` is a lightness image (H, W) = L/100 or an RGB image (H, W, 3); only its L is
    used. The reference may have any size; statistics use at most about a million of its
    pixels, sampled on a regular grid.
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    l_in = _lightness(grey_or_rgb)
    ref = _as_rgb(ref_rgb, "ref_rgb")
    step = max(1, math.ceil(math.sqrt(ref.shape[0] * ref.shape[1] / _REF_SAMPLES)))
    ref_lab = _rgb_to_lab(np.ascontiguousarray(ref[::step, ::step])).reshape(-1, 3).astype(np.float64)
    l_ref, a_ref, b_ref = ref_lab.T

    in_mean, in_std = float(l_in.mean(dtype=np.float64)), float(l_in.std(dtype=np.float64))
    l_matched = (l_ref - l_ref.mean()) / max(float(l_ref.std()), 1e-6) * in_std + in_mean
    index = np.clip((l_matched / 100.0 * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    keep = counts >= max(1.0, _MIN_BIN_SHARE * l_ref.size)
    per_bin = [np.bincount(index, weights=w, minlength=bins)[keep] / counts[keep] for w in (l_matched, a_ref, b_ref)]
    centres, mean_a, mean_b = per_bin

    lab = np.empty((*l_in.shape, 3), dtype=np.float32)
    lab[..., 0] = l_in
    lab[..., 1] = np.interp(l_in, centres, mean_a)
    lab[..., 2] = np.interp(l_in, centres, mean_b)
    return _lab_to_rgb(lab)


def classical_baseline(old_rgb: np.ndarray, ref_rgb: np.ndarray, bins: int = 16) -> np.ndarray:
    """Restore the old photo's lightness classically, then colour it from the reference."""
    restored = classical_restore(_lightness(old_rgb) / 100.0)
    return reinhard_transfer(restored, ref_rgb, bins=bins)
