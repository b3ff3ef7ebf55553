"""Repaired pixels are kept within the range of the intact pixels around them."""

from __future__ import annotations

import numpy as np
import pytest

import pikfix.fill_bounds as fb
from pikfix.fill_bounds import FILL_MARGIN, bound_fill


def _crack_photo(width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 60 background of 40-50 L (a gentle ramp) crossed by a white vertical crack."""
    before = np.tile(np.linspace(40.0, 50.0, 60, dtype=np.float32), (40, 1))
    mask = np.zeros_like(before)
    mask[:, 20 : 20 + width] = 1.0
    before[mask > 0] = 95.0
    return before, mask


def test_a_dark_overshoot_is_lifted_to_the_surroundings() -> None:
    before, mask = _crack_photo()
    out = before.copy()
    out[mask > 0] = 10.0  # the net's fill overshoots into a dark line
    bound_fill(out, before, mask)
    crack = out[mask > 0]
    # The intact pixels within 3 px of the crack lie between 40 and 50 L.
    assert crack.min() >= 40.0 - FILL_MARGIN - 1e-4
    assert crack.max() <= 50.0 + FILL_MARGIN
    np.testing.assert_array_equal(out[mask == 0], before[mask == 0])


def test_a_fill_within_the_range_is_left_alone() -> None:
    before, mask = _crack_photo()
    out = before.copy()
    out[mask > 0] = before[:, 19:20].repeat(3, axis=1).ravel()  # the pixel left of the crack
    expected = out.copy()
    bound_fill(out, before, mask)
    np.testing.assert_array_equal(out, expected)


def test_a_bright_fill_is_clipped_from_above() -> None:
    before, mask = _crack_photo()
    out = before.copy()  # a fill that left the white crack as it was
    bound_fill(out, before, mask)
    assert out[mask > 0].max() <= 50.0 + FILL_MARGIN


def test_the_window_grows_for_a_wide_defect() -> None:
    before, mask = _crack_photo(width=20)  # wider than the first window
    out = before.copy()
    out[mask > 0] = 5.0
    bound_fill(out, before, mask)
    assert out[mask > 0].min() >= 40.0 - FILL_MARGIN - 1e-4


def test_a_defect_wider_than_the_largest_window_is_left_as_filled() -> None:
    before = np.full((30, 30), 45.0, np.float32)
    mask = np.ones_like(before)  # no intact pixel anywhere
    out = np.full_like(before, 7.0)
    bound_fill(out, before, mask)
    np.testing.assert_array_equal(out, 7.0)


def test_row_strips_give_the_whole_photo_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    before = rng.uniform(20, 80, (150, 70)).astype(np.float32)
    mask = (rng.random((150, 70)) < 0.2).astype(np.float32)
    fill = rng.uniform(0, 100, before.shape).astype(np.float32)
    whole, strips = fill.copy(), fill.copy()
    monkeypatch.setattr(fb, "STRIP_ROWS", 10_000)
    bound_fill(whole, before, mask)
    monkeypatch.setattr(fb, "STRIP_ROWS", 16)
    bound_fill(strips, before, mask)
    np.testing.assert_array_equal(whole, strips)
    assert not np.array_equal(whole, fill)  # the bounds did clip something
