"""Training of the Pik-Fix model (paper 3.4, 4.1), staged or end to end, on one process or many.

A run directory holds:
- ``config.json``: the resolved training config (model, data, loss, optimiser, stages);
- ``log.jsonl``: one JSON object per event (config, step, validation, checkpoint);
- ``train_state.pt``: everything needed to resume exactly (model, discriminator, optimisers,
  step), written atomically, readable with ``torch.load(weights_only=True)``;
- ``last.safetensors`` / ``best.safetensors``: inference checkpoints (``pikfix fix --model``).

Everything is a function of the step: the stage, the learning rate (``Schedule``), the epoch
and position in its shuffled order, and through them each sample, whose randomness the
dataset derives from (seed, epoch, index).  Resuming at any step N, the last step of an epoch
included, therefore reproduces the uninterrupted run.  One DataLoader serves the whole run,
so its workers start once.  Under ``torchrun`` the same code uses DistributedDataParallel:
each rank takes every world-th element of the shared batch order, rank 0 validates, logs and
writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pikfix.atomic import atomic_path
from pikfix.checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from pikfix.color import denormalize_ab, denormalize_l, lab_to_rgb
from pikfix.config import ModelConfig, preset_config, reject_unknown_keys
from pikfix.training.data import REF_RETRIEVED, DataConfig, PairDataset, reference_neighbours, scan_folders, split
from pikfix.training.losses import LossConfig, PatchDiscriminator, PikFixLoss, detector_loss, masked_l1
from pikfix.metrics import psnr, ssim
from pikfix.model import PikFix, PikFixOutput
from pikfix.nets.restoration import RestorationOutput

STATE_FILE = "train_state.pt"


class TrainError(ValueError):
    """A training run cannot start or resume (bad config, data or run directory)."""


STAGES = ("joint", "restoration", "colorization")


@dataclass(frozen=True)
class StageSpec:
    """One stage of a training recipe: what is trained, for how many steps.

    ``restoration``: the restoration sub-net alone, on L with the L losses (eq. 5-6); the
    similarity and colorization sub-nets are not run, so a step is cheap.
    ``colorization``: restoration frozen (run without gradients), the colour sub-nets trained
    with the colour losses (eq. 7-9).  ``joint``: everything end to end (the paper).
    ``steps``: None runs the stage until the run ends (the last stage only).
    """

    stage: str = "joint"
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        if self.steps is not None and (not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1):
            raise ValueError(f"stage {self.stage!r}: steps must be an integer >= 1, got {self.steps!r}")

    @classmethod
    def parse(cls, value: Any) -> "StageSpec":
        """A stage name or a {"stage": ..., "steps": ...} object from JSON."""
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            reject_unknown_keys(value, cls, "stage")
            return cls(**value)
        raise ValueError(f"a stage is a name or an object with 'stage' and 'steps', got {value!r}")


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in config.json and in every checkpoint.

    Schedules count optimiser steps, not photos: an epoch is ``crops_per_photo`` crops of every
    training photo (or exactly ``crops_per_epoch`` crops), so its length does not depend on how
    few photos there are, and LR decay and validation can be set per step.
    """

    preset: str = "lite"
    seed: int = 0
    batch_size: int = 8
    epochs: int = 20  # run length when no stage has a step count and max_steps is not reached
    crops_per_photo: int = 8  # an epoch visits every training photo this many times
    crops_per_epoch: int | None = None  # or this many crops exactly (overrides crops_per_photo)
    max_steps: int | None = None  # stops early when reached (None: run all epochs / stages)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)  # the paper prints 0.99 for beta1; 0.9 is the usual value
    lr_decay: float = 0.99  # LR multiplied by this every lr_decay_every steps (paper: per epoch)
    lr_decay_every: int | None = None  # steps; None: once per epoch. Restarts with each stage.
    disc_lr: float = 1e-4
    grad_clip: float = 1.0
    amp: bool = True  # bf16 autocast on CUDA (the similarity matmul stays float32); ignored on CPU
    num_workers: int = 2
    cache_photos: bool = True  # decode and resize every photo once, before the workers start
    checkpoint_every: int = 200  # steps
    log_every: int = 10  # steps
    val_every: int | None = None  # steps; None: at the end of every epoch (and always at the end)
    val_max_images: int = 32
    # torch.use_deterministic_algorithms: bit-exact on CPU; on CUDA the bilinear-upsampling and
    # adaptive-pooling backward kernels have no deterministic version, so there it only warns.
    deterministic: bool = False
    stages: tuple[StageSpec, ...] = (StageSpec(),)
    model: ModelConfig | None = None  # None: the preset's config (or the init model's)
    # A model file (.safetensors) whose weights start the run, e.g. the shipped model, so that
    # one stage can be trained further on top of sub-nets trained elsewhere (tools/train_*.py).
    init: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def resolved_model(self) -> ModelConfig:
        if self.model is not None:
            return self.model
        if self.init is not None:
            try:
                return ModelConfig.from_dict(read_header(self.init)["config"])
            except (CheckpointError, KeyError, TypeError) as err:
                raise ValueError(f"init model: {err}") from None
        return preset_config(self.preset)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["betas"] = list(self.betas)
        out["stages"] = [dataclasses.asdict(s) for s in self.stages]
        out["model"] = self.resolved_model().to_dict()
        out["data"] = self.data.to_dict()
        out["loss"] = self.loss.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from JSON; unknown keys and invalid values raise TrainError naming them."""
        values = dict(data)
        try:
            reject_unknown_keys(data, cls, "training config")
            if "model" in values and values["model"] is not None:
                values["model"] = ModelConfig.from_dict(values["model"])
            if "data" in values:
                values["data"] = DataConfig.from_dict(values["data"])
            if "loss" in values:
                values["loss"] = LossConfig.from_dict(values["loss"])
            if "betas" in values:
                values["betas"] = tuple(values["betas"])
            if "stages" in values:
                if not isinstance(values["stages"], list) or not values["stages"]:
                    raise ValueError("stages must be a non-empty list")
                values["stages"] = tuple(StageSpec.parse(s) for s in values["stages"])
            config = cls(**values)
        except (TypeError, ValueError) as err:
            raise TrainError(f"invalid training config: {err}") from None
        config.validate()
        return config

    def validate(self) -> None:
        def positive_or_none(value: int | None) -> bool:
            return value is None or value >= 1

        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.crops_per_photo >= 1, "crops_per_photo must be >= 1"),
            (positive_or_none(self.crops_per_epoch), "crops_per_epoch must be >= 1"),
            (self.max_steps is None or self.max_steps >= 0, "max_steps must be >= 0"),
            (self.lr > 0 and self.disc_lr > 0, "learning rates must be > 0"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (positive_or_none(self.lr_decay_every), "lr_decay_every must be >= 1 step"),
            (all(0 <= b < 1 for b in self.betas) and len(self.betas) == 2, "betas must be two numbers in [0, 1)"),
            (self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every and log_every must be >= 1"),
            (positive_or_none(self.val_every), "val_every must be >= 1 step"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (all(s.steps is not None for s in self.stages[:-1]), "only the last stage may omit its steps"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(f"invalid training config: {message}")
        try:
            self.resolved_model()
        except ValueError as err:
            raise TrainError(str(err)) from None

    def stage_spans(self, total: int) -> list[tuple[str, int, int]]:
        """(stage, first step, end step) of each stage within a run of ``total`` steps."""
        spans, start = [], 0
        for spec in self.stages:
            end = total if spec.steps is None else min(total, start + spec.steps)
            if end > start:
                spans.append((spec.stage, start, end))
            start = end
        return spans or [(self.stages[0].stage, 0, 0)]


@dataclass(frozen=True)
class Schedule:
    """Step arithmetic of a run: epochs, stages, learning rate and when to validate."""

    steps_per_epoch: int
    rounds: int  # passes over the photos per epoch (an epoch's sample pool is rounds x photos)
    total: int
    spans: tuple[tuple[str, int, int], ...]
    lr: float
    lr_decay: float
    lr_decay_every: int
    val_every: int

    @classmethod
    def build(cls, config: TrainConfig, photos: int, world: int) -> "Schedule":
        """An epoch holds at least one global batch, so a batch larger than the photo set works."""
        global_batch = config.batch_size * world
        crops = config.crops_per_epoch if config.crops_per_epoch is not None else config.crops_per_photo * photos
        crops = max(crops, global_batch)
        steps_per_epoch = crops // global_batch
        fixed = [s.steps for s in config.stages]
        total = sum(fixed) if all(n is not None for n in fixed) else config.epochs * steps_per_epoch  # type: ignore[misc]
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        return cls(
            steps_per_epoch=steps_per_epoch,
            rounds=math.ceil(steps_per_epoch * global_batch / photos),
            total=total,
            spans=tuple(config.stage_spans(total)),
            lr=config.lr,
            lr_decay=config.lr_decay,
            lr_decay_every=config.lr_decay_every or steps_per_epoch,
            val_every=config.val_every or steps_per_epoch,
        )

    def stage_at(self, step: int) -> tuple[str, int]:
        """The stage that runs step ``step`` (0-based) and the step it started at."""
        for name, first, end in self.spans:
            if first <= step < end:
                return name, first
        name, first, _ = self.spans[-1]
        return name, first

    def lr_at(self, step: int) -> float:
        """Exponential decay per ``lr_decay_every`` steps, restarting at each stage."""
        _, first = self.stage_at(step)
        return self.lr * self.lr_decay ** ((step - first) // self.lr_decay_every)

    def validates_after(self, step: int) -> bool:
        """Whether validation runs once ``step`` steps are done (periodically and at the end)."""
        return step % self.val_every == 0 or step == self.total


# --------------------------------------------------------------------------- distributed helpers


@dataclass
class Dist:
    """Rank/world of this process; world 1 without torchrun."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def distributed_device(requested: torch.device) -> torch.device:
    """Under torchrun each rank takes its own GPU (LOCAL_RANK)."""
    if requested.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return requested


# --------------------------------------------------------------------------- the trainer


@dataclass
class ValResult:
    l1_ab: float
    l1_l: float
    psnr: float
    ssim: float


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of an epoch, the same on every rank and after a resume."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


class _CropPlan(Dataset[dict[str, torch.Tensor]]):
    """Samples keyed by (epoch, position): position // photos is the pass over the photos
    within the epoch, position % photos the photo.  Each pass draws fresh randomness from the
    photo dataset (its epoch is ``epoch * rounds + pass``), so the crops of one photo in an
    epoch differ, and with one pass per epoch the samples are the photo dataset's own."""

    def __init__(self, photos: PairDataset, rounds: int) -> None:
        self.photos = photos
        self.rounds = rounds

    def __len__(self) -> int:
        return self.rounds * len(self.photos)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, position = key
        n = len(self.photos)
        self.photos.set_epoch(epoch * self.rounds + position // n)
        return self.photos[position % n]


class _BatchPlan:
    """This rank's batch keys from ``start`` to ``end`` step: one DataLoader serves the whole
    run (its workers start once), and starting at any step reproduces the uninterrupted order."""

    def __init__(self, schedule: Schedule, pool: int, seed: int, batch: int, dist_: "Dist", start: int) -> None:
        self.schedule, self.pool, self.seed, self.batch, self.dist = schedule, pool, seed, batch, dist_
        self.start = start

    def __len__(self) -> int:
        return max(0, self.schedule.total - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.batch * self.dist.world
        order: list[int] = []
        current = -1
        for step in range(self.start, self.schedule.total):
            epoch, position = divmod(step, self.schedule.steps_per_epoch)
            if epoch != current:
                order, current = epoch_order(self.pool, self.seed, epoch), epoch
            chunk = order[position * global_batch : (position + 1) * global_batch]
            yield [(epoch, v) for k, v in enumerate(chunk) if k % self.dist.world == self.dist.rank]


class _StageForward(nn.Module):
    """The forward pass of each stage, as one module so DistributedDataParallel can wrap it."""

    def __init__(self, model: PikFix) -> None:
        super().__init__()
        self.model = model

    def forward(self, stage: str, l: torch.Tensor, ref_l: torch.Tensor, ref_ab: torch.Tensor) -> Any:
        if stage == "restoration":
            return self.model.restore(l)
        if stage == "colorization":
            with torch.no_grad():
                restored = self.model.restore(l).l
            ab, confidence = self.model.colorize(restored, ref_l, ref_ab)
            return PikFixOutput(l=restored, ab=ab, confidence=confidence)
        return self.model(l, ref_l, ref_ab)


class Trainer:
    """Owns the model, losses, optimisers and the run directory of one training run."""

    def __init__(
        self,
        data_dirs: Path | Sequence[Path],
        run_dir: Path,
        config: TrainConfig,
        device: torch.device,
        resume: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        if config.init is not None and config.model is None:
            # The init file's config, read once: checkpoints record it without rereading the file.
            config = dataclasses.replace(config, model=config.resolved_model())
        self.config = config
        self.run_dir = run_dir
        self.log_line = log
        self.device = distributed_device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = init_distributed(self.device)
        if config.deterministic:
            _make_deterministic(self.device)
        torch.manual_seed(config.seed)

        state = self._check_run_dir(resume)
        paths, self.skipped = scan_folders([data_dirs] if isinstance(data_dirs, (str, Path)) else data_dirs, config.data)
        self.train_paths, self.val_paths = split(paths, config.data.val_fraction, config.seed)
        val_paths = self.val_paths[: config.val_max_images]
        neighbours = None  # retrieved references: each photo's best training photos but itself
        if config.data.kind_probabilities()[REF_RETRIEVED] > 0:
            neighbours = reference_neighbours(self.train_paths + val_paths, self.train_paths,
                                              self.run_dir / "neighbours", config.data.ref_neighbours)
        self.train_set = PairDataset(self.train_paths, config.data, config.seed, train=True, neighbours=neighbours)
        self.val_set = PairDataset(val_paths, config.data, config.seed, train=False, neighbours=neighbours)
        self.schedule = Schedule.build(config, len(self.train_paths), self.dist.world)
        self.steps_per_epoch = self.schedule.steps_per_epoch
        self.crops = _CropPlan(self.train_set, self.schedule.rounds)

        self.model = PikFix(config.resolved_model())
        if config.init is not None and state is None:
            self.model.load_state_dict(_init_weights(Path(config.init), self.model))
        self.model.to(self.device)
        if self.model.restoration.tone is not None:
            # The tone head needs whole photos, not crops: tools/train_tone.py trains it.
            self.model.restoration.tone.requires_grad_(False)
        # From the config, not from this run's steps: a run resumed with more steps must build
        # the same modules (same initial weights) as the uninterrupted run.
        stages = {spec.stage for spec in config.stages}
        self.loss = PikFixLoss(config.loss, self.model.sphist).to(self.device)
        # Restoration is frozen in the colorization stage: its L terms would cost a perceptual
        # pass and move nothing, so that stage uses the colour terms only.
        no_l_terms = dataclasses.replace(config.loss, alpha=0.0, beta=0.0)
        self.colour_loss = PikFixLoss(no_l_terms, self.model.sphist).to(self.device) if "colorization" in stages else None
        gan = self.loss.uses_gan and bool(stages & {"joint", "colorization"})
        self.disc = PatchDiscriminator().to(self.device) if gan else None
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(trainable, lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.999)) if self.disc else None
        self.step = 0
        self.best_psnr = -math.inf
        self.stopped_early = False  # set by fit when the time limit ended the run
        if state is not None:
            self._load_state(state)
        self.stage_forward: nn.Module = _StageForward(self.model)
        # The discriminator runs several forward passes per step, which DDP does not allow;
        # its gradients are averaged across ranks by hand instead (_average_disc_grads).
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.stage_forward = DistributedDataParallel(self.stage_forward, device_ids=ids, find_unused_parameters=stages != {"joint"})

    # ---------------------------------------------------------------- run directory and state

    def _check_run_dir(self, resume: bool) -> dict[str, Any] | None:
        state_path = self.run_dir / STATE_FILE
        if not resume:
            if state_path.exists():
                raise TrainError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out")
            return None
        if not state_path.exists():
            raise TrainError(f"{self.run_dir}: nothing to resume ({STATE_FILE} not found)")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError) as err:
            raise TrainError(f"{state_path}: unreadable training state ({err})") from None
        saved = state.get("config", {})
        mine = self.config.to_dict()
        # Everything that decides which samples come at which step, and what the model is.
        for key in ("model", "data", "seed", "batch_size", "preset", "crops_per_photo", "crops_per_epoch"):
            if saved.get(key) != mine[key]:
                raise TrainError(
                    f"{self.run_dir} was trained with a different {key!r} "
                    f"({json.dumps(saved.get(key))[:120]}); resume with the same settings or use a new --out"
                )
        done = int(state["step"])
        if _stages_until(saved.get("stages", []), done) != _stages_until(mine["stages"], done):
            raise TrainError(
                f"{self.run_dir}: the stages of its first {done} steps differ from this config's; "
                "later stages may change, finished ones may not"
            )
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.disc is not None and self.opt_d is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.best_psnr = float(state["best_psnr"])

    def _save_state(self) -> None:
        state: dict[str, Any] = {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "best_psnr": self.best_psnr,
        }
        if self.disc is not None and self.opt_d is not None:
            state["disc"] = self.disc.state_dict()
            state["opt_d"] = self.opt_d.state_dict()
        with atomic_path(self.run_dir / STATE_FILE) as tmp:
            torch.save(state, tmp)
        save_checkpoint(self.model, self.run_dir / "last.safetensors", self._metadata())

    def _metadata(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "stage": self.schedule.stage_at(max(0, self.step - 1))[0],
            "train_images": len(self.train_paths),
            "val_images": len(self.val_paths),
            "perceptual": self.loss.perceptual_description,
            "training": self.config.to_dict(),
        }

    def _event(self, kind: str, **fields: Any) -> None:
        """Append one JSON line to log.jsonl (rank 0 only)."""
        if not self.dist.main:
            return
        record = {"event": kind, "time": round(time.time(), 3), **fields}
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    # ---------------------------------------------------------------- batches

    def batches(self, start: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches from step ``start`` to the end of the run, from one DataLoader."""
        if self.config.cache_photos:
            self.train_set.preload()  # before the workers fork, so they share the decoded photos
        plan = _BatchPlan(self.schedule, len(self.crops), self.config.seed, self.config.batch_size, self.dist, start)
        loader = DataLoader(
            self.crops,
            batch_sampler=plan,  # type: ignore[arg-type]  # any iterable of index lists works
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _autocast(self):  # noqa: ANN202 - a context manager
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    # ---------------------------------------------------------------- one step

    def train_step(self, batch: dict[str, torch.Tensor], stage: str = "joint") -> dict[str, float]:
        """One optimiser step of ``stage``; returns the loss terms for the log."""
        self.stage_forward.train()
        with self._autocast():
            out = self.stage_forward(stage, batch["input_l"], batch["ref_l"], batch["ref_ab"])
        if stage == "restoration":
            g_loss, terms = self._restoration_loss(out, batch["target_l"], batch["mask"])
        else:
            loss = self.colour_loss if stage == "colorization" and self.colour_loss is not None else self.loss
            terms = self._discriminator_step(loss, batch, out.ab.float())
            with self._autocast():
                g_loss, g_terms = loss.generator_loss(
                    _float_output(out), batch["target_l"], batch["target_ab"], batch["ref_ab"], self.disc, batch["mask"]
                )
            terms.update(g_terms)
        self.opt.zero_grad(set_to_none=True)
        if self.opt_d is not None:
            self.opt_d.zero_grad(set_to_none=True)
        g_loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.config.grad_clip)
        self.opt.step()  # parameters without a gradient (another stage's) are left as they are
        terms["total"] = float(g_loss.detach())
        return terms

    def _restoration_loss(
        self, out: RestorationOutput, target_l: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 5 (weighted up inside the damage mask) + eq. 6 + the damage detector's
        cross-entropy, with the run's weights: the restoration stage's whole objective."""
        cfg = self.loss.config
        restored = out.l.float()
        weighted = {"rec_l": (cfg.alpha, masked_l1(restored, target_l, mask, cfg.mask_weight))}
        if cfg.delta > 0 and out.mask_logits is not None:
            weighted["detector"] = (cfg.delta, detector_loss(out.mask_logits.float(), mask))
        if self.loss.perceptual is not None:
            weighted["perc_l"] = (cfg.beta, self.loss.perceptual(restored, target_l))
        total = sum((w * v for w, v in weighted.values()), restored.new_zeros(()))
        return total, {name: float(v.detach()) for name, (_, v) in weighted.items()}

    def _discriminator_step(self, loss: PikFixLoss, batch: dict[str, torch.Tensor], pred_ab: torch.Tensor) -> dict[str, float]:
        if self.disc is None or self.opt_d is None or not loss.uses_gan:
            return {}
        with self._autocast():
            d_loss, d_terms = loss.discriminator_loss(self.disc, batch["target_l"], batch["target_ab"], pred_ab)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self._average_disc_grads()
        self.opt_d.step()
        return d_terms

    def _average_disc_grads(self) -> None:
        if self.dist.world == 1 or self.disc is None:
            return
        for p in self.disc.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.dist.world

    # ---------------------------------------------------------------- validation

    @torch.no_grad()
    def validate(self) -> ValResult:
        """L1(ab), L1(L) in normalised units, PSNR and SSIM (8-bit RGB) on the validation crops."""
        self.model.eval()
        sums = {"l1_ab": 0.0, "l1_l": 0.0, "psnr": 0.0, "ssim": 0.0}
        n = 0
        for i in range(len(self.val_set)):
            item = {k: v.unsqueeze(0).to(self.device) for k, v in self.val_set[i].items()}
            out = self.model(item["input_l"], item["ref_l"], item["ref_ab"])
            pred = _to_rgb(out.l.clamp(-1, 1), out.ab)
            target = _to_rgb(item["target_l"], item["target_ab"])
            sums["l1_ab"] += float((out.ab - item["target_ab"]).abs().mean())
            sums["l1_l"] += float((out.l - item["target_l"]).abs().mean())
            value = psnr(pred, target)
            sums["psnr"] += min(value, 100.0)
            sums["ssim"] += ssim(pred, target)
            n += 1
        return ValResult(**{k: v / max(n, 1) for k, v in sums.items()})

    def _validate_and_log(self) -> ValResult:
        result = self.validate()
        self._event("val", step=self.step, epoch=self.step / self.steps_per_epoch, **dataclasses.asdict(result))
        self.log_line(
            f"validation @ step {self.step}: L1(ab) {result.l1_ab:.4f}  L1(L) {result.l1_l:.4f}  "
            f"PSNR {result.psnr:.2f} dB  SSIM {result.ssim:.4f}"
        )
        if result.psnr > self.best_psnr:
            self.best_psnr = result.psnr
            save_checkpoint(self.model, self.run_dir / "best.safetensors", {**self._metadata(), "val": dataclasses.asdict(result)})
        return result

    # ---------------------------------------------------------------- the loop

    def total_steps(self) -> int:
        return self.schedule.total

    def fit(
        self, progress: Callable[[int, int, dict[str, float]], None] | None = None, time_limit: float | None = None
    ) -> None:
        """Train until ``total_steps`` or until ``time_limit`` seconds of wall clock are used.

        With a time limit, no step starts that would likely end past the budget, counting the
        final validation and checkpoint (estimated from the last validation and the mean step);
        the run then saves and validates as at its end, and ``--resume`` continues it exactly.
        """
        begin = time.perf_counter()
        total = self.total_steps()
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
            self._event(
                "start", step=self.step, total_steps=total, device=str(self.device), world=self.dist.world,
                train_images=len(self.train_paths), val_images=len(self.val_paths),
                steps_per_epoch=self.steps_per_epoch, stages=[list(s) for s in self.schedule.spans],
                skipped=[[str(p), r] for p, r in self.skipped], perceptual=self.loss.perceptual_description,
                config=self.config.to_dict(), time_limit_s=time_limit,
            )
        val_seconds = 0.0
        if self.dist.main and self.step == 0:
            tick = time.perf_counter()
            self._validate_and_log()
            val_seconds = time.perf_counter() - tick
        start_step, tick = self.step, time.perf_counter()
        validated_at = self.step
        self.stopped_early = False
        batches = self.batches(self.step)
        for batch in batches:
            if time_limit is not None and self._out_of_time(begin, tick, start_step, val_seconds, time_limit):
                self.stopped_early = True
                break
            stage, _ = self.schedule.stage_at(self.step)
            for group in self.opt.param_groups:
                group["lr"] = self.schedule.lr_at(self.step)
            terms = self.train_step(batch, stage)
            self.step += 1
            if self.dist.main and (self.step % self.config.log_every == 0 or self.step == total):
                elapsed = time.perf_counter() - tick
                crops = (self.step - start_step) * self.config.batch_size * self.dist.world
                self._event("step", step=self.step, epoch=self.step / self.steps_per_epoch, stage=stage,
                            lr=self.opt.param_groups[0]["lr"], crops_per_s=round(crops / max(elapsed, 1e-9), 3), **terms)
            if progress is not None and self.dist.main:
                progress(self.step, total, terms)
            if self.dist.main and self.schedule.validates_after(self.step):
                started = time.perf_counter()
                self._validate_and_log()
                val_seconds = time.perf_counter() - started
                validated_at = self.step
            if self.step % self.config.checkpoint_every == 0 and self.dist.main:
                self._save_state()
                self._event("checkpoint", step=self.step)
        batches.close()  # stops the data workers now, also when the time limit ended the loop
        if self.dist.main:
            if validated_at != self.step:
                self._validate_and_log()
            self._save_state()
            reason = "time limit" if self.stopped_early else "done"
            self._event("end", step=self.step, reason=reason, seconds=round(time.perf_counter() - begin, 2))
        if self.dist.world > 1:
            dist.barrier()

    def _out_of_time(self, begin: float, tick: float, start_step: int, val_seconds: float, limit: float) -> bool:
        """Whether the next step plus the final validation and save would overrun ``limit``.

        Rank 0 decides and every rank follows, so DDP processes stop at the same step.
        """
        now = time.perf_counter()
        done = self.step - start_step
        step_seconds = (now - tick) / done if done else 0.0
        stop = now - begin + step_seconds + 1.5 * val_seconds >= limit
        if self.dist.world > 1:
            flag = torch.tensor([float(stop)], device=self.device)
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        return stop


def _init_weights(path: Path, model: PikFix) -> dict[str, torch.Tensor]:
    """The state of the model file ``path``, which must have ``model``'s config (TrainError otherwise)."""
    try:
        loaded, _ = load_checkpoint(path)
    except CheckpointError as err:
        raise TrainError(f"init model: {err}") from None
    if loaded.config != model.config:
        raise TrainError(f"init model {path}: its config differs from the run's model config; leave 'model' unset to use its own")
    return loaded.state_dict()


def _stages_until(stages: list[dict[str, Any]], steps: int) -> list[str]:
    """The stage name of each of the first ``steps`` steps, compactly: (name, count) runs."""
    runs: list[str] = []
    left = steps
    for spec in stages:
        count = left if spec.get("steps") is None else min(left, int(spec["steps"]))
        if count > 0:
            runs.append(f"{spec['stage']}x{count}")
        left -= count
    if left > 0 and stages:
        runs.append(f"{stages[-1]['stage']}x{left}")
    return runs


def _make_deterministic(device: torch.device) -> None:
    """Bit-exact on CPU.  On CUDA, the backward of bilinear upsampling and adaptive pooling has
    no deterministic kernel: those warn instead of failing, everything else is deterministic."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)


def _float_output(out: Any) -> Any:
    """Losses are computed in float32 even when the forward pass ran in bf16."""
    logits = None if out.mask_logits is None else out.mask_logits.float()
    return dataclasses.replace(out, l=out.l.float(), ab=out.ab.float(), mask_logits=logits)


def _to_rgb(l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    lab = torch.cat([denormalize_l(l.float()), denormalize_ab(ab.float())], dim=1)
    return lab_to_rgb(lab)
