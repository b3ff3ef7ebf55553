"""What the two whole-photo heads' training shares: the tone head (``pikfix.training.tone``)
and the colour tone head (``pikfix.training.colour_tone``).

Both learn from whole photos scanned at a random small size, keep per sample its statistics
and some pixel pairs, feed a share of the samples clean (their correction should be none), and
fit the head alone with Adam and a cosine schedule. Their samples are made once and may be
kept in a cache folder between runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn


class HeadTrainConfig(Protocol):
    """The fields of a whole-photo head's training config that this module reads."""

    @property
    def samples_per_photo(self) -> int: ...
    @property
    def scan_long_side(self) -> tuple[int, int]: ...
    @property
    def clean_fraction(self) -> float: ...
    @property
    def steps(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def seed(self) -> int: ...


class TensorRecord:
    """Mixin for a dataclass of tensors (a head's training samples): saved as one file, loaded
    without pickle execution."""

    def save(self, path: Path) -> None:
        torch.save(dataclasses.asdict(self), path)  # type: ignore[call-overload]

    @classmethod
    def load(cls: type[R], path: Path) -> R:
        return cls(**torch.load(path, weights_only=True))


C = TypeVar("C", bound=HeadTrainConfig)
R = TypeVar("R", bound=TensorRecord)


def resized(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """A photo (H, W, 3) in [0, 1] box-resized to ``long_side`` px: a scan at that size."""
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).resize(size, Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32) / 255.0


def random_scan(photo: np.ndarray, rng: np.random.Generator, scan_long_side: tuple[int, int]) -> np.ndarray:
    """The photo scanned at a long side drawn from ``scan_long_side`` (never above its own)."""
    long_side = int(rng.integers(scan_long_side[0], scan_long_side[1] + 1))
    return resized(photo, min(long_side, max(photo.shape[:2])))


def fit_head(
    head: nn.Module,
    config: HeadTrainConfig,
    samples: int,
    step_loss: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
    validate: Callable[[], dict[str, float]],
    log: Callable[[str], None],
    label: str,
) -> dict[str, float]:
    """Fit ``head`` alone: each step draws ``batch_size`` of the ``samples`` and marks
    ``clean_fraction`` of them to be fed clean; ``step_loss(pick, clean, generator)`` gives
    the loss. Returns ``validate()``'s figures before and after."""
    torch.manual_seed(config.seed)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps, eta_min=config.lr * 0.02)
    generator = torch.Generator().manual_seed(config.seed)
    before = validate()
    head.train()
    for step in range(config.steps):
        pick = torch.randint(0, samples, (config.batch_size,), generator=generator)
        clean = torch.rand(config.batch_size, generator=generator) < config.clean_fraction
        loss = step_loss(pick, clean, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            log(f"{label} step {step + 1}: train L1 {loss.item():.4f} val {validate()}")
    head.eval()
    after = validate()
    return {f"before_{k}": v for k, v in before.items()} | {f"after_{k}": v for k, v in after.items()}


def cached_samples(
    cache: Path | None,
    name: str,
    paths: Sequence[Path],
    config: C,
    make: Callable[[Sequence[Path], C], R],
    load: Callable[[Path], R],
) -> R:
    """``make(paths, config)``, made once per (photos, seed, count, scan sizes) and kept in
    ``cache`` when one is given."""
    lo, hi = config.scan_long_side
    key = f"{name}-{len(paths)}-s{config.seed}-n{config.samples_per_photo}-{lo}-{hi}.pt"
    if cache is not None and (cache / key).is_file():
        return load(cache / key)
    samples = make(paths, config)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        samples.save(cache / key)
    return samples
