"""Colour-input detection (grey / toned / colour) and the correction of faded colour photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pikfix.color import luminance, rgb_to_lab
from pikfix.colour_input import classify, fit_correction, restore_colour


def _scene(seed: int = 0, h: int = 96, w: int = 128) -> np.ndarray:
    """A colour picture: neutral shadows to highlights under several regions of different hues."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    tone = 0.02 + 0.96 * (0.6 * xx + 0.4 * (1 - yy))
    img = np.repeat(tone[..., None], 3, axis=2)
    for _ in range(6):  # mid-tone regions: the darkest and brightest tones stay neutral
        y, x = rng.integers(h // 8, h - 30 - h // 8), rng.integers(w // 4, w - 30 - w // 8)
        img[y : y + 30, x : x + 30] *= rng.uniform(0.5, 1.1, 3)
    return np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1).astype(np.float32)


def _jpeg(rgb: np.ndarray, quality: int = 60) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.repeat((luminance(rgb) / 100.0)[..., None], 3, axis=2)


def _sepia(rgb: np.ndarray, split: float = 0.0) -> np.ndarray:
    """Toned print: one hue whose strength follows the tone; ``split`` warms highlights more."""
    rng = np.random.default_rng(1)
    t = np.clip(luminance(rgb) / 100.0 + rng.normal(0, 0.015, rgb.shape[:2]), 0, 1)  # film grain
    warm = 0.12 * np.sin(np.pi * t) + split * t
    out = np.stack([t + 0.5 * warm, t, t - warm], axis=-1)
    return np.clip(out + rng.normal(0, 0.004, out.shape), 0, 1).astype(np.float32)  # scanner noise


def _fade(rgb: np.ndarray) -> np.ndarray:
    """Dull colour, lifted blacks, dimmed whites and a yellow-red cast."""
    grey = _grey(rgb)
    out = (grey + 0.6 * (rgb - grey)) * np.array([1.05, 0.97, 0.82])
    return np.clip(0.12 + 0.7 * out, 0, 1).astype(np.float32)


def test_grey_photos_are_grey_even_as_noisy_jpeg():
    assert classify(_grey(_scene())).kind == "grey"
    assert classify(_jpeg(_grey(_scene()), quality=40)).kind == "grey"  # JPEG chroma noise


def test_near_grey_photos_with_a_faint_tint_or_noise_are_not_colour():
    scene = _grey(_scene(2))
    rng = np.random.default_rng(0)
    noisy = np.clip(scene + rng.normal(0, 0.01, scene.shape), 0, 1)  # independent noise per channel
    tinted = np.clip(scene * np.array([1.0, 0.99, 0.97]), 0, 1)
    for photo in (noisy, tinted):
        assert not classify(photo.astype(np.float32)).has_own_colour


@pytest.mark.parametrize("split", [0.0, 0.06])
def test_sepia_and_split_toned_prints_are_toned(split):
    verdict = classify(_sepia(_scene(3), split))
    assert verdict.kind == "toned"
    assert verdict.cast[1] > 3  # a warm (yellow) cast: b > 0


@pytest.mark.parametrize("seed", [0, 4, 5])
def test_colour_photos_are_colour_also_when_faded(seed):
    scene = _scene(seed)
    assert classify(scene).kind == "colour"
    assert classify(_fade(scene)).kind == "colour"
    assert classify(_jpeg(_fade(scene))).kind == "colour"


def test_restored_colour_is_closer_to_the_original_than_the_faded_input():
    scene = _scene(6)
    faded = _fade(scene)
    correction = fit_correction(faded)
    assert correction.chroma_gain >= 1.0 and all(d > 0.05 for d in correction.dark)  # lifted blacks seen
    out = restore_colour(faded, luminance(faded), correction)
    assert out.shape == faded.shape and out.dtype == np.float32

    def lab(x: np.ndarray) -> torch.Tensor:
        return rgb_to_lab(torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1))

    truth = lab(scene)
    delta_ab = lambda x: float((lab(x)[1:] - truth[1:]).norm(dim=0).mean())  # noqa: E731
    assert delta_ab(out) < 0.8 * delta_ab(faded)


def test_restore_colour_uses_the_restored_luminance_row_strips_included():
    scene = _scene(7, h=300, w=60)  # taller than one strip
    l = np.full(scene.shape[:2], 50.0, dtype=np.float32)
    out = restore_colour(scene, l, fit_correction(scene))
    assert out.shape == scene.shape
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_the_correction_is_fitted_on_the_restored_luminance_so_tone_is_not_stretched_twice():
    scene = _scene(6)
    faded = _fade(scene)
    l = luminance(scene)  # a restoration that has already undone the fading in L
    once = restore_colour(faded, l, fit_correction(faded, l))
    twice = restore_colour(faded, l, fit_correction(faded))  # fitted on the faded tones
    tone_error = lambda x: float(np.abs(luminance(x) - l).mean())  # noqa: E731
    assert tone_error(once) < 0.5 * tone_error(twice)
