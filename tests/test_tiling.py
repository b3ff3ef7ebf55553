"""Tiled restoration matches whole-image restoration."""

import torch
import torch.nn.functional as F

from pikfix.model import build_model
from pikfix.tiling import restore_tiled


def test_tiled_matches_untiled():
    model = build_model("lite").eval()
    l = F.avg_pool2d(torch.rand(1, 1, 203, 301) * 2 - 1, 3, 1, 1)
    with torch.no_grad():
        whole = model.restore(l)
    calls = []
    tiled = restore_tiled(model, l, tile=64, overlap=48, progress=lambda d, t: calls.append((d, t)))
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-3
    assert calls[-1] == (len(calls), len(calls)) and len(calls) == 4 * 5


def test_single_tile_is_exact():
    model = build_model("tiny").eval()
    l = torch.rand(1, 1, 45, 70) * 2 - 1
    with torch.no_grad():
        whole = model.restore(l)
    assert torch.allclose(restore_tiled(model, l, tile=512, overlap=32), whole, atol=1e-6)
