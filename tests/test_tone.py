"""The whole-photo tone head: its curve, its place in the pipeline and its training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pikfix.checkpoint import load_checkpoint, save_checkpoint
from pikfix.color import luminance
from pikfix.config import ModelConfig
from pikfix.model import PikFix, build_model
from pikfix.nets.tone import LEVELS, ToneHead, apply_curve, apply_curve_numpy, photo_quantiles
from pikfix.pipeline import FixPipeline
from pikfix.training.degradation import DegradationConfig
from pikfix.training.tone import ToneSamples, ToneTrainConfig, make_samples, natural_key, train_tone, with_tone


def _l(h: int = 80, w: int = 120, seed: int = 0) -> np.ndarray:
    """Lab L (H, W) in [0, 100] with a full tonal range."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return np.clip(50 + 45 * np.sin(7 * x + 3 * y) + rng.normal(0, 2, (h, w)), 0, 100).astype(np.float32)


def _brightening(head: ToneHead, amount: float) -> None:
    """Make ``head`` add ``amount`` (normalised L) to every knot."""
    torch.nn.init.constant_(head.mlp[-1].bias, amount)


def test_untrained_head_is_the_identity() -> None:
    l = torch.from_numpy(_l())[None, None] / 50 - 1
    assert torch.allclose(ToneHead(8)(l), l, atol=1e-5)


def test_curve_is_monotone_and_numpy_matches_torch() -> None:
    head = ToneHead(8)
    torch.nn.init.normal_(head.mlp[-1].weight, std=0.3)
    l = _l()
    l_norm = torch.from_numpy(l)[None, None] / 50 - 1
    xs, ys = head.curve_for(l_norm)
    assert xs.shape == ys.shape == (1, LEVELS)
    assert bool((ys[:, 1:] >= ys[:, :-1]).all()) and bool((xs[:, 1:] > xs[:, :-1]).all())
    ramp = torch.linspace(-1, 1, 501).view(1, 1, 1, -1)
    mapped = apply_curve(ramp, xs, ys).flatten()
    assert bool((mapped[1:] >= mapped[:-1] - 1e-6).all())
    via_torch = (apply_curve(l_norm, xs, ys)[0, 0].detach().numpy() + 1) * 50
    assert np.abs(apply_curve_numpy(l, xs, ys) - via_torch).max() < 1e-3


def test_quantiles_do_not_depend_on_the_scan_size() -> None:
    l = torch.from_numpy(_l(400, 600))[None, None] / 50 - 1
    small = torch.nn.functional.interpolate(l, size=(200, 300), mode="area")
    assert (photo_quantiles(l) - photo_quantiles(small)).abs().max() < 0.02


def test_pipeline_applies_the_curve_to_the_whole_photo_at_every_size() -> None:
    """The tiny model's repair starts as the identity, so restore_l returns the tone curve's output,
    for a photo restored at full size and for one larger than restore_size (with an empty user
    mask: the untrained detector's would replace pixels by their upsampled repair; the noise filter,
    which would smooth the noisy test photo, off)."""
    model = build_model("tiny").eval()
    _brightening(model.restoration.tone, 0.2)  # +10 L inside the quantile range
    l = _l()
    original = l.copy()
    nothing = np.zeros_like(l)
    for restore_size in (2048, 64):
        pipe = FixPipeline(model, "cpu", tile=64, tile_overlap=16, restore_size=restore_size, denoise=False)
        out = pipe.restore_l(l, mask=nothing).l
        inside = (l > 20) & (l < 80)
        assert np.abs(out[inside] - (l[inside] + 10)).max() < 0.05
        assert out.max() <= 100.0
        assert np.array_equal(l, original)  # the caller's L is never overwritten
    rgb = np.repeat(l[..., None] / 100, 3, -1)  # through restore(), whose own L is toned in place
    own = luminance(rgb)
    via_rgb = FixPipeline(model, "cpu", tile=64, tile_overlap=16, denoise=False).restore(rgb, mask=nothing).l
    inside = (own > 20) & (own < 80)
    assert np.abs(via_rgb[inside] - (own[inside] + 10)).max() < 0.1
    kept = FixPipeline(model, "cpu", tile=64, tile_overlap=16, keep_tone=True, denoise=False).restore_l(l, mask=nothing).l
    assert np.abs(kept - l).max() < 1e-3


def test_a_curve_that_barely_changes_the_photo_is_faded_out() -> None:
    """``TONE_DEAD_ZONE`` (0.5, 1.0) L: a mean change of 0.25 L is dropped, one of 0.75 L is
    half applied, one of 10 L applied whole."""
    model = build_model("tiny").eval()
    l = np.full((64, 96), 50.0, dtype=np.float32)
    l[:, 48:] = 30.0
    pipe = FixPipeline(model, "cpu", tile=64, tile_overlap=16, denoise=False)
    for shift, applied in ((0.25, 0.0), (0.75, 0.375), (10.0, 10.0)):
        _brightening(model.restoration.tone, shift / 50)
        out = pipe._restore_tone(l)
        assert np.abs(out - (l + applied)).max() < 1e-3, shift


def test_models_without_a_tone_head_leave_tone_alone_and_with_tone_keeps_weights(tmp_path: Path) -> None:
    base = build_model("tiny")
    config = ModelConfig.from_dict({**base.config.to_dict(), "restoration": {
        **dataclasses.asdict(base.config.restoration), "tone_width": 0}})
    plain = PikFix(config).eval()
    assert plain.restoration.tone is None and plain.tone_curve(torch.zeros(1, 1, 8, 8)) is None
    toned = with_tone(plain, 16)
    assert toned.restoration.tone is not None and toned.config.restoration.tone_width == 16
    for key, value in plain.state_dict().items():
        assert torch.equal(toned.state_dict()[key], value)
    _brightening(toned.restoration.tone, 0.1)
    save_checkpoint(toned, tmp_path / "m.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert torch.equal(loaded.restoration.tone.mlp[-1].bias, toned.restoration.tone.mlp[-1].bias)


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(n):
        rgb = np.stack([_l(72, 96, i) / 100] * 3, -1) * np.random.default_rng(i).uniform(0.8, 1.0, 3)
        paths.append(folder / f"p{i}.png")
        Image.fromarray((rgb * 255).astype(np.uint8)).save(paths[-1])
    return paths


def test_training_learns_to_undo_fading_and_samples_are_seeded(tmp_path: Path) -> None:
    """Fading alone (a lifted black point, dimmed whites): a few hundred steps must lower the
    damaged samples' error a lot while the clean ones stay nearly unchanged."""
    fading_only = DegradationConfig.from_dict({
        **{k: 0.0 for k, v in DegradationConfig().to_dict().items() if k.startswith("p_")},
        "p_fade": 1.0, "fade_black": [0.15, 0.3], "fade_white": [0.6, 0.8], "fade_curve": [1.0, 1.0],
    })
    config = ToneTrainConfig(width=16, samples_per_photo=6, scan_long_side=(64, 96), pixels=512, steps=300,
                             batch_size=16, lr=3e-3, degradation=fading_only)
    paths = _photos(tmp_path / "photos", 4)
    train = make_samples(paths[:3], config, log=lambda _: None)
    again = make_samples(paths[:3], config, log=lambda _: None)
    assert torch.equal(train.damaged, again.damaged) and train.damaged.shape == (18, 512)
    train.save(tmp_path / "s.pt")
    assert torch.equal(ToneSamples.load(tmp_path / "s.pt").clean_quantiles, train.clean_quantiles)
    val = make_samples(paths[3:], dataclasses.replace(config, seed=1), log=lambda _: None)
    model = with_tone(build_model("tiny"), 16)
    metrics = train_tone(model, train, val, config, log=lambda _: None)
    assert metrics["before_clean"] == 0.0
    assert metrics["after_damaged"] < 0.5 * metrics["before_damaged"]
    assert metrics["after_clean"] < 0.3 * metrics["before_damaged"]


def test_natural_key_remaps_only_clean_samples_input_and_target_alike() -> None:
    config = ToneTrainConfig(natural_fraction=1.0)
    g = torch.Generator().manual_seed(0)
    n = 64
    quantiles = torch.linspace(-0.9, 0.9, LEVELS).repeat(n, 1)
    pixels = torch.rand(n, 100, generator=g) * 2 - 1
    damaged = pixels * 0.5
    clean = torch.arange(n) % 2 == 0
    inputs = torch.where(clean[:, None], pixels, damaged)
    q, i, t = natural_key(quantiles, inputs, pixels.clone(), clean, config, g)
    assert torch.equal(q[~clean], quantiles[~clean]) and torch.equal(i[~clean], damaged[~clean])
    assert torch.equal(t[~clean], pixels[~clean])
    assert torch.allclose(i[clean], t[clean])  # a clean sample's target is still its input
    low, high = (i[clean].min(1).values + 1) / 2, (i[clean].max(1).values + 1) / 2
    high_key = low >= config.natural_black[0] - 1e-6
    low_key = high <= config.natural_white[1] + 1e-6
    assert bool((high_key | low_key).all()) and high_key.any() and low_key.any()
    # quantiles move as the pixels do: the map is the same increasing line
    assert bool((q[clean][:, 1:] > q[clean][:, :-1]).all())
