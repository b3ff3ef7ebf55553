"""Square maximum filters by window doubling, shared by the detector's top-hats
(``pikfix.nets.restoration``) and the fill bounds (``pikfix.fill_bounds``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def running_max(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Maximum over windows of ``size`` consecutive elements along ``dim`` (length shrinks by
    size - 1), by doubling: windows of 2, 4, 8 ... from maxima of two shifted halves, so a
    17 px window costs 5 passes instead of a 17-wide pooling (the same values exactly)."""
    width = 1
    while width * 2 <= size:
        n = x.shape[dim] - width
        x = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, width, n))
        width *= 2
    if width < size:  # the remainder: two overlapping windows of ``width`` cover ``size``
        n = x.shape[dim] - (size - width)
        x = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, size - width, n))
    return x


def max_filter(x: torch.Tensor, size: int, border: float | None = None) -> torch.Tensor:
    """size x size maximum of (B, C, H, W) (odd ``size``), a row pass then a column pass;
    beyond the edges the borders are replicated, or the constant ``border`` (e.g. -inf)."""
    pad = size // 2

    def padded(t: torch.Tensor, sides: tuple[int, int, int, int]) -> torch.Tensor:
        return F.pad(t, sides, mode="replicate") if border is None else F.pad(t, sides, value=border)

    x = running_max(padded(x, (pad, pad, 0, 0)), size, -1)
    return running_max(padded(x, (0, 0, pad, pad)), size, -2)
