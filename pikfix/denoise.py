"""Noise and grain reduction after the repair, only where the photo shows noise.

The repair network of the shipped model does not remove noise (on the validation photos it
leaves white noise of any strength as it found it), and the tone head's contrast stretch
makes noise stronger. So where the photo shows noise the restored L goes through the model's
learned denoiser (``pikfix.nets.denoise``) or, for a model without one, an edge-preserving
(bilateral) filter whose strength follows the noise measured on the photo itself; below
``NOISE_THRESHOLD`` neither runs and a clean photo is left exactly as it is.

Noise is measured as Immerkaer (1996) does: the 3x3 filter [[1,-2,1],[-2,4,-2],[1,-2,1]]
cancels smooth shading, and its mean absolute response times sqrt(pi/2) / 6 is the sigma of
white Gaussian noise. It is averaged per 16 x 16 block and the 5th percentile of the blocks
is kept: the photo's flattest areas, where fur, foliage or stonework cannot pass for noise.
A JPEG saved after the noise smooths exactly those flat areas, so a noisy scan saved as JPEG
measures low; where the JPEG grid shows (``blockiness``), a lower noise level suffices.

After it, a model's learned sharpener (``sharpen``) restores detail where the photo is soft,
with the photo at the size it is viewed at (``SHARPEN_SIDE``); it is applied only where it
changes the photo by ``SHARPEN_DEAD_ZONE`` on average, so a sharp photo is left exactly as it is.
Every pass runs in row strips, so a 24 MP scan costs a strip's memory, not a copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pikfix.color import STRIP_ROWS, strip_rows
from pikfix.nets.denoise import Denoiser, Sharpener
from pikfix.nets.tone import dead_zone_weight

NOISE_THRESHOLD = 0.5  # L units: every clean validation photo measures below 0.4
# On a photo that shows the 8 px JPEG grid, the filter runs from a lower noise level: a noisy
# horse photo saved as JPEG 54 measures 0.48. The grid shows as ``blockiness`` (L steps across
# block borders over those elsewhere): clean photos at their own size read 0.83-1.37 (48 photos,
# the highest with noise below 0.11), JPEG'd evaluation photos 1.16-2.63 (runs/s20/blocky*.py).
# Clean photos saved again at JPEG 50-60 read up to 1.84 but measure at most 0.18 L, noisy
# evaluation photos saved as JPEG 0.22-0.49 (runs/s20/jpegclean.py).
JPEG_GRID = 8  # px
BLOCKINESS_THRESHOLD = 1.25
JPEG_NOISE_THRESHOLD = 0.2  # L units
# The sharpener runs where it would change L by at least SHARPEN_DEAD_ZONE[0] on average (its
# output fades in up to SHARPEN_DEAD_ZONE[1]): on a sharp photo it makes a smaller change. Both
# were chosen on 44 training photos at 512 px (``SHARPEN_SIDE``): clean, 95 % of them measure
# below 0.8 L (median 0.37, at most 0.92); blurred by a Gaussian of 1 px, their median is 1.2 L
# (models/pikfix-lite.md, "A deeper sharpener, on by default").
SHARPEN_DEAD_ZONE = (0.8, 1.2)  # L units
# Softness is judged, and restored, with the photo's long side at most this many px
# (``pikfix.pipeline.sharpen_at_viewing_size``; the size colour is predicted at): a larger scan
# is soft at the pixel level by nature, as a print holds less detail than a scanner resolves (the
# crack benchmark's 2048 px photos are upscaled from 384-1024 px ones; 130 of the 148 photos are
# 1024 px, 18 smaller), and at this size what is left soft is blur a viewer sees.
SHARPEN_SIDE = 512
# Pixels per strip of the filters (``_in_strips``; an even number of rows, at least twice the
# context): the learned nets' activations scale with the strip. Denoising a 24 MP photo in
# 256-row strips made the process grow by 0.28-0.29 GB, in strips of this size (86 rows) by
# 0.17-0.18 GB, in the same time (9.0-9.3 s).
FILTER_STRIP_PIXELS = 1 << 19
BLOCK = 16  # px, side of the blocks the noise is measured in
FLATTEST = 0.05  # the quantile of block noise taken as the photo's noise
RADIUS = 2  # the filter's window is (2 RADIUS + 1) px square
SPATIAL_SIGMA = 1.5  # px
RANGE_FACTOR = 5.0  # range sigma = this x the noise: flat areas are smoothed, edges above it kept

_LAPLACE = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]).view(1, 1, 3, 3)


def noise_sigma(l: np.ndarray) -> float:
    """Noise of a photo's L (H, W) in [0, 100] as a Gaussian sigma in L units (0 when the photo
    is smaller than two blocks)."""
    h, w = l.shape
    if h < BLOCK + 2 or w < BLOCK + 2:
        return 0.0
    blocks = []
    rows = STRIP_ROWS - STRIP_ROWS % BLOCK
    for y0 in range(0, h - 2 - BLOCK + 1, rows):
        strip = torch.from_numpy(np.ascontiguousarray(l[y0 : min(h, y0 + rows + 2)], dtype=np.float32))
        response = F.conv2d(strip.view(1, 1, *strip.shape), _LAPLACE).abs()
        blocks.append(F.avg_pool2d(response, BLOCK).flatten())
    means = torch.cat(blocks)
    return float(torch.quantile(means, FLATTEST)) * math.sqrt(math.pi / 2) / 6


def _across_borders(steps: torch.Tensor, first: int) -> np.ndarray:
    """(sum, count) of the steps (R, C) whose column lies across a ``JPEG_GRID`` border, then of
    all of them; column 0 is the step between pixels ``first`` and ``first + 1``."""
    on = steps[:, (JPEG_GRID - 1 - first) % JPEG_GRID :: JPEG_GRID]
    return np.array([float(on.sum()), on.numel(), float(steps.sum()), steps.numel()])


def blockiness(l: np.ndarray) -> float:
    """How strongly a photo's L (H, W) shows a JPEG grid: the mean absolute step between
    neighbouring pixels across ``JPEG_GRID`` borders over the mean step elsewhere, columns and
    rows averaged (about 1 without a grid; 1.0 for a photo too small to tell)."""
    h, w = l.shape
    if h <= JPEG_GRID or w <= JPEG_GRID:
        return 1.0
    columns, rows = np.zeros(4), np.zeros(4)
    for y0 in range(0, h, STRIP_ROWS):
        strip = torch.from_numpy(np.ascontiguousarray(l[y0 : min(h, y0 + STRIP_ROWS + 1)], dtype=np.float32))
        columns += _across_borders(strip[:STRIP_ROWS].diff(dim=1).abs(), 0)
        rows += _across_borders(strip.diff(dim=0).abs().T, y0)  # the strip's last row is the next one's first

    def ratio(on_sum: float, on_count: float, all_sum: float, all_count: float) -> float:
        return (on_sum / on_count) / max((all_sum - on_sum) / (all_count - on_count), 1e-6)

    return (ratio(*columns) + ratio(*rows)) / 2


def _bilateral(x: torch.Tensor, range_sigma: float) -> torch.Tensor:
    """Bilateral filter of (1, 1, H + 2 RADIUS, W + 2 RADIUS) padded L -> (1, 1, H, W)."""
    h, w = x.shape[-2] - 2 * RADIUS, x.shape[-1] - 2 * RADIUS
    centre = x[..., RADIUS : RADIUS + h, RADIUS : RADIUS + w]
    total = torch.zeros_like(centre)
    weights = torch.zeros_like(centre)
    weight = torch.empty_like(centre)
    scale = -1.0 / (2 * range_sigma**2)
    for dy in range(-RADIUS, RADIUS + 1):
        for dx in range(-RADIUS, RADIUS + 1):
            shifted = x[..., RADIUS + dy : RADIUS + dy + h, RADIUS + dx : RADIUS + dx + w]
            # In place, one buffer: exp(-(difference^2) / (2 range_sigma^2)) x the spatial weight.
            torch.sub(shifted, centre, out=weight)
            weight.square_().mul_(scale).exp_().mul_(math.exp(-(dy * dy + dx * dx) / (2 * SPATIAL_SIGMA**2)))
            total.addcmul_(weight, shifted)
            weights.add_(weight)
    return total.div_(weights)


def _in_strips(l: np.ndarray, halo: int, filter_: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Run ``filter_`` over L (H, W) in place, in row strips of ``FILTER_STRIP_PIXELS``.

    ``filter_`` takes a strip padded by ``halo`` px on every side, (1, 1, rows + 2 halo,
    W + 2 halo), and returns the strip's rows unpadded (1, 1, rows, W). The rows just above a
    strip have been overwritten by the previous one, so their input values are kept aside.
    """
    h, w = l.shape
    kept, strip = None, max(2 * halo, strip_rows(w, FILTER_STRIP_PIXELS)) // 2 * 2
    for y0 in range(0, h, strip):
        y1 = min(h, y0 + strip)
        rows, above, below = _with_context(l, y0, y1, halo)
        if kept is not None:
            rows[:above] = kept[len(kept) - above :]
        kept = rows[max(0, above + (y1 - y0) - halo) : above + (y1 - y0)].copy()
        l[y0:y1] = filter_(_padded(rows, above, below, halo))[0, 0].clamp(0.0, 100.0).numpy()


def _with_context(l: np.ndarray, y0: int, y1: int, halo: int) -> tuple[np.ndarray, int, int]:
    """A float32 copy of rows ``y0:y1`` of L with up to ``halo`` rows of context above and
    below, and how many rows of context it has above and below."""
    top, bottom = max(0, y0 - halo), min(l.shape[0], y1 + halo)
    return np.array(l[top:bottom], dtype=np.float32), y0 - top, bottom - y1


def _padded(rows: np.ndarray, above: int, below: int, halo: int) -> torch.Tensor:
    """Rows (R, W) that hold ``above`` / ``below`` rows of context beyond a strip, padded (reflected)
    to ``halo`` px on every side: (1, 1, R - above - below + 2 halo, W + 2 halo)."""
    strip = torch.from_numpy(rows).view(1, 1, *rows.shape)
    mode = "reflect" if min(rows.shape) > halo else "replicate"
    return F.pad(strip, (halo, halo, halo - above, halo - below), mode=mode)


def _net_filter(net: Denoiser, sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The learned denoiser (or sharpener), told the photo's noise ``sigma``, as a strip filter
    on padded L in [0, 100], on the net's device."""
    param = next(net.parameters())
    level = torch.tensor([sigma], device=param.device)

    def run(padded: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = net(padded.to(param.device, param.dtype) / 100.0, level).float().cpu() * 100.0
        return out[..., net.halo : -net.halo, net.halo : -net.halo]

    return run


def denoise(l: np.ndarray, sigma: float | None = None, net: Denoiser | None = None) -> tuple[float, bool]:
    """Denoise L (H, W) in [0, 100] in place if its noise (``noise_sigma``, or ``sigma``)
    reaches ``NOISE_THRESHOLD`` (``JPEG_NOISE_THRESHOLD`` where the JPEG grid shows), with the
    learned ``net`` when given, else the bilateral filter; returns (the noise measured, whether
    it was filtered)."""
    sigma = noise_sigma(l) if sigma is None else sigma
    if sigma < JPEG_NOISE_THRESHOLD or (sigma < NOISE_THRESHOLD and blockiness(l) < BLOCKINESS_THRESHOLD):
        return sigma, False
    if net is not None:
        _in_strips(l, net.halo, _net_filter(net, sigma))
    else:
        _in_strips(l, RADIUS, lambda padded: _bilateral(padded, RANGE_FACTOR * sigma))
    return sigma, True


def sharpen(l: np.ndarray, net: Sharpener, sigma: float | None = None) -> tuple[float, float]:
    """Sharpen L (H, W) in [0, 100] in place with the learned sharpener, told the noise left on
    it (``sigma``, measured by ``noise_sigma`` when None, as in its training), where it changes
    the photo enough to be soft (its mean change over the photo, ``SHARPEN_DEAD_ZONE``); returns
    (that mean change, the share of the sharpening applied). It holds a sharpened copy of L:
    the pipeline runs it with the long side at most ``SHARPEN_SIDE``, where that copy is small."""
    delta = np.array(l, dtype=np.float32)
    _in_strips(delta, net.halo, _net_filter(net, noise_sigma(l) if sigma is None else sigma))
    delta -= l  # the sharpener's change, computed once for the measure and the update
    change = float(np.abs(delta).mean())
    weight = dead_zone_weight(change, SHARPEN_DEAD_ZONE)
    if weight > 0.0:
        l += weight * delta
    return change, weight
