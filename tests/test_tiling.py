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
    tiled, mask = restore_tiled(model, l, tile=64, overlap=48, progress=lambda d, t: calls.append((d, t)))
    assert tiled.shape == whole.l.shape and mask.shape == whole.mask.shape
    assert (whole.l - l).abs().mean() > 1e-3  # the net does change the image
    assert (tiled - whole.l).abs().max() < 1e-3
    # The detector sees less context at tile borders too, but its mask agrees closely.
    assert (mask - whole.mask).abs().max() < 1e-2
    assert calls[-1] == (len(calls), len(calls)) and len(calls) == 4 * 5


def test_a_given_mask_is_tiled_and_used():
    model = _randomised(build_model("tiny")).eval()
    l = torch.rand(1, 1, 70, 90) * 2 - 1
    given = torch.zeros(1, 1, 70, 90)
    given[..., 20:30, :] = 1.0
    with torch.no_grad():
        whole = model.restore(l, given)
        detected = model.restore(l)
    tiled, mask = restore_tiled(model, l, tile=64, overlap=32, mask=given)
    assert torch.equal(mask, given)  # the mask the repair used is the one given
    assert (tiled - whole.l).abs().max() < 1e-3
    assert (whole.l - detected.l).abs().max() > 1e-5  # and it changes the repair (float noise: 1e-7)


def test_single_tile_is_exact():
    model = _randomised(build_model("tiny")).eval()
    l = torch.rand(1, 1, 45, 70) * 2 - 1
    with torch.no_grad():
        whole = model.restore(l)
    tiled, mask = restore_tiled(model, l, tile=512, overlap=32)
    assert torch.allclose(tiled, whole.l, atol=1e-6) and torch.allclose(mask, whole.mask, atol=1e-6)
