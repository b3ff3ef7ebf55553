"""Training-free baselines: grey floor, classical restoration, Reinhard-style colour transfer.

Lab values are checked with scikit-image's converter, independent of pikfix.color.
"""

from __future__ import annotations

import numpy as np
import pytest

from pikfix.benchmark import baselines
from pikfix.benchmark.baselines import classical_baseline, classical_restore, grey_baseline, reinhard_transfer
from pikfix.metrics import colorfulness

skcolor = pytest.importorskip("skimage.color")

H, W = 37, 53  # odd on purpose


def gradient(height: int = H, width: int = W) -> np.ndarray:
    """A smooth horizontal lightness ramp (L/100) from 0.2 to 0.8."""
    ramp = np.linspace(0.2, 0.8, width, dtype=np.float32)
    return np.repeat(ramp[None, :], height, axis=0)


def grey_rgb(lightness: np.ndarray) -> np.ndarray:
    """Neutral sRGB with the given L/100, via scikit-image."""
    lab = np.stack([lightness * 100.0, np.zeros_like(lightness), np.zeros_like(lightness)], axis=-1)
    return skcolor.lab2rgb(lab.astype(np.float64)).astype(np.float32)


def colour_photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W]).reshape(2, 1, 1)
    rgb = np.stack([0.3 + 0.6 * xx, 0.2 + 0.5 * yy, 0.6 - 0.4 * xx * yy], axis=-1)
    return np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1).astype(np.float32)


def reference(mean_a: float, mean_b: float, shape: tuple[int, int] = (48, 64), seed: int = 1) -> np.ndarray:
    """A colour reference with L spread over 30..70 and chroma scattered around (mean_a, mean_b)."""
    rng = np.random.default_rng(seed)
    lab = np.stack([rng.uniform(30, 70, shape), rng.normal(mean_a, 3, shape), rng.normal(mean_b, 3, shape)], axis=-1)
    return np.clip(skcolor.lab2rgb(lab), 0, 1).astype(np.float32)


def lab_of(rgb: np.ndarray) -> np.ndarray:
    return skcolor.rgb2lab(rgb.astype(np.float64))


def test_grey_baseline_is_grey_and_keeps_lightness() -> None:
    photo = colour_photo()
    out = grey_baseline(photo)
    assert out.shape == photo.shape and out.dtype == np.float32
    assert colorfulness(out) < 1e-3
    np.testing.assert_allclose(lab_of(out)[..., 0], lab_of(photo)[..., 0], atol=0.05)


def test_classical_restore_removes_a_thin_white_scratch_and_keeps_the_gradient() -> None:
    clean = gradient()
    damaged = clean.copy()
    rows = np.arange(H)
    cols = (5 + rows * 1.1).astype(int)  # a 1-px diagonal scratch
    damaged[rows, cols] = 1.0
    restored = classical_restore(damaged)
    scratch_error_before = np.abs(damaged - clean)[rows, cols].mean()
    scratch_error_after = np.abs(restored - clean)[rows, cols].mean()
    assert scratch_error_after < scratch_error_before / 20
    assert np.abs(restored - clean).max() < 0.03


def test_classical_restore_inpaints_a_scratch_too_wide_for_the_3x3_median() -> None:
    clean = gradient()
    damaged = clean.copy()
    damaged[:, 20:22] = 0.0  # 2-px dark vertical scratch: survives a 3x3 median
    restored = classical_restore(damaged)
    assert np.abs(restored - clean)[:, 20:22].mean() < 0.02
    # Far from the scratch the ramp is untouched (a 3x3 median of a linear ramp is the ramp).
    far = np.r_[0:14, 28:W]
    np.testing.assert_allclose(restored[:, far], clean[:, far], atol=1e-6)


def test_classical_restore_removes_dust_specks() -> None:
    clean = gradient()
    damaged = clean.copy()
    rng = np.random.default_rng(4)
    specks = rng.random(clean.shape) < 0.02
    damaged[specks] = rng.choice([0.0, 1.0], size=int(specks.sum()))
    restored = classical_restore(damaged)
    assert np.abs(restored - clean).mean() < np.abs(damaged - clean).mean() / 10


def test_classical_restore_strips_equal_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    # Mild noise (kept), specks and a scratch (filled), so both paths cross strip borders.
    rng = np.random.default_rng(5)
    image = gradient() + rng.normal(0, 0.02, (H, W)).astype(np.float32)
    image[rng.random((H, W)) < 0.03] = 1.0
    image[:, 17] = 0.0
    whole = classical_restore(image)
    monkeypatch.setattr(baselines, "STRIP_ROWS", 5)
    np.testing.assert_allclose(classical_restore(image), whole, atol=1e-6)


def test_reinhard_moves_mean_chroma_to_the_reference() -> None:
    ref = reference(15.0, 25.0)
    ref_lab = lab_of(ref)
    for source in (gradient(), grey_rgb(gradient())):
        out_lab = lab_of(reinhard_transfer(source, ref))
        assert out_lab[..., 1].mean() == pytest.approx(ref_lab[..., 1].mean(), abs=1.5)
        assert out_lab[..., 2].mean() == pytest.approx(ref_lab[..., 2].mean(), abs=1.5)
        np.testing.assert_allclose(out_lab[..., 0], gradient() * 100.0, atol=0.5)


def test_reinhard_bins_follow_lightness_after_exposure_matching() -> None:
    # Reference: dark pixels blue (b < 0), bright pixels orange (b > 0).
    rng = np.random.default_rng(2)
    l_ref = rng.uniform(30, 80, (40, 40))
    lab = np.stack([l_ref, np.zeros_like(l_ref), np.where(l_ref < 55, -30.0, 30.0)], axis=-1)
    ref = np.clip(skcolor.lab2rgb(lab), 0, 1).astype(np.float32)
    # Input is darker overall (L 10..40): shadows still map to the reference's shadows.
    dim = np.repeat(np.linspace(0.1, 0.4, W, dtype=np.float32)[None, :], H, axis=0)
    out_b = lab_of(reinhard_transfer(dim, ref))[..., 2]
    assert out_b[:, :10].mean() < -15
    assert out_b[:, -10:].mean() > 15
    # One bin is the plain variant: the same mean chroma everywhere.
    flat_b = lab_of(reinhard_transfer(dim, ref, bins=1))[..., 2]
    assert np.ptp(flat_b[:, 5:]) < 2.0


def test_classical_baseline_restores_and_colours() -> None:
    clean = gradient()
    damaged = clean.copy()
    damaged[:, 30] = 1.0
    ref = reference(-10.0, 20.0)
    out_lab = lab_of(classical_baseline(grey_rgb(damaged), ref))
    ref_lab = lab_of(ref)
    assert out_lab[..., 1].mean() == pytest.approx(ref_lab[..., 1].mean(), abs=1.5)
    assert out_lab[..., 2].mean() == pytest.approx(ref_lab[..., 2].mean(), abs=1.5)
    assert np.abs(out_lab[:, 30, 0] - clean[:, 30] * 100.0).mean() < 2.0


def test_baselines_keep_odd_sizes_and_range() -> None:
    photo = colour_photo()
    ref = reference(5.0, 5.0, shape=(21, 33))
    outputs = [grey_baseline(photo), reinhard_transfer(photo, ref), classical_baseline(photo, ref)]
    for out in outputs:
        assert out.shape == (H, W, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert classical_restore(gradient()).shape == (H, W)


def test_integer_images_are_rejected() -> None:
    with pytest.raises(TypeError):
        grey_baseline(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(TypeError):
        classical_restore(np.zeros((4, 4), dtype=np.uint8))
