"""The guided filter that puts low-resolution chroma on the full-resolution L (``pikfix.pipeline.lab_image``)."""

import numpy as np
import torch
import torch.nn.functional as F

import pikfix.color as color
from pikfix.color import normalize_ab, rgb_to_lab
from pikfix.pipeline import guide_coefficients, lab_image


def _ab_of(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) sRGB -> Lab a, b (2, H, W) in Lab units."""
    return rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1))[1:].numpy()


def _step_photo(h: int = 64, w: int = 96, edge: int = 50) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """L dark left of column ``edge``, light from it on; the true colour changes on the same
    column (red left, blue right). Returns (L, the chroma at a quarter of the size, the true a)."""
    l = np.full((h, w), 35.0, dtype=np.float32)
    l[:, edge:] = 70.0
    a = np.where(np.arange(w) < edge, 40.0, -20.0).astype(np.float32)[None].repeat(h, 0)
    b = np.where(np.arange(w) < edge, 20.0, -45.0).astype(np.float32)[None].repeat(h, 0)
    ab = torch.from_numpy(np.stack([a, b]))[None]
    small = F.interpolate(normalize_ab(ab), size=(h // 4, w // 4), mode="area")
    return l, small, a


def test_uniform_chroma_stays_uniform_on_any_lightness():
    rng = np.random.default_rng(0)
    l = rng.uniform(30, 80, (40, 56)).astype(np.float32)  # texture in L only
    ab = normalize_ab(torch.tensor([12.0, -8.0]).view(1, 2, 1, 1).expand(1, 2, 10, 14).contiguous())
    out = _ab_of(lab_image(l, ab))
    # Where the sRGB result is not clipped, the colour is the input's everywhere.
    assert np.abs(out[0] - 12.0).max() < 0.5 and np.abs(out[1] + 8.0).max() < 0.5


def test_colour_edge_follows_the_lightness_edge():
    for edge in (48, 49, 50):  # on the quarter-size grid and between its pixels
        l, small, a_true = _step_photo(edge=edge)
        a = _ab_of(lab_image(l, small))[0]
        bilinear = F.interpolate(small, size=l.shape, mode="bilinear", align_corners=False)[0, 0].numpy() * 110.0
        near = slice(edge - 3, edge + 3)
        # Bilinear chroma blends red and blue across the edge (22-28 Lab units off next to it);
        # the guided filter takes L's edge as the colour's, leaving half of that at most.
        guided_error = np.abs(a[:, near] - a_true[:, near]).max()
        assert guided_error < 0.6 * np.abs(bilinear[:, near] - a_true[:, near]).max()
        assert guided_error < 15.0


def test_coefficients_are_at_the_chroma_resolution():
    l, small, _ = _step_photo()
    coefficients = guide_coefficients(l, small)
    assert coefficients.shape == (1, 4, *small.shape[-2:])
    assert torch.isfinite(coefficients).all()


def test_strips_give_the_same_image_as_one_pass(monkeypatch):
    l, small, _ = _step_photo(h=70, w=50)
    whole = lab_image(l, small)
    monkeypatch.setattr(color, "STRIP_PIXELS", 16 * 50)  # 5 strips of 16 rows, the last one short
    np.testing.assert_allclose(lab_image(l, small), whole, atol=1e-6)


def test_integer_output_is_the_float_output_as_a_file_stores_it(monkeypatch):
    """A uint8 or uint16 photo is converted strip by strip, exactly as the float one would be."""
    from pikfix.imageio import from_float

    l, small, _ = _step_photo(h=70, w=50)
    monkeypatch.setattr(color, "STRIP_PIXELS", 16 * 50)
    as_float = lab_image(l, small)
    for dtype in (np.uint8, np.uint16):
        out = lab_image(l, small, dtype)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, from_float(as_float, dtype))
