"""Tiled full-resolution restoration: bounded memory on scans of any size.

Each tile is processed with ``overlap`` pixels of context on every side and only its core is
kept, as Real-ESRGAN does.  Tile origins are multiples of the restoration net's coarsest
scale (8), so every tile sees the same pooled grid as the whole image would, and the result
matches untiled processing up to the limited context at tile borders.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pikfix.config import DEFAULT_TILE
from pikfix.model import PikFix


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def restore_tiled(
    model: PikFix,
    l: torch.Tensor,
    tile: int = DEFAULT_TILE,
    overlap: int = 32,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Restore normalised L (1, 1, H, W) held on the CPU -> (restored L, damage mask), both
    (1, 1, H, W) on the CPU; the mask is None for a model without a detector and no ``mask``.

    ``mask`` (1, 1, H, W) in [0, 1], 1 = damaged, replaces the detector's. Only one tile (plus
    context) is on ``device`` at a time.  ``progress(done, total)`` is called after each tile.
    """
    multiple = model.restoration.multiple
    tile = _round_up(max(tile, multiple), multiple)
    overlap = _round_up(max(overlap, 0), multiple)
    h, w = l.shape[-2:]
    out = torch.empty_like(l, device="cpu")
    out_mask: torch.Tensor | None = None
    ys, xs = range(0, h, tile), range(0, w, tile)
    total, done = len(ys) * len(xs), 0
    with torch.inference_mode():
        for y0 in ys:
            for x0 in xs:
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                cy0, cx0 = max(0, y0 - overlap), max(0, x0 - overlap)
                cy1, cx1 = min(h, y1 + overlap), min(w, x1 + overlap)
                patch = l[..., cy0:cy1, cx0:cx1].to(device).contiguous(memory_format=torch.channels_last)
                given = None if mask is None else mask[..., cy0:cy1, cx0:cx1].to(device)
                restored = model.restore(patch, given)
                core = (..., slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
                out[..., y0:y1, x0:x1] = restored.l.float().cpu()[core]
                if restored.mask is not None:
                    if out_mask is None:
                        out_mask = torch.empty_like(l, device="cpu")
                    out_mask[..., y0:y1, x0:x1] = restored.mask.float().cpu()[core]
                done += 1
                if progress is not None:
                    progress(done, total)
    return out, out_mask
