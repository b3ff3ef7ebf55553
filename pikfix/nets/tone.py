"""Tone head: a whole-photo tone curve that undoes fading before the local repair.

Fading, lost contrast and a yellowed print's darkening change the whole photo's tone curve.
A net that sees a 128-512 px tile cannot tell a faded print from a foggy scene, so it either
leaves fading alone or alters clean photos. The tone head looks at the whole photo instead,
through its lightness quantiles (a monotone tone change maps each quantile of the original
to the same quantile of the faded print), and predicts the original's quantiles with a small
MLP. Its curve, piecewise linear through (faded quantile, predicted quantile), is applied to
every pixel; outside the outermost quantiles it shifts L by the end knots' offsets.

The MLP's last layer starts at zero, so an untrained head is the identity; it is trained on
photos faded by the training recipe and on clean ones (``pikfix.training.tone``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pikfix.color import STRIP_ROWS, area_downscale

LEVELS = 33  # quantile levels, evenly spaced in [QUANTILE_LOW, QUANTILE_HIGH]
QUANTILE_LOW, QUANTILE_HIGH = 0.01, 0.99  # outer quantiles: ignore the last per cent (dust, scratches)
FEATURE_SIDE = 256  # quantiles are taken on the photo area-downscaled to this long side
KNOT_GAP = 1e-4  # knots are kept this far apart so the curve stays a function


def quantile_levels() -> torch.Tensor:
    return torch.linspace(QUANTILE_LOW, QUANTILE_HIGH, LEVELS)


def feature_scale(l: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) area-downscaled so the long side is at most ``FEATURE_SIDE`` px."""
    return area_downscale(l.float(), FEATURE_SIDE)


def photo_quantiles(l: torch.Tensor) -> torch.Tensor:
    """Quantiles (B, LEVELS) of normalised L (B, 1, H, W), taken at ``FEATURE_SIDE`` px so
    they do not depend on the scan's resolution (nor its grain)."""
    l = feature_scale(l)
    return torch.quantile(l.flatten(1).float(), quantile_levels().to(l.device), dim=1).T


def apply_curve(l: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """L (B, 1, H, W) through the piecewise-linear curves with knots ``xs`` -> ``ys`` (B, K);
    beyond the end knots L is shifted by their offsets. Differentiable in ``ys``."""
    b = l.shape[0]
    flat = l.reshape(b, -1)
    index = torch.searchsorted(xs.contiguous(), flat.contiguous()).clamp(1, xs.shape[1] - 1)
    x0, x1 = xs.gather(1, index - 1), xs.gather(1, index)
    y0, y1 = ys.gather(1, index - 1), ys.gather(1, index)
    t = ((flat - x0) / (x1 - x0)).clamp(0.0, 1.0)
    inside = y0 + t * (y1 - y0)
    below = flat + (ys[:, :1] - xs[:, :1])
    above = flat + (ys[:, -1:] - xs[:, -1:])
    out = torch.where(flat < xs[:, :1], below, torch.where(flat > xs[:, -1:], above, inside))
    return out.clamp(-1.0, 1.0).reshape(l.shape)


def strictly_increasing(x: torch.Tensor) -> torch.Tensor:
    """Knots nudged apart by ``KNOT_GAP``, so flat stretches of the histogram (a white sky,
    a black border) still give a curve with one value per input."""
    steps = torch.arange(x.shape[1], device=x.device, dtype=x.dtype) * KNOT_GAP
    return torch.cummax(x - steps, dim=1).values + steps


def identity_start_mlp(inputs: int, width: int, outputs: int) -> nn.Sequential:
    """Two hidden ReLU layers of ``width``; the last layer starts at zero, so a head that adds
    its output as a residual starts as the identity."""
    mlp = nn.Sequential(
        nn.Linear(inputs, width), nn.ReLU(inplace=True),
        nn.Linear(width, width), nn.ReLU(inplace=True),
        nn.Linear(width, outputs),
    )
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class ToneHead(nn.Module):
    """Photo quantiles -> the original's quantiles, as a residual; ``forward`` applies the curve."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = identity_start_mlp(LEVELS, width, LEVELS)

    def knots(self, quantiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, LEVELS) quantiles of the faded photo -> curve knots (xs, ys), both increasing."""
        xs = strictly_increasing(quantiles)
        ys = torch.cummax(xs + self.mlp(xs), dim=1).values.clamp(-1.0, 1.0)
        return xs, ys

    def curve_for(self, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Knots for normalised L (B, 1, H, W), seen whole."""
        return self.knots(photo_quantiles(l))

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        """Normalised L (B, 1, H, W), each image a whole photo -> L with its tone restored."""
        return apply_curve(l, *self.curve_for(l))


def dead_zone_weight(change: float, zone: tuple[float, float]) -> float:
    """How much of a whole-photo correction to apply, from the mean change it makes: 0 below
    ``zone[0]``, 1 above ``zone[1]``, linear between (a clean photo's small wobble is dropped)."""
    lo, hi = zone
    return min(1.0, max(0.0, (change - lo) / (hi - lo)))


def apply_curve_numpy(
    l: np.ndarray, xs: torch.Tensor, ys: torch.Tensor, out: np.ndarray | None = None
) -> np.ndarray:
    """``apply_curve`` for one full-resolution Lab L (H, W) in [0, 100], in row strips of
    numpy (no torch copy of a 24 MP scan); knots (1, K) are normalised L. ``out`` may be
    ``l`` itself (each strip is read before it is written)."""
    x = (xs[0].detach().double().numpy() + 1.0) * 50.0
    y = (ys[0].detach().double().numpy() + 1.0) * 50.0
    out = np.empty_like(l) if out is None else out
    for y0 in range(0, l.shape[0], STRIP_ROWS):
        strip = l[y0 : y0 + STRIP_ROWS].astype(np.float64)
        mapped = np.interp(strip, x, y)
        mapped = np.where(strip < x[0], strip + (y[0] - x[0]), np.where(strip > x[-1], strip + (y[-1] - x[-1]), mapped))
        out[y0 : y0 + STRIP_ROWS] = np.clip(mapped, 0.0, 100.0)
    return out
