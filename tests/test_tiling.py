"""Tiled restoration matches whole-image restoration."""

import torch
import torch.nn.functional as F

from pikfix.model import PikFix, build_model
from pikfix.tiling import restore_tiled


def _randomised(model: PikFix) -> PikFix:
    """The restoration output conv starts at zero (identity); give it weights so tiles matter."""
    torch.nn.init.normal_(model.restoration.fuse[-1].weight, std=0.05)
    return model


def test_tiled_matches_untiled():
    model = _randomised(build_model("lite")).eval()
    l = F.avg_pool2d(torch.rand(1, 1, 203, 301) * 2 - 1, 3, 1, 1)
    with torch.no_grad():
        whole = model.restore(l)
    calls = []
    tiled = restore_tiled(model, l, tile=64, overlap=48, progress=lambda d, t: calls.append((d, t)))
    assert tiled.shape == whole.shape
    assert (whole - l).abs().mean() > 1e-3  # the net does change the image
    assert (tiled - whole).abs().max() < 1e-3
    assert calls[-1] == (len(calls), len(calls)) and len(calls) == 4 * 5


def test_single_tile_is_exact():
    model = _randomised(build_model("tiny")).eval()
    l = torch.rand(1, 1, 45, 70) * 2 - 1
    with torch.no_grad():
        whole = model.restore(l)
    assert torch.allclose(restore_tiled(model, l, tile=512, overlap=32), whole, atol=1e-6)
