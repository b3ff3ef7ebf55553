"""Metrics against closed forms and against scikit-image / scipy as independent references."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from pikfix import metrics
from pikfix.metrics import LPIPSMetric, colorfulness, lpips_status, mean_ci95, psnr, ssim, summarize, t975

skimage_metrics = pytest.importorskip("skimage.metrics")
ndimage = pytest.importorskip("scipy.ndimage")
scipy_stats = pytest.importorskip("scipy.stats")


def sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return skimage_metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255
    )


def to_chw(image_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image_u8).permute(2, 0, 1).float() / 255.0


def image_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of 32x40 uint8 images: random noise, and a smooth structure with a distorted copy."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    noisy = np.clip(noise.astype(int) + rng.integers(-60, 61, noise.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:32, 0:40]
    smooth = np.stack([xx * 6, yy * 7, (xx + yy) * 3 + 20 * (xx % 8 < 4)], axis=-1).clip(0, 255).astype(np.uint8)
    shifted = np.roll(smooth, 2, axis=1) // 2 + 60
    return [(noise, noisy), (smooth, shifted), (smooth, noise)]


@pytest.mark.parametrize("k", [1, 5, 64])
def test_psnr_closed_form(k: int) -> None:
    zeros = torch.zeros(3, 8, 9)
    level = torch.full((3, 8, 9), k / 255.0)
    assert psnr(zeros, level) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)


def test_psnr_data_range_scales_inputs() -> None:
    zeros = torch.zeros(3, 4, 4)
    level = torch.full((3, 4, 4), 5 * 2.0 / 255.0)  # 5 steps of 8 bits when the range is [0, 2]
    assert psnr(zeros, level, data_range=2.0) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)


def test_identical_images_give_inf_psnr_and_unit_ssim() -> None:
    image = torch.rand(3, 16, 20, generator=torch.Generator().manual_seed(1))
    assert psnr(image, image.clone()) == math.inf
    assert ssim(image, image.clone()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("pair", range(3))
def test_psnr_and_ssim_match_scikit_image(pair: int) -> None:
    a, b = image_pairs()[pair]
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(a, b, data_range=255)
    expected_ssim = sk_ssim(a, b)
    # uint8 numpy path and float tensor path give the same numbers.
    assert psnr(a, b) == pytest.approx(expected_psnr, abs=1e-4)
    assert psnr(to_chw(a), to_chw(b)) == pytest.approx(expected_psnr, abs=1e-4)
    assert ssim(a, b) == pytest.approx(expected_ssim, abs=1e-4)
    assert ssim(to_chw(a), to_chw(b)) == pytest.approx(expected_ssim, abs=1e-4)


def test_float_inputs_are_rounded_to_8_bits() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random((24, 30, 3)), rng.random((24, 30, 3))
    a8, b8 = (np.round(a * 255).astype(np.uint8) for a in (a, b))
    assert psnr(a, b) == pytest.approx(skimage_metrics.peak_signal_noise_ratio(a8, b8, data_range=255), abs=1e-4)
    assert ssim(a, b) == pytest.approx(sk_ssim(a8, b8), abs=1e-4)


def test_ssim_strips_give_the_whole_image_result(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = image_pairs()[1]
    monkeypatch.setattr(metrics, "_SSIM_STRIP_ROWS", 7)
    assert ssim(a, b) == pytest.approx(sk_ssim(a, b), abs=1e-4)


def test_batch_returns_mean_of_per_image_values() -> None:
    (a1, b1), (a2, b2) = image_pairs()[:2]
    batch_a = torch.stack([to_chw(a1), to_chw(a2)])
    batch_b = torch.stack([to_chw(b1), to_chw(b2)])
    assert ssim(batch_a, batch_b) == pytest.approx((sk_ssim(a1, b1) + sk_ssim(a2, b2)) / 2, abs=1e-4)
    expected = [skimage_metrics.peak_signal_noise_ratio(a, b, data_range=255) for a, b in [(a1, b1), (a2, b2)]]
    assert psnr(batch_a, batch_b) == pytest.approx(sum(expected) / 2, abs=1e-4)


def reference_ssim_small(a: np.ndarray, b: np.ndarray, radius: int) -> float:
    """Wang et al. SSIM with a Gaussian (sigma 1.5) truncated at ``radius``, via scipy, valid region."""
    truncate = radius / 1.5
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)

        def blur(v: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(v, sigma=1.5, truncate=truncate, mode="reflect")

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        scores.append(s[radius : s.shape[0] - radius, radius : s.shape[1] - radius].mean())
    return float(np.mean(scores))


@pytest.mark.parametrize(("shape", "radius"), [((7, 9), 3), ((10, 5), 2), ((9, 12), 4)])
def test_ssim_shrinks_the_window_on_small_images(shape: tuple[int, int], radius: int) -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(reference_ssim_small(a, b, radius), abs=1e-6)


def test_ssim_on_a_single_pixel_is_the_luminance_term() -> None:
    a = np.array([[[100, 100, 100]]], dtype=np.uint8)
    b = np.array([[[120, 120, 120]]], dtype=np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1), abs=1e-12)


def test_ssim_of_constant_images() -> None:
    a = np.full((16, 16, 3), 80, dtype=np.uint8)
    b = np.full((16, 16, 3), 200, dtype=np.uint8)
    c1 = (0.01 * 255) ** 2
    # Zero variances: the contrast-structure term is C2 / C2 = 1, only the luminance term remains.
    assert ssim(a, b) == pytest.approx((2 * 80 * 200 + c1) / (80**2 + 200**2 + c1), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_colorfulness_is_zero_for_grey() -> None:
    grey = np.repeat(np.random.default_rng(0).random((20, 30, 1)), 3, axis=2)
    assert colorfulness(grey) == pytest.approx(0.0, abs=1e-9)


def test_colorfulness_matches_the_formula() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    expected = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    assert colorfulness(rgb) == pytest.approx(expected, rel=1e-9)
    assert colorfulness(to_chw(rgb)) == pytest.approx(expected, rel=1e-5)


def test_colorfulness_orders_saturation() -> None:
    rgb = np.random.default_rng(2).random((20, 30, 3))
    grey = rgb.mean(axis=2, keepdims=True)
    desaturated = grey + 0.3 * (rgb - grey)
    assert colorfulness(rgb) > colorfulness(desaturated) > 0.0


def test_mean_ci95_hand_computed() -> None:
    mean, low, high = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = sqrt(2.5), t(0.975, 4) = 2.7764, half width = 2.7764 * sqrt(2.5) / sqrt(5) = 1.96321
    assert mean == 3.0
    assert low == pytest.approx(3.0 - 1.96321, abs=1e-4)
    assert high == pytest.approx(3.0 + 1.96321, abs=1e-4)
    assert mean_ci95([7.5]) == (7.5, 7.5, 7.5)


def test_t_quantiles_match_scipy() -> None:
    for dof in range(1, 201):
        assert t975(dof) == pytest.approx(scipy_stats.t.ppf(0.975, dof), abs=1e-4)


def test_mean_ci95_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="summarize"):
        mean_ci95([1.0, math.inf])
    with pytest.raises(ValueError):
        mean_ci95([])


def test_summarize_sets_inf_aside() -> None:
    summary = summarize([math.inf, 1.0, 2.0, 3.0, 4.0, 5.0, math.inf])
    assert (summary.n, summary.n_inf) == (7, 2)
    assert (summary.mean, summary.low, summary.high) == pytest.approx(mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert summarize([math.inf, math.inf]) == (math.inf, math.inf, math.inf, 2, 2)
    with pytest.raises(ValueError):
        summarize([1.0, math.nan])


def test_lpips_unavailable_here_with_a_clear_reason(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    available, reason = lpips_status("alex")
    assert not available
    # torchvision's AlexNet ImageNet weights file, and where torch.hub would put it.
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert str(expected) in reason
    with pytest.raises(RuntimeError, match="alexnet-owt-7be5be79.pth"):
        LPIPSMetric("alex")


def test_lpips_status_sees_cached_weights(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoint = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    available, reason = lpips_status("vgg")
    lpips_installed = importlib.util.find_spec("lpips") is not None
    assert available == lpips_installed
    if not lpips_installed:
        assert "lpips" in reason and "weights" not in reason


def test_delta_ab_is_the_mean_chroma_distance():
    import torch

    from pikfix.color import rgb_to_lab
    from pikfix.metrics import delta_ab

    rng = np.random.default_rng(0)
    img = rng.random((8, 9, 3)).astype(np.float32)
    assert delta_ab(img, img) == pytest.approx(0.0, abs=1e-6)
    grey = np.full((8, 9, 3), 0.5, dtype=np.float32)
    chroma = rgb_to_lab(torch.from_numpy(img).permute(2, 0, 1))[1:].norm(dim=0).mean()
    assert delta_ab(img, grey) == pytest.approx(float(chroma), rel=1e-4)  # grey has a = b = 0
    with pytest.raises(ValueError):
        delta_ab(img, grey[:4])
