"""Training the tone head (``pikfix.nets.tone``) on whole photos.

The tone head sees a whole photo, so its samples are whole training photos, each scanned at a
random small size (tone does not depend on resolution) and damaged by the full training
recipe (``pikfix.training.degradation``: fading, but also the noise, scratches and stains that
disturb a histogram); ``clean_fraction`` of them stay clean, so that a photo whose tone is
fine keeps it. A sample keeps the damaged photo's quantiles and ``pixels`` random pixel pairs
(damaged L, clean L); the loss is the L1 of the curve's output on those pixels against the
clean L. The rest of the restoration sub-net is not touched.

Every sample is a pure function of (seed, photo, index): a rerun gives the same head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pikfix.color import grey_lightness, normalize_l
from pikfix.imageio import read_image, to_float
from pikfix.model import PikFix
from pikfix.nets.tone import apply_curve, feature_scale, photo_quantiles
from pikfix.training.degradation import DegradationConfig, degrade, to_grey
from pikfix.training.restoration import config_dict, rebuilt
from pikfix.training.whole_photo import TensorRecord, fit_head, random_scan


@dataclass(frozen=True)
class ToneTrainConfig:
    """Everything a tone-head run depends on; recorded in the checkpoint."""

    width: int = 64
    samples_per_photo: int = 24
    clean_fraction: float = 0.25
    # Of the clean samples, this share become photos bright or dark by nature (the same tone map
    # on input and target): a black point or a white point beyond any the recipe's fading gives.
    natural_fraction: float = 0.0
    natural_black: tuple[float, float] = (0.35, 0.55)  # high key: above fade_black's 0.3 at most
    natural_white: tuple[float, float] = (0.45, 0.6)  # low key: below fade_white's 0.65 at least
    scan_long_side: tuple[int, int] = (320, 640)
    pixels: int = 4096
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    degradation: DegradationConfig = dataclasses.field(default_factory=DegradationConfig)

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)


@dataclass
class ToneSamples(TensorRecord):
    """Per sample, normalised L: the damaged photo's quantiles (N, LEVELS) and pixels
    (N, pixels), the clean photo's quantiles and the same pixels clean. A clean sample is the
    clean half fed as input (``pikfix.training.tone.batch``)."""

    damaged_quantiles: torch.Tensor
    clean_quantiles: torch.Tensor
    damaged: torch.Tensor
    clean: torch.Tensor


def _as_l(grey: np.ndarray) -> torch.Tensor:
    return normalize_l(torch.from_numpy(grey_lightness(grey))[None, None])


def make_samples(paths: Sequence[Path], config: ToneTrainConfig, log: Callable[[str], None] = print) -> ToneSamples:
    """``samples_per_photo`` damaged versions of every photo (with their clean originals),
    seeded per sample."""
    rows: dict[str, list[torch.Tensor]] = {f.name: [] for f in dataclasses.fields(ToneSamples)}
    for p_index, path in enumerate(paths):
        photo = to_float(read_image(path).pixels)
        for s in range(config.samples_per_photo):
            rng = np.random.default_rng([config.seed, p_index, s])
            rgb = random_scan(photo, rng, config.scan_long_side)
            clean = _as_l(to_grey(rgb))
            damaged = _as_l(degrade(rgb, rng, config.degradation).grey)
            # Pixel pairs at the feature scale, where the curve's targets are least noisy.
            small_damaged, small_clean = feature_scale(damaged), feature_scale(clean)
            pick = torch.from_numpy(rng.integers(0, small_damaged.numel(), config.pixels))
            rows["damaged_quantiles"].append(photo_quantiles(small_damaged)[0])
            rows["clean_quantiles"].append(photo_quantiles(small_clean)[0])
            rows["damaged"].append(small_damaged.flatten()[pick])
            rows["clean"].append(small_clean.flatten()[pick])
        if (p_index + 1) % 20 == 0:
            log(f"tone samples: {p_index + 1}/{len(paths)} photos")
    return ToneSamples(**{k: torch.stack(v) for k, v in rows.items()})


def batch(
    samples: ToneSamples, pick: torch.Tensor, clean: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(quantiles, input pixels, target pixels) of samples ``pick``; where ``clean`` is true
    the input is the clean photo itself (its curve should be the identity)."""
    c = clean[:, None]
    quantiles = torch.where(c, samples.clean_quantiles[pick], samples.damaged_quantiles[pick])
    inputs = torch.where(c, samples.clean[pick], samples.damaged[pick])
    return quantiles, inputs, samples.clean[pick]


def natural_key(
    quantiles: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor, clean: torch.Tensor,
    config: ToneTrainConfig, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch``'s output with ``config.natural_fraction`` of the clean samples made high key
    (blacks lifted to ``natural_black``) or low key (whites dimmed to ``natural_white``), input
    and target alike, so their curve should stay the identity. Without these the head takes a
    bright desert with no dark tones for a faded print (clean validation photo: 17.1 dB). A
    linear map moves quantiles exactly as it moves pixels."""
    n = len(clean)
    pick = clean & (torch.rand(n, generator=generator) < config.natural_fraction)
    bright = torch.rand(n, generator=generator) < 0.5
    lo, hi = config.natural_black, config.natural_white
    black = torch.where(bright, lo[0] + (lo[1] - lo[0]) * torch.rand(n, generator=generator), torch.zeros(n))
    white = torch.where(bright, torch.ones(n), hi[0] + (hi[1] - hi[0]) * torch.rand(n, generator=generator))

    def remap(x: torch.Tensor) -> torch.Tensor:  # normalised L -> normalised L
        y = black[:, None] + (white - black)[:, None] * (x + 1.0) / 2.0
        return torch.where(pick[:, None], y * 2.0 - 1.0, x)

    return remap(quantiles), remap(inputs), remap(target)


def tone_loss(model: PikFix, quantiles: torch.Tensor, damaged: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean |curve(damaged) - clean| over the pixel pairs, the curve from the quantiles."""
    xs, ys = model.restoration.tone.knots(quantiles)
    mapped = apply_curve(damaged[:, None, None, :], xs, ys)[:, 0, 0]
    return (mapped - clean).abs().mean()


def with_tone(base: PikFix, width: int) -> PikFix:
    """A copy of ``base`` with a fresh (identity) tone head of ``width``; all weights kept."""
    return rebuilt(base, "restoration.tone.", tone_width=width)


def train_tone(
    model: PikFix, train: ToneSamples, val: ToneSamples, config: ToneTrainConfig, log: Callable[[str], None] = print
) -> dict[str, float]:
    """Fit the model's tone head (only) on ``train``; returns the validation L1 before and
    after, for the damaged samples and for their clean originals."""

    def step_loss(pick: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        quantiles, inputs, target = batch(train, pick, clean)
        if config.natural_fraction > 0:
            quantiles, inputs, target = natural_key(quantiles, inputs, target, clean, config, generator)
        return tone_loss(model, quantiles, inputs, target)

    return fit_head(model.restoration.tone, config, len(train.clean), step_loss, lambda: _val_l1(model, val), log, "tone")


def _val_l1(model: PikFix, val: ToneSamples) -> dict[str, float]:
    """L1 (in L / 100 units) of the curve's output on the damaged validation samples and on
    their clean originals."""
    every = torch.arange(len(val.clean))
    out = {}
    with torch.no_grad():
        for name, clean in (("damaged", False), ("clean", True)):
            loss = tone_loss(model, *batch(val, every, torch.full((len(every),), clean)))
            out[name] = round(float(loss) / 2, 5)
    return out
