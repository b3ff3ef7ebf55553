"""Noise and grain reduction after the repair, only where the photo shows noise.

The repair network of the shipped model does not remove noise (on the validation photos it
leaves white noise of any strength as it found it), and the tone head's contrast stretch
makes noise stronger. So the restored L goes through an edge-preserving (bilateral) filter
whose strength follows the noise measured on the photo itself; below ``NOISE_THRESHOLD`` the
filter is off and a clean photo is left exactly as it is.

Noise is measured as Immerkaer (1996) does: the 3x3 filter [[1,-2,1],[-2,4,-2],[1,-2,1]]
cancels smooth shading, and its mean absolute response times sqrt(pi/2) / 6 is the sigma of
white Gaussian noise. It is averaged per 16 x 16 block and the 5th percentile of the blocks
is kept: the photo's flattest areas, where fur, foliage or stonework cannot pass for noise.
Both passes run in row strips, so a 24 MP scan costs a strip's memory, not a copy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pikfix.color import STRIP_ROWS

NOISE_THRESHOLD = 0.5  # L units: every clean validation photo measures below 0.4
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


def denoise(l: np.ndarray, sigma: float | None = None) -> tuple[float, bool]:
    """Denoise L (H, W) in [0, 100] in place if its noise (``noise_sigma``, or ``sigma``)
    reaches ``NOISE_THRESHOLD``; returns (the noise measured, whether it was filtered)."""
    sigma = noise_sigma(l) if sigma is None else sigma
    if sigma < NOISE_THRESHOLD:
        return sigma, False
    h, w = l.shape
    above = None  # the input rows just above a strip: the previous strip has overwritten them
    for y0 in range(0, h, STRIP_ROWS):
        y1 = min(h, y0 + STRIP_ROWS)
        top, bottom = max(0, y0 - RADIUS), min(h, y1 + RADIUS)
        rows = np.array(l[top:bottom], dtype=np.float32)
        if above is not None:
            rows[: y0 - top] = above
        above = rows[y1 - RADIUS - top : y1 - top].copy()
        strip = torch.from_numpy(rows).view(1, 1, *rows.shape)
        pad = (RADIUS, RADIUS, RADIUS - (y0 - top), RADIUS - (bottom - y1))
        padded = F.pad(strip, pad, mode="reflect")
        l[y0:y1] = _bilateral(padded, RANGE_FACTOR * sigma)[0, 0].clamp(0.0, 100.0).numpy()
    return sigma, True
