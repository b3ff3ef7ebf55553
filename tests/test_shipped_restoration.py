"""The shipped model's restoration on a small clean photo, on the same photo with a drawn
crack and blurred: it must leave the clean photo nearly as it is, find and repair most of the
crack, and sharpen the blurred photo.

The photo (examples/refs/horse-ref.jpg, 384 px) is a hard clean case: the white blazes and
hooves of dark horses look like dust, and the detector takes some of them (under 1 % of the
pixels), which is what keeps its PSNR near 28 dB rather than the 38 dB the model averages
on the clean validation photos (models/pikfix-lite.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pikfix import denoise as D
from pikfix.checkpoint import default_model_path
from pikfix.color import luminance
from pikfix.imageio import read_image, to_float
from pikfix.pipeline import FixPipeline

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "refs" / "horse-ref.jpg"


@pytest.fixture(scope="module")
def pipe() -> FixPipeline:
    path = default_model_path()
    assert path is not None, "the shipped model is missing"
    return FixPipeline.from_checkpoint(path, device="cpu")


@pytest.fixture(scope="module")
def clean_l() -> np.ndarray:
    """Lab L (H, W) in [0, 100] of a clean colour photo, 384 px wide."""
    rgb = to_float(read_image(PHOTO).pixels)
    img = Image.fromarray((rgb * 255).round().astype(np.uint8))
    img = img.resize((384, round(384 * img.height / img.width)), Image.Resampling.BOX)
    return luminance(np.asarray(img, dtype=np.float32) / 255.0)


def test_a_clean_photo_passes_through_nearly_unchanged(pipe: FixPipeline, clean_l: np.ndarray) -> None:
    restored = pipe.restore_l(clean_l)
    assert restored.mask is not None and float((restored.mask > 0.5).mean()) < 0.015
    assert float(np.abs(restored.l - clean_l).mean()) < 1.0  # in L units (0-100)
    # The repair changes nothing far from its mask (repair_margin) and the tone head's small
    # wobble is dropped (TONE_DEAD_ZONE): nearly every pixel is exactly the input's.
    assert float((np.abs(restored.l - clean_l) < 1e-4).mean()) >= 0.95
    mse = float(np.mean((restored.l - clean_l) ** 2))
    assert 10 * np.log10(100.0**2 / mse) >= 25.0


def test_a_drawn_crack_is_found_and_mostly_repaired(pipe: FixPipeline, clean_l: np.ndarray) -> None:
    h, w = clean_l.shape
    path = [(20, 30), (150, 110), (260, 90), (370, h - 20)]
    layer, margin = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
    ImageDraw.Draw(layer).line(path, fill=255, width=3)
    ImageDraw.Draw(margin).line(path, fill=255, width=11)  # the crack and 4 px on each side
    crack, near = np.asarray(layer) > 0, np.asarray(margin) > 0
    damaged = np.where(crack, 97.0, clean_l).astype(np.float32)  # a bright crack: paper showing
    restored = pipe.restore_l(damaged)
    assert restored.mask is not None
    assert float((restored.mask[crack] > 0.5).mean()) >= 0.55  # the detector finds most of it
    before = np.abs(damaged - clean_l)[crack].mean()
    after = np.abs(restored.l - clean_l)[crack].mean()
    assert after <= 0.5 * before  # and the repair removes most of its error
    # Away from it the photo stays as it was (the mask, hence the repair, also takes the
    # crack's edges: a few pixels beside it are repainted).
    assert np.abs(restored.l - clean_l)[~near].mean() < 1.0
    assert float((np.abs(restored.l - clean_l)[~near] < 1e-4).mean()) >= 0.9


def test_a_blurred_photo_is_sharpened_and_a_sharp_one_is_not(pipe: FixPipeline, clean_l: np.ndarray) -> None:
    sharpener = pipe.model.restoration.sharpener
    assert sharpener is not None
    sharp = clean_l.copy()
    assert D.sharpen(sharp, sharpener)[1] == 0.0 and np.array_equal(sharp, clean_l)
    # 3 x 3 and 5 x 5 box blurs, the evaluation recipe's two (the shipped model: +1.5 and +2.0 dB;
    # the ninth session's sharpener gained +1.7 and +0.6 dB)
    for k in (3, 5):
        padded = np.pad(clean_l, k // 2, mode="edge")
        blurred = np.mean([padded[y : y + clean_l.shape[0], x : x + clean_l.shape[1]] for y in range(k) for x in range(k)], axis=0)
        out = blurred.astype(np.float32)
        weight = D.sharpen(out, sharpener)[1]
        assert weight > 0.5
        assert _psnr(out, clean_l) > _psnr(blurred, clean_l) + 1.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(100.0**2 / np.mean((a - b) ** 2)))
