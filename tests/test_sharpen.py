"""The sharpener after the denoiser: on only where it would change the photo enough, at the
viewing size, strips, the pipeline's grey path by default (not the colour path), and its training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pikfix import denoise as D
from pikfix.model import build_model
from pikfix import pipeline as P
from pikfix.checkpoint import load_checkpoint, save_checkpoint
from pikfix.nets.denoise import BLOCK, Sharpener
from pikfix.pipeline import FixPipeline, sharpen_at_viewing_size
from pikfix.training.denoise import (
    evaluate, head_net, head_shape, make_pool, same_shape, sharpener_config, train_denoiser, with_denoiser,
)
from pikfix.training.colour_tone import with_colour_tone


def _scene(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return (50 + 20 * np.sin(x / 9.0) + 15 * (y > h / 2)).astype(np.float32)


def _constant(shift: float) -> Sharpener:
    """A sharpener whose output is its input minus ``shift`` L everywhere: a known mean change."""
    net = Sharpener(4).eval()
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.fill_(shift / 100.0)
    return net


def test_a_small_change_is_dropped_and_a_large_one_applied_in_full() -> None:
    lo, hi = D.SHARPEN_DEAD_ZONE
    l = _scene(300, 120)
    small = l.copy()
    change, weight = D.sharpen(small, _constant(0.6 * lo))
    assert change == pytest.approx(0.6 * lo, abs=1e-3) and weight == 0.0 and np.array_equal(small, l)
    middle = l.copy()
    change, weight = D.sharpen(middle, _constant((lo + hi) / 2))
    assert weight == pytest.approx(0.5, abs=1e-3)
    np.testing.assert_allclose(middle, l - 0.5 * (lo + hi) / 2, atol=1e-3)
    large = l.copy()
    assert D.sharpen(large, _constant(2 * hi))[1] == 1.0
    np.testing.assert_allclose(large, l - 2 * hi, atol=1e-3)


def test_the_change_is_measured_over_the_whole_photo(monkeypatch) -> None:
    """A sharpener that changes only the last rows by 2 L: its mean change is their share x 2."""

    def last_rows(net: Sharpener, sigma: float):
        def run(padded: torch.Tensor) -> torch.Tensor:
            out = padded[..., net.halo : -net.halo, net.halo : -net.halo].clone()
            out[..., -10:, :] += 2.0
            return out
        return run

    monkeypatch.setattr(D, "_net_filter", last_rows)
    l = _scene(200, 40)
    out = l.copy()
    change, weight = D.sharpen(out, Sharpener(4))
    assert change == pytest.approx(2.0 * 10 / 200, abs=1e-5) and weight == 0.0 and np.array_equal(out, l)


@pytest.mark.parametrize("depth", [6, 10])
def test_sharpening_in_strips_equals_the_net_on_the_whole_photo(monkeypatch, depth: int) -> None:
    monkeypatch.setattr(D, "SHARPEN_DEAD_ZONE", (0.0, 1e-6))
    torch.manual_seed(0)
    net = Sharpener(4, depth).eval()
    net.body[-1].reset_parameters()
    halo = net.halo
    assert halo == 2 * BLOCK * depth and len([m for m in net.body if isinstance(m, torch.nn.Conv2d)]) == depth
    monkeypatch.setattr(D, "FILTER_STRIP_PIXELS", 256 * 90)  # strips of 256 rows
    l = _scene(256 * 2 + 37, 90)  # three strips, the last one short
    padded = F.pad(torch.from_numpy(l)[None, None], (halo,) * 4, mode="reflect")
    with torch.no_grad():
        whole = (net(padded / 100.0, torch.tensor([D.noise_sigma(l)])) * 100.0)[0, 0, halo:-halo, halo:-halo]
    out = l.copy()
    assert D.sharpen(out, net)[1] == 1.0
    np.testing.assert_allclose(out, whole.clamp(0, 100).numpy(), atol=2e-3)


def test_a_large_photo_is_sharpened_at_the_viewing_size(monkeypatch) -> None:
    monkeypatch.setattr(P, "SHARPEN_SIDE", 64)
    net = _constant(3.0)
    seen: list[tuple[int, ...]] = []
    net.register_forward_hook(lambda _m, inputs, _o: seen.append(tuple(inputs[0].shape[-2:])))
    l = _scene(200, 150)
    out = l.copy()
    assert sharpen_at_viewing_size(out, net) == 1.0
    assert seen and all(max(shape) <= 64 + 2 * net.halo for shape in seen)  # never the full-size photo
    np.testing.assert_allclose(out, np.clip(l - 3.0, 0, 100), atol=1e-3)  # the change, resized back
    small, direct = _scene(60, 50), _scene(60, 50)
    assert sharpen_at_viewing_size(small, net) == D.sharpen(direct, net)[1] == 1.0
    np.testing.assert_array_equal(small, direct)  # at most SHARPEN_SIDE: sharpened as it is
    kept = l.copy()
    assert sharpen_at_viewing_size(kept, _constant(0.1)) == 0.0 and np.array_equal(kept, l)


def test_a_deeper_sharpener_is_built_saved_and_loaded(tmp_path) -> None:
    model = with_denoiser(build_model("tiny"), 8, "sharpener", depth=10)
    net = model.restoration.sharpener
    assert model.config.restoration.sharpener_depth == 10 and same_shape(model, "sharpener", 8, 10)
    assert not same_shape(model, "sharpener", 8, 6) and not same_shape(model, "sharpener", 16, 10)
    assert not same_shape(build_model("tiny"), "sharpener", 8, 10)  # none at all
    assert head_shape(model, "sharpener") == (8, 10) and head_shape(model, "sharpener", 16) == (16, 10)  # continued
    assert head_shape(build_model("tiny"), "sharpener") == (32, 6)  # a fresh one's defaults
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert same_shape(loaded, "sharpener", 8, 10) and loaded.restoration.sharpener.halo == net.halo


def test_the_pipeline_sharpens_grey_photos_unless_told_not_to() -> None:
    model = with_colour_tone(with_denoiser(build_model("tiny"), 4, "sharpener"), 8).eval()
    model.restoration.sharpener = _constant(3.0)
    l = _scene(96, 80)
    nothing = np.zeros_like(l)
    assert FixPipeline(model, "cpu", tile=64, tile_overlap=16, sharpen=False).restore_l(l, mask=nothing).sharpened == 0.0
    pipe = FixPipeline(model, "cpu", tile=64, tile_overlap=16)
    grey = pipe.restore_l(l, mask=nothing)
    assert grey.sharpened == 1.0
    np.testing.assert_allclose(grey.l, np.clip(l - 3.0, 0, 100), atol=1e-3)
    rgb = np.repeat((l / 100.0)[..., None], 3, -1) * np.array([1.0, 0.8, 0.6], dtype=np.float32)
    _, colour = pipe.restore_colour_photo(rgb)
    assert colour.sharpened == 0.0  # the colour path keeps a photo's own texture
    kept = FixPipeline(model, "cpu", tile=64, denoise=False).restore_l(l, mask=nothing)
    assert kept.sharpened == 0.0  # --no-denoise keeps grain and softness
    np.testing.assert_allclose(kept.l, l, atol=1e-3)


def test_sharpener_training_fits_the_sharpener_on_soft_samples(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        yy, xx = np.mgrid[0:160, 0:200] / 200.0
        rgb = np.stack([xx, yy, 0.5 + 0.3 * np.sin(xx * 40 + i) * np.sin(yy * 30)], -1) * rng.uniform(0.6, 1, 3)
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(paths[-1])
    config = sharpener_config(width=8, crop=32, batch_size=16, steps=150, lr=3e-3, scan_long_side=(200, 300))
    assert config.head == "sharpener" and config.loss == "l2"
    assert config.degradation.p_blur + config.degradation.p_defocus > 0.5 and config.degradation.p_scratches == 0
    pool = make_pool(paths, config, 64, seed=0, log=lambda _: None)
    shifted = make_pool(paths, config, 64, seed=0, log=lambda _: None, noise_step=lambda l: np.subtract(l, 1.0, out=l))
    torch.testing.assert_close(shifted.inputs, pool.inputs - 0.01)  # the noise step runs on the inputs only
    torch.testing.assert_close(shifted.targets, pool.targets)
    val = make_pool(paths, config, 32, seed=1, log=lambda _: None)
    model = with_denoiser(build_model("tiny"), config.width, "sharpener")
    assert model.restoration.denoiser is None and head_net(model, "sharpener") is model.restoration.sharpener
    before = evaluate(model, val, "sharpener")
    after = train_denoiser(model, pool, val, config, log=lambda _: None)
    assert after["step"] == 150 and after["l1"] < 0.9 * before["l1"]
    with pytest.raises(ValueError, match="unknown loss"):
        train_denoiser(model, pool, val, dataclasses.replace(config, loss="l3"), log=lambda _: None)
    with pytest.raises(ValueError, match="no denoiser"):
        head_net(model, "denoiser")
    with pytest.raises(ValueError, match="unknown head"):
        head_net(model, "tone")
