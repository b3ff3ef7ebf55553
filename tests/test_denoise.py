"""Noise reduction after the repair: measured noise, off on clean photos, strips, pipeline, CLI."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pikfix import denoise as D
from pikfix.model import build_model
from pikfix.pipeline import FixPipeline


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


def test_denoising_in_strips_equals_filtering_the_whole_photo() -> None:
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
