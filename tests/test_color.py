"""Lab conversion against published reference values (Bruce Lindbloom's calculator, D65, sRGB)."""

import numpy as np
import pytest
import torch

from pikfix.color import (
    denormalize_ab,
    denormalize_l,
    grey_to_rgb,
    lab_to_rgb,
    normalize_ab,
    normalize_l,
    rgb_to_lab,
)

# sRGB 8-bit -> Lab D65 (2 degree observer).
REFERENCE = [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((255, 0, 0), (53.2408, 80.0925, 67.2032)),
    ((0, 255, 0), (87.7347, -86.1827, 83.1793)),
    ((0, 0, 255), (32.2970, 79.1875, -107.8602)),
    ((128, 128, 128), (53.5850, 0.0, 0.0)),
    ((255, 255, 0), (97.1393, -21.5537, 94.4780)),
]


def _pixel(rgb: tuple[int, int, int]) -> torch.Tensor:
    return (torch.tensor(rgb, dtype=torch.float64) / 255.0).view(3, 1, 1)


@pytest.mark.parametrize(("rgb", "lab"), REFERENCE)
def test_rgb_to_lab_matches_reference(rgb, lab):
    got = rgb_to_lab(_pixel(rgb)).flatten()
    assert torch.allclose(got, torch.tensor(lab, dtype=torch.float64), atol=2e-3), got


@pytest.mark.parametrize(("rgb", "lab"), REFERENCE)
def test_lab_to_rgb_matches_reference(rgb, lab):
    got = lab_to_rgb(torch.tensor(lab, dtype=torch.float64).view(3, 1, 1)).flatten() * 255.0
    assert torch.allclose(got, torch.tensor(rgb, dtype=torch.float64), atol=0.02), got


def test_round_trip_batched_float32():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 17, 23)
    back = lab_to_rgb(rgb_to_lab(rgb))
    assert back.shape == rgb.shape
    assert (back - rgb).abs().max() < 1e-4


def test_normalisation_matches_paper():
    l = torch.tensor([0.0, 50.0, 100.0])
    assert torch.allclose(normalize_l(l), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(denormalize_l(normalize_l(l)), l)
    ab = torch.tensor([-110.0, 55.0])
    assert torch.allclose(normalize_ab(ab), torch.tensor([-1.0, 0.5]))
    # Predicted chroma outside [-1, 1] is clamped so it cannot overflow the Lab range.
    assert torch.allclose(denormalize_ab(torch.tensor([-1.5, 2.0])), torch.tensor([-110.0, 110.0]))


def test_grey_to_rgb_is_neutral_and_keeps_l():
    l = torch.linspace(-1, 1, 11).view(1, 1, 1, 11)
    rgb = grey_to_rgb(l)
    assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-5) and torch.allclose(rgb[:, 1], rgb[:, 2], atol=1e-5)
    assert torch.allclose(normalize_l(rgb_to_lab(rgb)[:, :1]), l, atol=1e-4)


def test_rejects_wrong_channel_count():
    with pytest.raises(ValueError):
        rgb_to_lab(torch.rand(2, 4, 4))


def test_photos_as_decoded_give_the_float_photos_figures(monkeypatch):
    """uint8 photos are converted strip by strip: same L and same small copy as their floats,
    with the width averaged per strip first (area averaging is separable)."""
    import pikfix.color as color
    from pikfix.color import area_downscale, area_downscale_image, luminance
    from pikfix.imageio import to_float

    monkeypatch.setattr(color, "STRIP_PIXELS", 800)  # several strips, the last one short
    rng = np.random.default_rng(0)
    for shape in [(70, 50, 3), (40, 130, 3), (20, 30, 3)]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        floats = to_float(pixels)
        np.testing.assert_array_equal(luminance(pixels), luminance(floats))
        whole = area_downscale(torch.from_numpy(floats).permute(2, 0, 1)[None], 32)
        for photo in (pixels, floats):
            small = area_downscale_image(photo, 32)
            assert small.shape == whole.shape
            torch.testing.assert_close(small, whole, atol=1e-6, rtol=0)


def test_own_chroma_is_written_at_a_files_depth_as_the_float_result_would_be(monkeypatch):
    """An integer result is converted strip by strip, exactly as the float one would be."""
    import pikfix.color as color
    from pikfix.color import own_chroma_on
    from pikfix.imageio import from_float

    rng = np.random.default_rng(1)
    rgb = rng.random((70, 50, 3), dtype=np.float32)
    l = rng.random((70, 50), dtype=np.float32) * 100
    whole = own_chroma_on(l, rgb)
    monkeypatch.setattr(color, "STRIP_PIXELS", 800)  # 16-row strips, the last one short
    np.testing.assert_allclose(own_chroma_on(l, rgb), whole, atol=1e-6)
    for dtype in (np.uint8, np.uint16):
        out = own_chroma_on(l, rgb, dtype)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, from_float(own_chroma_on(l, rgb), dtype))
