"""The colour tone head: its correction, its place in the colour path and its training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pikfix.color as color
from pikfix.color import rgb_to_lab
from pikfix.metrics import psnr
from pikfix.model import build_model
from pikfix.nets.colour_tone import LEVELS, ColourToneHead, apply_correction, colour_features, correct_photo
from pikfix.pipeline import FixPipeline
from pikfix.training.colour_tone import (
    ColourFadeConfig, ColourSamples, ColourToneTrainConfig, colour_fade, make_samples, train_colour_tone, with_colour_tone,
)


def _photo(h: int = 72, w: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth colour photo (H, W, 3) in [0, 1] with a full tonal range and varied hues."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 6, 3)
    rgb = np.stack([0.5 + 0.48 * np.sin(5 * x + 3 * y + p) for p in phase], -1)
    return np.clip(rgb, 0, 1).astype(np.float32)


def _colour_model(width: int = 16) -> torch.nn.Module:
    return with_colour_tone(build_model("tiny"), width).eval()


def _chroma(rgb: np.ndarray) -> float:
    return float(rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1))[1:].norm(dim=0).mean())


def test_a_dead_zone_leaves_a_photo_exact_under_a_small_correction_and_keeps_a_large_one() -> None:
    rgb = _photo()
    head = ColourToneHead(8)
    with torch.no_grad():
        head.mlp[-1].bias[: 3 * LEVELS] = 0.005  # every curve lifted by 0.5 %: below the zone
    assert np.array_equal(correct_photo(head, rgb, (1.0, 2.0)), rgb)
    assert np.abs(correct_photo(head, rgb) - rgb).max() > 2e-3  # without it the wobble is applied
    with torch.no_grad():
        head.mlp[-1].bias[: 3 * LEVELS] = 0.1  # lifted by 10 %: applied whole
    assert np.abs(correct_photo(head, rgb, (1.0, 2.0)) - correct_photo(head, rgb)).max() < 1e-6

def test_untrained_head_is_the_identity_and_strips_match_the_whole(monkeypatch) -> None:
    monkeypatch.setattr(color, "STRIP_PIXELS", 64 * 16)  # strips of 16 rows, the last one short
    rgb = _photo(16 * 3 + 8, 64)
    assert np.abs(correct_photo(ColourToneHead(8), rgb) - rgb).max() < 2e-3
    head = ColourToneHead(8)
    torch.nn.init.normal_(head.mlp[-1].weight, std=0.3)
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    with torch.no_grad():
        xs, ys, gain = head.correction(t)
        whole = apply_correction(t, xs, ys, gain)[0].permute(1, 2, 0).numpy()
    assert xs.shape == ys.shape == (1, 3, LEVELS) and gain.shape == (1,)
    assert bool((ys[..., 1:] >= ys[..., :-1]).all())
    assert np.abs(correct_photo(head, rgb) - whole).max() < 1e-4


def test_colour_fade_is_seeded_and_fades() -> None:
    rgb = _photo()
    a = colour_fade(rgb, np.random.default_rng(3))
    assert np.array_equal(a, colour_fade(rgb, np.random.default_rng(3)))
    assert not np.array_equal(a, colour_fade(rgb, np.random.default_rng(4)))
    strong = ColourFadeConfig(black=(0.2, 0.25), white=(0.7, 0.75), saturation=(0.3, 0.4), noise=(0.0, 0.0))
    faded = colour_fade(rgb, np.random.default_rng(0), strong)
    assert faded.min() > 0.1 and faded.max() < 0.8
    assert _chroma(faded) < 0.6 * _chroma(rgb)


def test_features_see_the_cast() -> None:
    rgb = _photo()
    cast = rgb * np.array([1.0, 1.0, 0.7], dtype=np.float32)
    q, _ = colour_features(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    qc, _ = colour_features(torch.from_numpy(cast).permute(2, 0, 1)[None])
    assert torch.allclose(q[0, :2], qc[0, :2]) and bool((qc[0, 2] < q[0, 2] - 0.05).any())


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(n):
        paths.append(folder / f"p{i}.png")
        Image.fromarray((_photo(seed=i) * 255).astype(np.uint8)).save(paths[-1])
    return paths


def test_training_learns_to_undo_colour_fading_and_samples_are_seeded(tmp_path: Path) -> None:
    config = ColourToneTrainConfig(width=16, samples_per_photo=6, scan_long_side=(64, 96), pixels=512, steps=300,
                                   batch_size=16, lr=3e-3, fade=ColourFadeConfig(noise=(0.0, 0.0)))
    paths = _photos(tmp_path / "photos", 4)
    train = make_samples(paths[:3], config, log=lambda _: None)
    again = make_samples(paths[:3], config, log=lambda _: None)
    assert torch.equal(train.faded, again.faded) and train.faded.shape == (18, 3, 512)
    train.save(tmp_path / "s.pt")
    assert torch.equal(ColourSamples.load(tmp_path / "s.pt").clean_features, train.clean_features)
    val = make_samples(paths[3:], dataclasses.replace(config, seed=1), log=lambda _: None)
    model = _colour_model()
    metrics = train_colour_tone(model, train, val, config, log=lambda _: None)
    assert metrics["before_clean"] < 1e-3
    assert metrics["after_faded"] < 0.6 * metrics["before_faded"]
    assert metrics["after_clean"] < 0.3 * metrics["before_faded"]


def test_colour_path_applies_the_head_unless_keep_tone() -> None:
    """An identity head keeps a clean colour photo exactly (its own chroma at full resolution:
    no noise to drop); a grainy one gets its chroma at a quarter of the resolution, which drops
    the grain's colour; a head that brightens every knot brightens the result, except with
    ``keep_tone``. An empty user mask keeps the untrained detector out; the repair of the tiny
    model starts as the identity."""
    model = _colour_model()
    rgb = _photo(64, 80)
    nothing = np.zeros(rgb.shape[:2], dtype=np.float32)
    pipe = FixPipeline(model, "cpu", tile=64, tile_overlap=16)
    out, restored = pipe.restore_colour_photo(rgb, mask=nothing)
    assert out.shape == rgb.shape and restored.l.shape == rgb.shape[:2]
    assert not restored.denoised and psnr(out, rgb) > 60  # a quarter-resolution chroma gives 38 dB
    grainy = np.clip(rgb + np.random.default_rng(0).normal(0, 0.03, rgb.shape), 0, 1).astype(np.float32)
    smoothed, grainy_restored = pipe.restore_colour_photo(grainy, mask=nothing)
    ab = [rgb_to_lab(torch.from_numpy(x).permute(2, 0, 1))[1:] for x in (smoothed, grainy)]
    assert grainy_restored.denoised and float((ab[0] - ab[1]).abs().mean()) > 1.0
    torch.nn.init.constant_(model.restoration.colour_tone.mlp[-1].bias, 0.0)
    with torch.no_grad():
        model.restoration.colour_tone.mlp[-1].bias[: 3 * LEVELS] = 0.1
    brighter, _ = pipe.restore_colour_photo(rgb, mask=nothing)
    kept, _ = FixPipeline(model, "cpu", tile=64, tile_overlap=16, keep_tone=True).restore_colour_photo(rgb, mask=nothing)
    assert brighter.mean() > rgb.mean() + 0.05
    assert abs(kept.mean() - rgb.mean()) < 0.01


def test_colour_path_writes_a_files_depth_as_the_float_result_would_be() -> None:
    """``restore_colour_photo(..., dtype)`` (how `fix` gets an 8- or 16-bit file's result) gives
    the float result rounded, on both of its paths: own chroma at full resolution, and the
    corrected chroma through ``lab_image``; a photo given as decoded gives its float copy's."""
    from pikfix.imageio import from_float, to_float

    model = _colour_model()
    rgb = _photo(64, 80)
    nothing = np.zeros(rgb.shape[:2], dtype=np.float32)
    pipe = FixPipeline(model, "cpu", tile=64, tile_overlap=16)
    for lift in (0.0, 0.1):  # an identity head, then one that brightens (the photo is corrected)
        with torch.no_grad():
            model.restoration.colour_tone.mlp[-1].bias[: 3 * LEVELS] = lift
        as_float, _ = pipe.restore_colour_photo(rgb, mask=nothing)
        for dtype in (np.uint8, np.uint16):
            out, _ = pipe.restore_colour_photo(rgb, mask=nothing, dtype=dtype)
            assert out.dtype == dtype
            np.testing.assert_array_equal(out, from_float(as_float, dtype))
            pixels = from_float(rgb, dtype)
            decoded, _ = pipe.restore_colour_photo(pixels, mask=nothing, dtype=dtype)
            copied, _ = pipe.restore_colour_photo(to_float(pixels), mask=nothing, dtype=dtype)
            np.testing.assert_array_equal(decoded, copied)


def test_shipped_head_undoes_a_fade_it_was_not_trained_with() -> None:
    """The shipped model's colour path on a photo faded by the benchmark's recipe (not the
    training one): closer to the original than the faded print, in PSNR and in chroma."""
    from pikfix.benchmark.data import fade_colour
    from pikfix.checkpoint import default_model_path
    from pikfix.metrics import delta_ab

    pipe = FixPipeline.from_checkpoint(default_model_path(), device="cpu")
    assert pipe.model.restoration.colour_tone is not None
    photo = _photo(120, 160, seed=5)
    faded = fade_colour(photo, seed=2)
    out, _ = pipe.restore_colour_photo(faded)
    assert psnr(out, photo) > psnr(faded, photo) + 1.0
    assert delta_ab(out, photo) < delta_ab(faded, photo)
