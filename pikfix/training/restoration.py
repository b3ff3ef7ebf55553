"""Restoration-only pretraining: the restoration sub-net and its damage detector on L alone.

Restoration needs no reference and no colour, so it trains fast on its own (the paper's
staged alternative to training everything end to end from scratch). Each sample is a window
of a training photo as scanned at a random size (``degradation.scan_crop``), damaged as a
whole scan would be, with the clean grey window as target and the drawn defects as the mask:

* loss = L1 on L, weighted up ``mask_weight`` times inside the damage mask (defects are a few
  per cent of the pixels, so an unweighted L1 is ruled by global tone), plus the detector's
  binary cross-entropy against the mask;
* the repair sees the true mask for half the samples and the detector's own (detached) mask
  for the rest, so it works with a user's mask and with the detector's alike;
* ``clean_fraction`` of the samples are undamaged, so that a clean photo passes through;
* ``detector_only`` trains the detector alone, on its cross-entropy: several times cheaper a
  step, and the repair, which already follows a true mask well, keeps its weights;
  ``repair_only`` is the converse: the repair learns (e.g. to denoise) while a trained
  detector, frozen, keeps the masks it was chosen for.

Every sample is a pure function of (seed, sample index), so a resumed run repeats exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pikfix.atomic import atomic_path, write_text_atomic
from pikfix.checkpoint import load_checkpoint, save_checkpoint
from pikfix.color import grey_lightness, normalize_l
from pikfix.config import ModelConfig, RestorationConfig, preset_config
from pikfix.imageio import read_image, to_float
from pikfix.model import PikFix
from pikfix.nets.restoration import RestorationOutput
from pikfix.training.losses import detector_loss, masked_l1
from pikfix.training.degradation import SCAN_LONG_SIDE, DegradationConfig, degrade, scan_crop, to_grey


@dataclass(frozen=True)
class RestorationTrainConfig:
    """Everything a restoration pretraining run depends on; recorded in its checkpoints."""

    crop: int = 128
    batch_size: int = 16
    steps: int = 4000
    lr: float = 3e-4
    lr_min: float = 1e-5  # cosine decay from lr to lr_min over ``steps``
    mask_weight: float = 4.0  # extra L1 weight inside the damage mask
    detector_weight: float = 0.2  # weight of the detector's cross-entropy
    pos_weight: float = 4.0  # the cross-entropy's weight on damaged pixels (they are rare)
    detector_only: bool = False  # train the damage detector alone (the repair is not run)
    repair_only: bool = False  # train the repair alone (the detector is frozen)
    teacher_mask: float = 0.5  # share of samples repaired with the true mask instead of the detector's
    clean_fraction: float = 0.15  # share of undamaged samples (identity targets)
    scan_long_side: tuple[float, float] = SCAN_LONG_SIDE
    # Share of training samples scanned no larger than the photo itself. Most scans drawn in
    # ``scan_long_side`` upscale the photos (the shipped model's are at most 1024 px), so the
    # sharp thin lines in them are nearly all drawn defects: the detector then flags a sharp
    # photo's own fine detail.
    native_fraction: float = 0.0
    seed: int = 0
    workers: int = 1
    val_every: int = 250
    degradation: DegradationConfig = dataclasses.field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        if self.detector_only and self.repair_only:
            raise ValueError("detector_only and repair_only exclude each other")

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)


def config_dict(config: Any) -> dict[str, Any]:
    """A training config with a ``degradation`` and a ``scan_long_side`` as plain JSON data."""
    out = dataclasses.asdict(config)
    out["degradation"] = config.degradation.to_dict()
    out["scan_long_side"] = list(config.scan_long_side)
    return out


class ScanWindowDataset(Dataset[dict[str, torch.Tensor]]):
    """Damaged grey windows of photos at random scan sizes, their clean L and damage masks.

    Photos are decoded once and kept as float arrays (about 9 MB each at 1024 px). Training
    item ``i`` (sample ``i`` of the whole run) is seeded by (seed, i) and draws its photo;
    validation has four fixed samples per photo.
    """

    def __init__(self, paths: Sequence[Path], config: RestorationTrainConfig, train: bool = True) -> None:
        self.photos = [to_float(read_image(p).pixels) for p in paths]
        self.config = config
        self.train = train

    def __len__(self) -> int:
        return self.config.steps * self.config.batch_size if self.train else len(self.photos) * 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, int(self.train), index])
        photo = self.photos[int(rng.integers(len(self.photos))) if self.train else index // 4]
        long_side = cfg.scan_long_side
        if self.train and cfg.native_fraction > 0 and rng.random() < cfg.native_fraction:
            own = max(photo.shape[:2])
            long_side = (min(long_side[0], own), min(long_side[1], own))
        window, win = scan_crop(photo, cfg.crop, rng, long_side)
        clean = to_grey(window)
        # Validation: every fourth sample is clean (the pass-through check), the others damaged.
        if (rng.random() < cfg.clean_fraction) if self.train else index % 4 == 3:
            grey, mask = clean, np.zeros_like(clean)
        else:
            damaged = degrade(window, rng, cfg.degradation, win)
            grey, mask = damaged.grey, damaged.mask

        def as_l(g: np.ndarray) -> torch.Tensor:
            return normalize_l(torch.from_numpy(grey_lightness(g))[None])

        return {"input_l": as_l(grey), "target_l": as_l(clean), "mask": torch.from_numpy(mask)[None]}


def restoration_loss(
    out: RestorationOutput, target_l: torch.Tensor, mask: torch.Tensor, cfg: RestorationTrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mask-weighted L1 on L plus the detector's cross-entropy; returns (total, terms)."""
    l1 = masked_l1(out.l, target_l, mask, cfg.mask_weight)
    terms = {"l1": l1.item()}
    total = l1
    if out.mask_logits is not None:
        bce = detector_loss(out.mask_logits, mask, cfg.pos_weight)
        terms["bce"] = bce.item()
        total = total + cfg.detector_weight * bce
    return total, terms


def rebuilt(base: PikFix, fresh: str, **restoration: Any) -> PikFix:
    """A copy of ``base`` with restoration config fields changed: the weights whose names
    start with ``fresh`` are new (untrained), all others are ``base``'s."""
    config = ModelConfig.from_dict(
        {**base.config.to_dict(), "restoration": {**dataclasses.asdict(base.config.restoration), **restoration}}
    )
    model = PikFix(config)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith(fresh)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(fresh) for k in missing)
    return model


def with_detector(base: PikFix, restoration: RestorationConfig) -> PikFix:
    """A copy of ``base`` whose restoration sub-net is a fresh one built from ``restoration``
    (e.g. with a damage detector); the similarity and colorization weights are kept."""
    return rebuilt(base, "restoration.", **dataclasses.asdict(restoration))


def _teacher_forced(
    model: PikFix, batch: dict[str, torch.Tensor], share: float, generator: torch.Generator
) -> RestorationOutput:
    """Detect, then repair guided by the true mask for ``share`` of the samples and by the
    detector's own (detached) mask for the rest. Training crops are multiples of 8."""
    net, l, true_mask = model.restoration, batch["input_l"], batch["mask"]
    if net.detector is None:
        return net(l)
    logits = net.detector(l)
    teacher = torch.rand(len(l), 1, 1, 1, generator=generator) < share
    guide = torch.where(teacher, true_mask, net.detector_mask(logits))
    return RestorationOutput(net.repair(l, guide), logits, guide)


def with_restoration(base: PikFix, source: PikFix, **changes: Any) -> PikFix:
    """A copy of ``base`` (its similarity and colorization weights) whose restoration sub-net,
    config and weights, is ``source``'s; ``changes`` set restoration config fields that hold no
    weights (e.g. ``detector_threshold``). Restoration is trained on its own, then composed."""
    model = rebuilt(base, "restoration.", **{**dataclasses.asdict(source.config.restoration), **changes})
    model.restoration.load_state_dict(source.restoration.state_dict())
    return model


def with_detector_of(base: PikFix, source: PikFix) -> PikFix:
    """A copy of ``base`` whose damage detector, config and weights, is ``source``'s (e.g. from
    a detector-only run); every other weight is ``base``'s."""
    cfg = source.config.restoration
    model = fresh_detector(base, cfg.detector_width, cfg.detector_tophat)
    model.restoration.detector.load_state_dict(source.restoration.detector.state_dict())
    return model


def fresh_detector(base: PikFix, width: int, tophat: int = 0) -> PikFix:
    """A copy of ``base`` with a new, untrained damage detector of ``width`` (seeing L's
    top-hats with a ``tophat`` px square, if > 0); all other weights kept."""
    return rebuilt(base, "restoration.detector.", detector_width=width, detector_tophat=tophat)


DETECTION_THRESHOLDS = (0.5, 0.7, 0.9)


def _cosine_lr(cfg: RestorationTrainConfig, step: int) -> float:
    t = min(1.0, step / max(1, cfg.steps))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * t))


def evaluate(model: PikFix, loader: DataLoader) -> dict[str, float]:
    """On the fixed validation set: PSNR of L (from the pooled MSE) on damaged samples, for the
    input and the output, the mean L1 inside the damage mask, the PSNR of clean samples
    after restoration (pass-through: how much a clean photo is changed) and, with a detector,
    at each of ``DETECTION_THRESHOLDS`` the share of damaged pixels found and of clean samples'
    pixels flagged (to choose the detector's threshold)."""
    model.eval()
    sq = {"psnr": 0.0, "input_psnr": 0.0, "clean_psnr": 0.0}
    counts = {"psnr": 0, "input_psnr": 0, "clean_psnr": 0}
    mask_err, mask_pixels = 0.0, 0.0
    detection = {f"recall@{t}": 0.0 for t in DETECTION_THRESHOLDS} | {f"clean_flagged@{t}": 0.0 for t in DETECTION_THRESHOLDS}
    clean_pixels, detects = 0, False
    with torch.no_grad():
        for batch in loader:
            restored = model.restore(batch["input_l"])
            out = restored.l.clamp(-1, 1)
            clean = (batch["input_l"] == batch["target_l"]).flatten(1).all(dim=1)
            err = (out - batch["target_l"]) / 2.0  # [-1, 1] -> [0, 1]
            mask_err += float((err.abs() * batch["mask"]).sum())
            mask_pixels += float(batch["mask"].sum())
            if restored.mask_logits is not None:
                detects = True
                p = torch.sigmoid(restored.mask_logits)
                clean_pixels += int(clean.sum()) * p[0].numel()
                for t in DETECTION_THRESHOLDS:
                    detection[f"recall@{t}"] += float(((p > t) * batch["mask"]).sum())
                    detection[f"clean_flagged@{t}"] += float((p[clean] > t).sum())
            for key, e, rows in (
                ("psnr", err, ~clean), ("input_psnr", (batch["input_l"] - batch["target_l"]) / 2.0, ~clean),
                ("clean_psnr", err, clean),
            ):
                sq[key] += float((e[rows] ** 2).sum())
                counts[key] += int(rows.sum()) * e[0].numel()
    model.train()
    out_metrics = {k: -10 * math.log10(max(sq[k] / max(counts[k], 1), 1e-10)) for k in sq}
    out_metrics["l1_mask"] = mask_err / max(mask_pixels, 1.0)
    if detects:
        for t in DETECTION_THRESHOLDS:
            out_metrics[f"recall@{t}"] = detection[f"recall@{t}"] / max(mask_pixels, 1.0)
            out_metrics[f"clean_flagged@{t}"] = detection[f"clean_flagged@{t}"] / max(clean_pixels, 1)
    return out_metrics


def train_restoration(
    train_paths: Sequence[Path],
    val_paths: Sequence[Path],
    out_dir: Path,
    config: RestorationTrainConfig,
    base_model: Path | None = None,
    resume: bool = False,
    time_limit: float | None = None,
    log: Callable[[str], None] = print,
    detector_width: int | None = None,
    detector_tophat: int = 0,
) -> Path:
    """Train the restoration sub-net; returns the path of the last checkpoint (``last.safetensors``).

    The model starts from ``base_model`` (a restoration without a damage detector is replaced
    by its preset's, with detector; the colour sub-nets are kept) or a fresh ``lite`` model. State is saved
    every ``val_every`` steps and when ``time_limit`` (seconds) runs out; ``resume`` continues.
    ``detector_width`` replaces the starting model's detector by a fresh one of that width (seeing
    top-hats of ``detector_tophat`` px, if > 0).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    state_path, ckpt_path = out_dir / "state.pt", out_dir / "last.safetensors"
    if resume and ckpt_path.is_file():
        model, _ = load_checkpoint(ckpt_path)
    else:
        model = load_checkpoint(base_model)[0] if base_model is not None else PikFix(preset_config("lite"))
        if model.restoration.detector is None:  # a model from before the detector: a fresh restoration
            model = with_detector(model, preset_config(model.config.preset).restoration)
        if detector_width is not None:
            model = fresh_detector(model, detector_width, detector_tophat)
    model.train()
    net = model.restoration
    if config.repair_only:
        if net.detector is None:
            raise ValueError("repair_only needs a model with a damage detector")
        net.detector.requires_grad_(False)  # no graph through it: its masks cost a forward only
    trained = net.detector if config.detector_only else torch.nn.ModuleList([net.levels, net.fuse]) if config.repair_only else net
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
    step = 0
    if resume and state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log(f"resumed at step {step}")

    train_set = ScanWindowDataset(train_paths, config, train=True)
    val_loader = DataLoader(ScanWindowDataset(val_paths, config, train=False), batch_size=config.batch_size)
    started = time.monotonic()

    def save(metrics: dict[str, float]) -> None:
        meta = {"stage": "restoration", "step": step, "train_config": config.to_dict(), "val": metrics}
        save_checkpoint(model, ckpt_path, metadata=meta)
        with atomic_path(state_path) as tmp:
            torch.save({"optimizer": opt.state_dict(), "step": step}, tmp)
        with (out_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "elapsed_s": round(time.monotonic() - started, 1), **metrics}) + "\n")

    write_text_atomic(out_dir / "config.json", json.dumps(config.to_dict(), indent=2))
    # One loader for the whole run, starting at the resumed step's first sample.
    loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=range(step * config.batch_size, len(train_set)),
        num_workers=config.workers, persistent_workers=config.workers > 0,
    )
    for batch in loader:
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(config, step)
        if config.detector_only:
            loss = detector_loss(net.detector(batch["input_l"]), batch["mask"], config.pos_weight)
            terms = {"bce": loss.item()}
        else:
            out = _teacher_forced(model, batch, config.teacher_mask, torch.Generator().manual_seed(step))
            loss, terms = restoration_loss(out, batch["target_l"], batch["mask"], config)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        out_of_time = time_limit is not None and time.monotonic() - started > time_limit
        if step % config.val_every == 0 or step == config.steps or out_of_time:
            metrics = evaluate(model, val_loader)
            log(f"step {step}: train {terms} val {metrics} ({time.monotonic() - started:.0f} s)")
            save(metrics)
        if out_of_time:
            log(f"time limit reached at step {step}")
            break
    return ckpt_path
