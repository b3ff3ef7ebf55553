"""Noise reduction after the repair: measured noise, off on clean photos, strips, pipeline, CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from PIL import Image

from pikfix import denoise as D
from pikfix.benchmark.damage import _jpeg as jpeg_round_trip
from pikfix.config import preset_config
from pikfix.model import build_model
from pikfix.nets.denoise import Denoiser
from pikfix.pipeline import FixPipeline
from pikfix.training.denoise import (
    DenoiseTrainConfig, capture_only, evaluate, make_pool, noise_recipe, train_denoiser, with_denoiser,
)


def _scene(h: int = 300, w: int = 200) -> np.ndarray:
    """A clean L (H, W) in [0, 100]: shading, a hard edge and fine stripes (texture, not noise)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    l = 45 + 25 * np.sin(x / 37.0) + 15 * (y > h / 2)
    l[: h // 3, : w // 3] += 8 * np.sin(x[: h // 3, : w // 3] * 1.7)  # a textured corner
    return l.astype(np.float32)


def _noisy(l: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return np.clip(l + np.random.default_rng(seed).normal(0, sigma, l.shape), 0, 100).astype(np.float32)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(100**2 / np.mean((a - b) ** 2)))


def test_noise_is_measured_in_the_flattest_areas_and_texture_is_not_taken_for_noise() -> None:
    clean = _scene()
    assert D.noise_sigma(clean) < 0.1 * D.NOISE_THRESHOLD
    low, high = D.noise_sigma(_noisy(clean, 1.5)), D.noise_sigma(_noisy(clean, 4.0))
    assert 1.0 < low < 1.6 and 2.8 < high < 4.2 and high > 2 * low
    assert D.noise_sigma(clean[:10, :10]) == 0.0  # too small to measure


def test_a_clean_photo_is_left_exactly_as_it_is_and_a_noisy_one_is_denoised() -> None:
    clean = _scene()
    out = clean.copy()
    sigma, filtered = D.denoise(out)
    assert sigma < D.NOISE_THRESHOLD and not filtered and np.array_equal(out, clean)
    noisy = _noisy(clean, 3.0)
    out = noisy.copy()
    sigma, filtered = D.denoise(out)
    assert sigma >= D.NOISE_THRESHOLD and filtered
    assert _psnr(out, clean) > _psnr(noisy, clean) + 5
    assert np.abs(out[140:160] - clean[140:160]).mean() < 3  # the edge at row 150 is kept, not blurred away


def _jpeg(l: np.ndarray, quality: int) -> np.ndarray:
    """L in [0, 100] through an 8-bit greyscale JPEG and back (the evaluation recipe's)."""
    return jpeg_round_trip(l / 100.0, quality) * 100.0


def test_the_jpeg_grid_is_seen_only_where_it_lies() -> None:
    noisy = _noisy(_scene(), 3.0)
    assert 0.9 < D.blockiness(noisy) < 1.1  # no grid
    saved = _jpeg(noisy, 55)
    assert D.blockiness(saved) > D.BLOCKINESS_THRESHOLD
    assert D.blockiness(saved[3:, 5:]) < D.BLOCKINESS_THRESHOLD  # cropped: its grid is off ours
    assert D.blockiness(saved[:8, :8]) == 1.0  # too small to tell


def test_blockiness_in_strips_equals_one_pass(monkeypatch) -> None:
    saved = _jpeg(_noisy(_scene(2 * 40 + 13, 90), 3.0), 55)
    whole = D.blockiness(saved)
    monkeypatch.setattr(D, "STRIP_ROWS", 40)  # three strips, the last one short
    assert abs(D.blockiness(saved) - whole) < 1e-6  # float32 sums in another order


def test_noise_a_jpeg_hid_is_filtered_where_the_grid_shows() -> None:
    clean = _scene()
    saved = _jpeg(_noisy(clean, 3.0), 55)  # the JPEG smooths the flat areas the noise is measured in
    out = saved.copy()
    sigma, filtered = D.denoise(out)
    assert D.JPEG_NOISE_THRESHOLD <= sigma < D.NOISE_THRESHOLD and filtered
    assert _psnr(out, clean) > _psnr(saved, clean) + 1
    shifted = saved[3:, 5:].copy()  # the same noise level without the grid: left alone
    sigma, filtered = D.denoise(shifted)
    assert sigma < D.NOISE_THRESHOLD and not filtered and np.array_equal(shifted, saved[3:, 5:])


def test_denoising_in_strips_equals_filtering_the_whole_photo(monkeypatch) -> None:
    monkeypatch.setattr(D, "FILTER_STRIP_PIXELS", 256 * 90)  # strips of 256 rows
    noisy = _noisy(_scene(2 * 256 + 37, 90), 3.0)  # three strips, the last one short
    sigma = D.noise_sigma(noisy)
    whole = F.pad(torch.from_numpy(noisy)[None, None], (D.RADIUS,) * 4, mode="reflect")
    expected = D._bilateral(whole, D.RANGE_FACTOR * sigma)[0, 0].clamp(0, 100).numpy()
    out = noisy.copy()
    D.denoise(out, sigma)
    assert np.abs(out - expected).max() < 1e-4


def test_the_pipeline_denoises_unless_told_not_to() -> None:
    """The tiny model's repair and tone head start as the identity: what changes is the filter."""
    model = build_model("tiny").eval()
    clean = _scene(160, 128)
    noisy = _noisy(clean, 3.0)
    nothing = np.zeros_like(noisy)
    on = FixPipeline(model, "cpu", tile=64, tile_overlap=16).restore_l(noisy, mask=nothing)
    off = FixPipeline(model, "cpu", tile=64, tile_overlap=16, denoise=False).restore_l(noisy, mask=nothing)
    assert on.denoised and on.noise > 2 and off.noise is None and not off.denoised
    assert np.abs(off.l - noisy).max() < 1e-3
    assert _psnr(on.l, clean) > _psnr(off.l, clean) + 4
    clean_out = FixPipeline(model, "cpu", tile=64, tile_overlap=16).restore_l(clean, mask=nothing)
    assert not clean_out.denoised and np.abs(clean_out.l - clean).max() < 1e-3


# --------------------------------------------------------------------------- the learned denoiser

def _learned(width: int = 4, shift: float = 0.0) -> Denoiser:
    """A denoiser whose predicted noise is the constant ``shift`` (L / 100): a visible, known effect."""
    net = Denoiser(width).eval()
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.fill_(shift)
    return net


def test_an_untrained_denoiser_is_the_identity_but_one_to_train_starts_at_random() -> None:
    l = torch.rand(1, 1, 34, 50)
    assert torch.equal(Denoiser(8)(l, torch.tensor([2.0])), l)
    assert preset_config("lite").restoration.denoiser_width > 0  # the presets have one, as they have a tone head
    fresh = with_denoiser(build_model("tiny"), 8).restoration.denoiser
    assert bool(fresh.body[-1].weight.detach().abs().sum() > 0)


def test_the_learned_denoiser_keeps_odd_sizes() -> None:
    net = _learned(shift=0.02)
    noisy = _noisy(_scene(37, 53), 3.0)
    assert net(torch.from_numpy(noisy)[None, None] / 100, torch.tensor([3.0])).shape == (1, 1, 37, 53)
    out = noisy.copy()
    D.denoise(out, net=net)
    np.testing.assert_allclose(out, np.clip(noisy - 2.0, 0, 100), atol=1e-3)


@pytest.mark.parametrize("depth", [6, 8])
def test_the_learned_denoiser_runs_in_strips_like_on_the_whole_photo(monkeypatch, depth: int) -> None:
    monkeypatch.setattr(D, "FILTER_STRIP_PIXELS", 256 * 90)  # strips of 256 rows
    net = Denoiser(4, depth).eval()
    halo = net.halo
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    noisy = _noisy(_scene(2 * 256 + 37, 90), 3.0)  # three strips, the last one short
    sigma = D.noise_sigma(noisy)
    whole = F.pad(torch.from_numpy(noisy)[None, None], (halo,) * 4, mode="reflect")
    with torch.no_grad():
        expected = (net(whole / 100, torch.tensor([sigma])) * 100)[0, 0, halo:-halo, halo:-halo].clamp(0, 100).numpy()
    out = noisy.copy()
    assert D.denoise(out, net=net) == (sigma, True)
    assert np.abs(out - expected).max() < 1e-3
    monkeypatch.setattr(D, "FILTER_STRIP_PIXELS", 1)  # the smallest strips: twice the context
    narrow = noisy.copy()
    D.denoise(narrow, net=net)
    assert np.abs(narrow - expected).max() < 1e-3
    louder = noisy.copy()
    D.denoise(louder, sigma=3 * sigma, net=net)
    assert np.abs(louder - out).max() > 0.1  # the net is told the noise level
    clean = _scene()
    kept = clean.copy()
    assert not D.denoise(kept, net=_learned(shift=0.1))[1] and np.array_equal(kept, clean)  # below the threshold: off


def test_the_pipeline_uses_the_models_learned_denoiser() -> None:
    model = with_denoiser(build_model("tiny"), 4).eval()
    model.restoration.denoiser = _learned(shift=0.05)  # "noise" of 5 L everywhere
    noisy = _noisy(_scene(160, 128), 3.0)
    nothing = np.zeros_like(noisy)
    out = FixPipeline(model, "cpu", tile=64, tile_overlap=16).restore_l(noisy, mask=nothing)
    assert out.denoised
    np.testing.assert_allclose(out.l, np.clip(noisy - 5.0, 0, 100), atol=1e-3)


def test_denoiser_samples_are_reproducible_and_training_lowers_the_error(tmp_path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        yy, xx = np.mgrid[0:160, 0:200] / 200.0
        rgb = np.stack([xx, yy, 0.5 + 0.3 * np.sin(xx * 9 + i)], -1) * rng.uniform(0.6, 1, 3)
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(paths[-1])
    assert all(getattr(capture_only(), name) == 0 for name in ("p_scratches", "p_dust", "p_fade", "p_cracks"))
    noise_only = dataclasses.replace(  # what a few steps can learn: noise, not blur
        capture_only(), p_grain=0.0, p_blur=0.0, p_defocus=0.0, p_motion=0.0, p_lowres=0.0, p_jpeg=0.0,
        p_halftone=0.0, p_paper=0.0, p_noise=1.0,
    )
    config = DenoiseTrainConfig(
        width=8, crop=32, batch_size=16, steps=150, lr=3e-3, scan_long_side=(200, 300), degradation=noise_only
    )
    pool = make_pool(paths, config, 64, seed=0, log=lambda _: None)
    again = make_pool(paths, config, 64, seed=0, log=lambda _: None)
    assert all(torch.equal(getattr(pool, f), getattr(again, f)) for f in ("inputs", "targets", "sigmas"))
    noisy = (pool.inputs != pool.targets).flatten(1).any(1)
    assert pool.sigmas[noisy].mean() > pool.sigmas[~noisy].mean()  # each sample's measured noise
    val = make_pool(paths, config, 32, seed=1, log=lambda _: None)
    model = with_denoiser(build_model("tiny"), config.width)
    before = evaluate(model, val)
    saved = []
    after = train_denoiser(model, pool, val, config, save=saved.append, log=lambda _: None)
    assert after["step"] == 150 and saved and saved[-1]["step"] == 150
    assert after["l1"] < 0.9 * before["l1"]  # from its random start towards the targets


def test_with_soft_targets_the_blur_is_in_the_target_and_only_the_noise_is_drawn(tmp_path) -> None:
    """``noise_recipe`` draws no blur; ``soft_fraction`` blurs the window before the damage, so
    input and target share the blur (clean samples: equal), and a pool without it is unchanged."""
    rng = np.random.default_rng(1)
    path = tmp_path / "sharp.png"
    Image.fromarray((rng.random((160, 200, 3)) * 255).astype(np.uint8)).save(path)
    recipe = noise_recipe()
    assert (recipe.p_blur, recipe.p_defocus, recipe.p_motion, recipe.p_lowres) == (0.0, 0.0, 0.0, 0.0)
    assert recipe.p_noise == capture_only().p_noise > 0
    base = DenoiseTrainConfig(crop=32, scan_long_side=(200, 300), degradation=recipe, clean_fraction=1.0)
    sharp = make_pool([path], base, 16, seed=0, log=lambda _: None)
    soft = make_pool([path], dataclasses.replace(base, soft_fraction=1.0), 16, seed=0, log=lambda _: None)
    assert torch.equal(soft.inputs, soft.targets)  # clean samples: the blur is not the damage

    def detail(t: torch.Tensor) -> float:
        return float((t[..., 1:, :] - t[..., :-1, :]).abs().mean())

    assert detail(soft.targets) < 0.7 * detail(sharp.targets)
    again = make_pool([path], dataclasses.replace(base, soft_fraction=0.0), 16, seed=0, log=lambda _: None)
    assert torch.equal(again.targets, sharp.targets)
