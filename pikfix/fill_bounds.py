"""Keep a repaired defect within the tones around it.

The repair net fills a detected defect from its surroundings, but on real scans it overshoots:
a white crack through a mid-grey background comes back as a dark line, which reads as a drawn
line instead of a repair. A fill that is darker than every intact pixel near it (or brighter than
every one) is never right for a thin defect, so each filled pixel is clipped to the range of
the intact pixels in a window around it. The window grows until it reaches intact pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from pikfix.color import STRIP_ROWS
from pikfix.morphology import max_filter

FILL_RADIUS = 3  # px: first window half-size; doubled where it holds no intact pixel
FILL_MAX_RADIUS = 48  # px: beyond this a filled pixel is left as the net made it
FILL_MARGIN = 2.0  # L units a fill may go beyond its surroundings' range


def _local_range(before: np.ndarray, hard: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max (H, W) of the intact pixels of ``before`` within ``radius``; +inf / -inf
    where the window holds none."""
    x = torch.from_numpy(np.ascontiguousarray(before, dtype=np.float32))[None, None]
    masked = torch.from_numpy(np.ascontiguousarray(hard))[None, None]
    size = 2 * radius + 1
    high = max_filter(x.masked_fill(masked, -torch.inf), size, border=-torch.inf)
    low = -max_filter((-x).masked_fill(masked, -torch.inf), size, border=-torch.inf)
    return low[0, 0].numpy(), high[0, 0].numpy()


def bound_fill(out: np.ndarray, before: np.ndarray, mask: np.ndarray) -> None:
    """Clip ``out`` (H, W) L in place, where ``mask`` > 0.5, to the range of ``before``'s
    unmasked pixels nearby (plus ``FILL_MARGIN``); row strips with a halo bound the memory."""
    h = out.shape[0]
    halo = FILL_MAX_RADIUS
    for y0 in range(0, h, STRIP_ROWS):
        y1 = min(h, y0 + STRIP_ROWS)
        a0, a1 = max(0, y0 - halo), min(h, y1 + halo)
        hard = mask[a0:a1] > 0.5
        core = slice(y0 - a0, y1 - a0)
        if not hard[core].any():
            continue
        b = before[a0:a1].astype(np.float32, copy=False)
        low, high = _local_range(b, hard, FILL_RADIUS)
        _widen(low, high, b, hard)
        o = out[y0:y1]
        keep = hard[core] & np.isfinite(low[core])
        clipped = np.clip(o, low[core] - FILL_MARGIN, high[core] + FILL_MARGIN)
        out[y0:y1] = np.where(keep, clipped, o)


def _widen(low: np.ndarray, high: np.ndarray, before: np.ndarray, hard: np.ndarray) -> None:
    """Fill in ``low`` / ``high`` where the first window held no intact pixel, doubling the
    window up to ``FILL_MAX_RADIUS``; each pass looks only at the box around those pixels."""
    radius = 2 * FILL_RADIUS
    while radius <= FILL_MAX_RADIUS:
        open_ = hard & np.isinf(low)
        rows, cols = np.flatnonzero(open_.any(1)), np.flatnonzero(open_.any(0))
        if len(rows) == 0:
            return
        r0, r1 = max(0, rows[0] - radius), rows[-1] + radius + 1
        c0, c1 = max(0, cols[0] - radius), cols[-1] + radius + 1
        box = (slice(r0, r1), slice(c0, c1))
        lo, hi = _local_range(before[box], hard[box], radius)
        low[box] = np.where(open_[box], lo, low[box])
        high[box] = np.where(open_[box], hi, high[box])
        radius *= 2
