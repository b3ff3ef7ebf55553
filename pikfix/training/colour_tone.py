"""Training the colour tone head (``pikfix.nets.colour_tone``) on whole colour photos.

Samples are whole training photos at a random small scan size, faded in colour by
``colour_fade`` (this module's recipe; the benchmark fades with another one,
``pikfix.benchmark.data.fade_colour``, which training never sees), or left clean for
``clean_fraction`` of the batches' samples so that a photo whose colour is fine keeps it.
A sample keeps the faded photo's features and ``pixels`` random pixel pairs (faded RGB, clean
RGB) at the feature scale; the loss is the L1 of the corrected pixels against the clean ones.

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

from pikfix.color import lab_to_rgb, rgb_to_lab
from pikfix.imageio import read_image, to_float
from pikfix.model import PikFix
from pikfix.nets.colour_tone import apply_correction, colour_features
from pikfix.nets.tone import feature_scale
from pikfix.training.restoration import rebuilt
from pikfix.training.whole_photo import TensorRecord, fit_head, random_scan


@dataclass(frozen=True)
class ColourFadeConfig:
    """The training recipe's ranges (sRGB in [0, 1])."""

    black: tuple[float, float] = (0.0, 0.25)  # shared black point lift
    black_spread: float = 0.06  # per-dye black point, +- around the shared one
    white: tuple[float, float] = (0.7, 1.0)  # shared white point
    white_drop: float = 0.2  # per dye, the white point drops by up to this (a cast)
    log_gamma: float = 0.3  # shared tone-curve exponent exp(+-)
    log_gamma_spread: float = 0.12  # per dye
    saturation: tuple[float, float] = (0.3, 1.0)  # chroma (Lab ab) kept
    noise: tuple[float, float] = (0.0, 0.02)  # grain sigma


def colour_fade(rgb: np.ndarray, rng: np.random.Generator, cfg: ColourFadeConfig = ColourFadeConfig()) -> np.ndarray:
    """A colour photo (H, W, 3) in [0, 1] faded as dye layers fade: per-channel black and
    white points and tone curves, chroma lost in Lab, grain."""
    black = np.clip(rng.uniform(*cfg.black) + rng.uniform(-cfg.black_spread, cfg.black_spread, 3), 0.0, 0.4)
    white = np.clip(rng.uniform(*cfg.white) - rng.uniform(0.0, cfg.white_drop, 3), black + 0.3, 1.0)
    gamma = np.exp(rng.uniform(-cfg.log_gamma, cfg.log_gamma) + rng.uniform(-cfg.log_gamma_spread, cfg.log_gamma_spread, 3))
    out = black + (white - black) * np.power(np.clip(rgb, 0.0, 1.0), gamma)
    lab = rgb_to_lab(torch.from_numpy(out.astype(np.float32)).permute(2, 0, 1))
    lab[1:] *= float(rng.uniform(*cfg.saturation))
    out = lab_to_rgb(lab).permute(1, 2, 0).numpy()
    out = out + rng.normal(0.0, rng.uniform(*cfg.noise), out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class ColourToneTrainConfig:
    """Everything a colour-tone run depends on; recorded in the checkpoint."""

    width: int = 64
    samples_per_photo: int = 32
    clean_fraction: float = 0.25
    scan_long_side: tuple[int, int] = (320, 640)
    pixels: int = 4096
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    fade: ColourFadeConfig = dataclasses.field(default_factory=ColourFadeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ColourSamples(TensorRecord):
    """Per sample: the input photo's ``colour_features`` (channel quantiles (N, 3, LEVELS) and
    features (N, 4 * LEVELS)), for the faded and the clean photo, and ``pixels`` pixel pairs
    (N, 3, pixels) faded and clean. A clean sample feeds the clean half as input (``batch``)."""

    faded_channels: torch.Tensor
    faded_features: torch.Tensor
    clean_channels: torch.Tensor
    clean_features: torch.Tensor
    faded: torch.Tensor
    clean: torch.Tensor


def make_samples(paths: Sequence[Path], config: ColourToneTrainConfig, log: Callable[[str], None] = print) -> ColourSamples:
    """``samples_per_photo`` faded versions of every photo, with its clean original, seeded per sample."""
    rows: dict[str, list[torch.Tensor]] = {f.name: [] for f in dataclasses.fields(ColourSamples)}
    for p_index, path in enumerate(paths):
        photo = to_float(read_image(path).pixels)
        for s in range(config.samples_per_photo):
            rng = np.random.default_rng([config.seed, p_index, s])
            clean = random_scan(photo, rng, config.scan_long_side)
            faded = colour_fade(clean, rng, config.fade)
            small = {k: feature_scale(torch.from_numpy(v).permute(2, 0, 1)[None]) for k, v in (("clean", clean), ("faded", faded))}
            pick = torch.from_numpy(rng.integers(0, small["clean"][0, 0].numel(), config.pixels))
            for name, t in small.items():
                channels, features = colour_features(t)
                rows[f"{name}_channels"].append(channels[0])
                rows[f"{name}_features"].append(features[0])
                rows[name].append(t[0].flatten(1)[:, pick])
        if (p_index + 1) % 20 == 0:
            log(f"colour samples: {p_index + 1}/{len(paths)} photos")
    return ColourSamples(**{k: torch.stack(v) for k, v in rows.items()})


def batch(samples: ColourSamples, pick: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(channel quantiles, features, input pixels, target pixels) of samples ``pick``; where
    ``clean`` is true the input is the clean photo itself (its correction should be none)."""
    c2, c3 = clean[:, None], clean[:, None, None]
    return (
        torch.where(c3, samples.clean_channels[pick], samples.faded_channels[pick]),
        torch.where(c2, samples.clean_features[pick], samples.faded_features[pick]),
        torch.where(c3, samples.clean[pick], samples.faded[pick]),
        samples.clean[pick],
    )


def colour_tone_loss(model: PikFix, channels: torch.Tensor, features: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |corrected input pixels - clean pixels| (sRGB)."""
    head = model.restoration.colour_tone
    corrected = apply_correction(inputs[:, :, None, :], *head.knots(channels, features))
    return (corrected[:, :, 0, :] - target).abs().mean()


def with_colour_tone(base: PikFix, width: int) -> PikFix:
    """A copy of ``base`` with a fresh (identity) colour tone head of ``width``; all weights kept."""
    return rebuilt(base, "restoration.colour_tone.", colour_tone_width=width)


def train_colour_tone(
    model: PikFix, train: ColourSamples, val: ColourSamples, config: ColourToneTrainConfig, log: Callable[[str], None] = print
) -> dict[str, float]:
    """Fit the model's colour tone head (only) on ``train``; returns the validation L1 before
    and after, for the faded samples and for their clean originals."""

    def step_loss(pick: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return colour_tone_loss(model, *batch(train, pick, clean))

    return fit_head(
        model.restoration.colour_tone, config, len(train.clean), step_loss, lambda: _val_l1(model, val), log, "colour tone"
    )


def _val_l1(model: PikFix, val: ColourSamples) -> dict[str, float]:
    """L1 (sRGB) of the corrected validation samples, faded and clean."""
    every = torch.arange(len(val.clean))
    with torch.no_grad():
        return {
            name: round(float(colour_tone_loss(model, *batch(val, every, torch.full((len(every),), clean)))), 5)
            for name, clean in (("faded", False), ("clean", True))
        }
