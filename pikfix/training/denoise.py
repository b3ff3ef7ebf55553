"""Training the denoiser (``pikfix.nets.denoise``) alone, on noise the training recipe draws.

The denoiser runs after the repair and the tone head, so its samples hold only what those
leave: windows of training photos at random scan sizes no larger than the photo (``scan_crop``;
a first run that also upscaled smoothed fur and stonework away) damaged by the training
recipe's capture and texture steps (noise, grain, blur, low resolution, JPEG, halftone, paper
texture), with no local defects and no global ageing. The tone head's contrast stretch
amplifies noise, so input and target are stretched alike by a random ``gain`` about their
mean. ``clean_fraction`` of the samples are clean, so clean areas are left alone. Each sample
records its noise as ``pikfix.denoise.noise_sigma`` measures it on the input, which the net is
told, as at run time. Loss: L1 on L / 100. The samples are drawn once (a pool, seeded per sample) and batches are drawn from it
with flips and transposes; the rest of the model is not touched.

The sharpener (``pikfix.nets.denoise.Sharpener``) is trained by the same code on another
recipe, ``sharpen_recipe``: soft photos (blur, defocus, motion, downscaling) with the light
noise and JPEG a denoised photo keeps, a quarter of the samples sharp, so that a sharp photo is
left as it is.

``noise_recipe`` with ``soft_fraction`` is a denoiser recipe that leaves a soft photo's blur in
the target, for the sharpener (tried in the fifteenth session; the shipped denoiser learned on
``capture_only``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pikfix.color import grey_lightness
from pikfix.denoise import denoise, noise_sigma
from pikfix.imageio import read_image, to_float
from pikfix.nets.denoise import DEPTH, Denoiser
from pikfix.model import PikFix
from pikfix.training.degradation import SCAN_LONG_SIDE, DegradationConfig, degrade, scan_crop, to_grey
from pikfix.training.degradation.capture import defocus_blur, gaussian_blur
from pikfix.training.restoration import config_dict, rebuilt

# What the repair and the tone head handle before the denoiser runs: not drawn here.
_NOT_DRAWN = (
    "p_scratches", "p_cracks", "p_crack_network", "p_crazing", "p_noise_cracks", "p_dust", "p_tears", "p_holes",
    "p_flaking", "p_paper_mask", "p_creases", "p_folds", "p_stains", "p_mould", "p_silvering", "p_fade", "p_cast",
    "p_vignette",
)


def capture_only() -> DegradationConfig:
    """The training recipe with its capture and texture steps only (see the module docstring)."""
    return dataclasses.replace(DegradationConfig(), **{name: 0.0 for name in _NOT_DRAWN})


def noise_recipe() -> DegradationConfig:
    """``capture_only`` without its blur steps (Gaussian, defocus, motion, low resolution): what
    the denoiser removes. A soft photo's blur is drawn into the target as well
    (``DenoiseTrainConfig.soft_fraction``): the sharpener, which runs next, deals with it."""
    return dataclasses.replace(capture_only(), p_blur=0.0, p_defocus=0.0, p_motion=0.0, p_lowres=0.0)


def sharpen_recipe() -> DegradationConfig:
    """``capture_only`` made mostly soft: Gaussian blur (sigma 0.3-2.5 px) in 60 % of the
    samples, lens defocus (a disk of radius 1-3 px, the usual softness of an old print) in 35 %,
    motion now and then, and the noise a denoised photo still has (at most 3 L). Until the
    fourteenth session: Gaussian blur of 0.3-2 px in 80 %, defocus in 10 %, motion in 5 %."""
    return dataclasses.replace(
        capture_only(), p_blur=0.6, blur_sigma=(0.3, 2.5), p_defocus=0.35, defocus_radius=(1.0, 3.0),
        p_motion=0.1, p_noise=0.3, noise_sigma=(0.003, 0.03), p_grain=0.1, p_lowres=0.3, p_jpeg=0.4,
        jpeg_quality=(50, 100), p_halftone=0.0, p_paper=0.2,
    )


@dataclass(frozen=True)
class DenoiseTrainConfig:
    """Everything a denoiser (or sharpener) run depends on; recorded in the checkpoint."""

    head: str = "denoiser"  # the model's net trained: "denoiser" or "sharpener"
    width: int = 32
    depth: int = DEPTH  # convolutions
    crop: int = 96
    batch_size: int = 32
    steps: int = 4000
    lr: float = 1e-3
    lr_min: float = 2e-5  # cosine decay from lr to lr_min over ``steps``
    clean_fraction: float = 0.1
    soft_fraction: float = 0.0  # samples blurred before the damage, target included (``noise_recipe``)
    loss: str = "l1"  # "l1" or "l2" (mean squared error, the sharpener's: see ``sharpener_config``)
    gain: tuple[float, float] = (1.0, 2.0)  # contrast stretch of input and target alike
    pool: int = 8192  # training samples drawn once
    val_samples: int = 512
    seed: int = 0
    scan_long_side: tuple[float, float] = SCAN_LONG_SIDE
    degradation: DegradationConfig = dataclasses.field(default_factory=capture_only)

    def to_dict(self) -> dict[str, Any]:
        out = config_dict(self)
        out["gain"] = list(self.gain)
        return out


@dataclass
class DenoisePool:
    """Samples: inputs and targets (N, 1, crop, crop) as L / 100, and the inputs' noise as
    ``noise_sigma`` measures it (N,), in L units: what the net is told at run time."""

    inputs: torch.Tensor
    targets: torch.Tensor
    sigmas: torch.Tensor


def make_pool(
    paths: Sequence[Path], config: DenoiseTrainConfig, count: int, seed: int, log: Callable[[str], None] = print,
    noise_step: Callable[[np.ndarray], object] | None = None,
) -> DenoisePool:
    """``count`` samples; sample ``i`` is seeded by (seed, i) and draws its photo, so a pool is
    reproducible. ``noise_step`` (in place on L in [0, 100]) is run on each input, as the pipeline
    runs its noise step before the sharpener (``sharpener_noise_step``)."""
    photos = [to_float(read_image(p).pixels) for p in paths]
    inputs = torch.empty(count, 1, config.crop, config.crop)
    targets = torch.empty_like(inputs)
    sigmas = torch.empty(count)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        photo = photos[int(rng.integers(len(photos)))]
        # Never larger than the photo itself: an upscaled window is smooth at the pixel level,
        # and a net trained on such windows takes every scan's fine texture for noise.
        long_side = (config.scan_long_side[0], min(config.scan_long_side[1], max(photo.shape[:2])))
        window, win = scan_crop(photo, config.crop, rng, long_side)
        if config.soft_fraction and rng.random() < config.soft_fraction:
            soften = gaussian_blur if rng.random() < 0.6 else defocus_blur
            window = soften(window, rng, config.degradation, win)
        clean = grey_lightness(to_grey(window)) / 100.0
        noisy = clean if rng.random() < config.clean_fraction else grey_lightness(degrade(window, rng, config.degradation, win).grey) / 100.0
        gain, mean = rng.uniform(*config.gain), float(clean.mean())
        stretched = np.clip(mean + gain * (noisy - mean), 0.0, 1.0).astype(np.float32)
        if noise_step is not None:
            stretched *= 100.0
            noise_step(stretched)
            stretched /= 100.0
        inputs[i, 0] = torch.from_numpy(stretched)
        targets[i, 0] = torch.from_numpy(np.clip(mean + gain * (clean - mean), 0.0, 1.0))
        sigmas[i] = noise_sigma(inputs[i, 0].numpy() * 100.0)
        if (i + 1) % 2000 == 0:
            log(f"{config.head} samples: {i + 1}/{count}")
    return DenoisePool(inputs, targets, sigmas)


def sharpener_config(**overrides: Any) -> DenoiseTrainConfig:
    """The sharpener's run: ``sharpen_recipe``, a quarter of the samples sharp, a milder stretch,
    a squared-error loss. Under L1 a sharpener of 10 convolutions stayed where it started, at
    returning its input (400 steps: validation PSNR 25.31 -> 25.31 dB, the 6-convolution one
    25.31 -> 25.31), as the median of a soft photo's missing detail is near zero; under the
    squared error it went to 25.78 dB in those steps (``runs/s27/initexp.py``)."""
    return DenoiseTrainConfig(**{
        "head": "sharpener", "clean_fraction": 0.25, "gain": (1.0, 1.5), "degradation": sharpen_recipe(),
        "loss": "l2", **overrides,
    })


def sharpener_noise_step(model: PikFix) -> Callable[[np.ndarray], object]:
    """The pipeline's noise step on a grey photo, which runs before the sharpener: the model's
    learned denoiser, or the edge-preserving filter for a model without one."""
    return lambda l: denoise(l, net=model.restoration.denoiser)


def head_net(model: PikFix, head: str) -> Denoiser:
    """The model's denoiser or sharpener (``DenoiseTrainConfig.head``)."""
    if head not in ("denoiser", "sharpener"):
        raise ValueError(f"unknown head {head!r}: choose denoiser or sharpener")
    net = getattr(model.restoration, head)
    if net is None:
        raise ValueError(f"the model has no {head}")
    return net


def with_denoiser(base: PikFix, width: int, head: str = "denoiser", depth: int = DEPTH) -> PikFix:
    """A copy of ``base`` with a fresh denoiser (or sharpener, ``head``) of ``width`` channels and
    ``depth`` convolutions to train; all other weights kept.

    Its last layer starts at random, not at zero as in a fresh model: from zero, training
    stalled (validation L1 0.0553 -> 0.0553 after 400 steps, 0.0522 from a random start), as
    every earlier layer gets no gradient until that layer has grown.
    """
    model = rebuilt(base, f"restoration.{head}.", **{f"{head}_width": width, f"{head}_depth": depth})
    head_net(model, head).body[-1].reset_parameters()
    return model


def head_shape(model: PikFix, head: str, width: int | None = None, depth: int | None = None) -> tuple[int, int]:
    """The width and depth a run trains ``head`` ("denoiser" or "sharpener") at: those given,
    else the model's own head's (so a run continues it), else a fresh head's defaults."""
    cfg = model.config.restoration
    own = getattr(cfg, f"{head}_width") > 0
    return (
        width or (getattr(cfg, f"{head}_width") if own else DenoiseTrainConfig.width),
        depth or (getattr(cfg, f"{head}_depth") if own else DenoiseTrainConfig.depth),
    )


def same_shape(model: PikFix, head: str, width: int, depth: int) -> bool:
    """Whether ``model`` has a ``head`` ("denoiser" or "sharpener") of ``width`` channels and
    ``depth`` convolutions, as its config records (a run continues it)."""
    cfg = model.config.restoration
    return getattr(cfg, f"{head}_width") == width > 0 and getattr(cfg, f"{head}_depth") == depth


def _psnr(out: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR (dB, peak 1) of the mean squared error over all samples (clean ones have none)."""
    return float(-10.0 * torch.log10(((out - target) ** 2).mean().clamp(min=1e-12)))


def evaluate(model: PikFix, val: DenoisePool, head: str = "denoiser") -> dict[str, float]:
    """Validation L1 and PSNR (L / 100) of the input and of the denoised (sharpened) input."""
    net = head_net(model, head)
    inputs, targets = val.inputs, val.targets
    with torch.inference_mode():
        out = torch.cat([net(x, s).clamp(0.0, 1.0) for x, s in zip(inputs.split(64), val.sigmas.split(64))])
    return {
        "l1_input": float((inputs - targets).abs().mean()), "l1": float((out - targets).abs().mean()),
        "psnr_input": _psnr(inputs, targets), "psnr": _psnr(out, targets),
    }


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip and transpose of a batch's inputs and targets."""
    k = int(torch.randint(8, (1,), generator=generator))
    if k & 1:
        x, y = x.flip(-1), y.flip(-1)
    if k & 2:
        x, y = x.flip(-2), y.flip(-2)
    if k & 4:
        x, y = x.transpose(-1, -2), y.transpose(-1, -2)
    return x, y


def train_denoiser(
    model: PikFix, train: DenoisePool, val: DenoisePool,
    config: DenoiseTrainConfig, time_limit: float | None = None, save: Callable[[dict[str, float]], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Fit the model's denoiser or sharpener (``config.head``, only) on the ``train`` pool for
    ``config.steps`` steps or until ``time_limit`` seconds pass; ``save`` is called with the
    validation metrics every 500 steps and at the end. Returns the final validation metrics
    (with the step count)."""
    if config.loss not in ("l1", "l2"):
        raise ValueError(f"unknown loss {config.loss!r}: choose l1 or l2")
    torch.manual_seed(config.seed)
    net = head_net(model, config.head)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    started, step, metrics = time.monotonic(), 0, evaluate(model, val, config.head)
    log(f"step 0: {metrics}")
    while step < config.steps and (time_limit is None or time.monotonic() - started < time_limit):
        lr = config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * step / config.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        pick = torch.randint(len(train.inputs), (config.batch_size,), generator=generator)
        x, y = _augment(train.inputs[pick], train.targets[pick], generator)
        error = net(x, train.sigmas[pick]) - y
        loss = error.square().mean() if config.loss == "l2" else error.abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 500 == 0 or step == config.steps:
            net.eval()
            metrics = {**evaluate(model, val, config.head), "step": step}
            net.train()
            log(f"step {step} ({time.monotonic() - started:.0f} s): loss {loss.item():.4f} {metrics}")
            if save is not None:
                save(metrics)
    net.eval()
    metrics = {**evaluate(model, val, config.head), "step": step}
    if save is not None:
        save(metrics)
    return metrics
