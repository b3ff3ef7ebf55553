"""Colour tone head: undo a colour print's fading (per-dye tone curves and dulled colour).

A faded colour print has lost tone per dye layer (each of R, G and B gets its own curve:
lifted blacks, dimmed whites, a cast where one layer fades more) and colour (lower
saturation). Like the grey tone head (``pikfix.nets.tone``) this head looks at the whole
photo through quantiles: each channel's lightness quantiles and the chroma quantiles, and
predicts the original's channel quantiles (three monotone piecewise-linear curves) and a
chroma gain. The photo stays its own reference: its colours are corrected, not replaced.

Hand-written rules (neutral darkest and brightest tones, a fixed target chroma) made the
validation photos' colour worse than the faded input; this head is trained on training
photos faded by ``pikfix.training.colour_tone``'s recipe. The last layer starts at zero,
so an untrained head is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pikfix.color import area_downscale, area_downscale_image, lab_to_rgb, rgb_to_lab, strip_rows
from pikfix.imageio import unit_float
from pikfix.nets.tone import (
    FEATURE_SIDE, LEVELS, apply_curve, dead_zone_weight, identity_start_mlp, quantile_levels, strictly_increasing,
)

CHROMA_UNIT = 100.0  # ab units: chroma features are divided by this
MAX_LOG_GAIN = 1.0  # the chroma gain stays within exp(+-1)


def colour_features(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sRGB (B, 3, H, W) in [0, 1] -> (channel quantiles (B, 3, LEVELS) in [0, 1], features
    (B, 4 * LEVELS)), taken at ``FEATURE_SIDE`` px so they depend neither on resolution nor grain."""
    small = area_downscale(rgb.float(), FEATURE_SIDE)
    levels = quantile_levels().to(small.device)
    b = small.shape[0]
    channels = torch.quantile(small.flatten(2), levels, dim=2).permute(1, 2, 0)  # (B, 3, LEVELS)
    chroma = rgb_to_lab(small)[:, 1:].norm(dim=1).flatten(1)
    chroma_q = torch.quantile(chroma, levels, dim=1).T / CHROMA_UNIT
    return channels, torch.cat([channels.reshape(b, -1) * 2.0 - 1.0, chroma_q], dim=1)


class ColourToneHead(nn.Module):
    """Whole-photo colour statistics -> three channel curves and a chroma gain, as residuals."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = identity_start_mlp(4 * LEVELS, width, 3 * LEVELS + 1)

    def knots(self, channels: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``colour_features`` of B photos -> knots (xs, ys) (B, 3, LEVELS) in [0, 1] and the chroma gain (B,)."""
        out = self.mlp(features)
        b = channels.shape[0]
        xs = strictly_increasing(channels.reshape(b * 3, LEVELS))
        ys = torch.cummax(xs + out[:, : 3 * LEVELS].reshape(b * 3, LEVELS), dim=1).values.clamp(0.0, 1.0)
        gain = torch.exp(out[:, -1].clamp(-MAX_LOG_GAIN, MAX_LOG_GAIN))
        return xs.reshape(b, 3, LEVELS), ys.reshape(b, 3, LEVELS), gain

    def correction(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole photos (B, 3, H, W) in [0, 1] -> ``knots``."""
        return self.knots(*colour_features(rgb))


def apply_correction(rgb: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) through each channel's curve, then the chroma (Lab ab) times ``gain``.
    Differentiable in ``ys`` and ``gain``."""
    b, _, h, w = rgb.shape
    curved = apply_curve(  # on [-1, 1], the tone curves' range
        rgb.reshape(b * 3, 1, h, w) * 2.0 - 1.0, xs.reshape(b * 3, -1) * 2.0 - 1.0, ys.reshape(b * 3, -1) * 2.0 - 1.0
    )
    curved = ((curved + 1.0) * 0.5).clamp(0.0, 1.0).reshape(b, 3, h, w)
    lab = rgb_to_lab(curved)
    lab = torch.cat([lab[:, :1], lab[:, 1:] * gain.view(b, 1, 1, 1)], dim=1)
    return lab_to_rgb(lab)


def correct_photo(head: ColourToneHead, rgb: np.ndarray, dead_zone: tuple[float, float] | None = None) -> np.ndarray:
    """A full-resolution colour photo (H, W, 3), float in [0, 1] or uint8/uint16 as decoded ->
    corrected, float32, in row strips (the correction is fitted once on the whole photo).

    ``dead_zone`` (lo, hi), in mean absolute RGB change x 100: a correction changing the photo
    by less than lo is dropped, by more than hi applied whole, and faded in between (curves
    and chroma gain alike), so a clean photo's small wobble leaves it exactly as it was: then
    ``rgb`` itself is returned (no copy; callers can tell with ``is``).
    """
    with torch.no_grad():
        small = area_downscale_image(rgb, FEATURE_SIDE).clamp(0.0, 1.0)
        xs, ys, gain = head.correction(small)
        if dead_zone is not None:
            change = float((apply_correction(small, xs, ys, gain) - small).abs().mean()) * 100.0
            weight = dead_zone_weight(change, dead_zone)
            if weight == 0.0:
                return rgb
            ys, gain = xs + weight * (ys - xs), 1.0 + weight * (gain - 1.0)
        out = np.empty(rgb.shape, dtype=np.float32)
        rows = strip_rows(rgb.shape[1])
        for y0 in range(0, rgb.shape[0], rows):
            strip = torch.from_numpy(unit_float(rgb[y0 : y0 + rows])).permute(2, 0, 1)[None].clamp(0.0, 1.0)
            out[y0 : y0 + rows] = apply_correction(strip, xs, ys, gain)[0].permute(1, 2, 0).numpy()
    return out
