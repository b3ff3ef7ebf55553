"""End-to-end training of the whole Pik-Fix model (paper 3.4, 4.1), on one process or many.

A run directory holds:
- ``config.json``: the resolved training config (model, data, loss, optimiser);
- ``log.jsonl``: one JSON object per event (config, step, validation, checkpoint);
- ``train_state.pt``: everything needed to resume exactly (model, discriminator, optimisers,
  scheduler, step/epoch/batch position), written atomically, readable with
  ``torch.load(weights_only=True)``;
- ``last.safetensors`` / ``best.safetensors``: inference checkpoints (``pikfix fix --model``).

Data randomness is derived from (seed, epoch, index) by the dataset and the batch order from
(seed, epoch), so resuming at step N reproduces the uninterrupted run.  Under ``torchrun`` the
same code uses DistributedDataParallel: each rank takes every world-th batch element of the
shared order, rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pikfix.atomic import atomic_path
from pikfix.checkpoint import save_checkpoint
from pikfix.color import denormalize_ab, denormalize_l, lab_to_rgb
from pikfix.config import ModelConfig, preset_config, reject_unknown_keys
from pikfix.training.data import REF_RETRIEVED, DataConfig, PairDataset, reference_neighbours, scan_images, split
from pikfix.training.losses import LossConfig, PatchDiscriminator, PikFixLoss
from pikfix.metrics import psnr, ssim
from pikfix.model import PikFix

STATE_FILE = "train_state.pt"


class TrainError(ValueError):
    """A training run cannot start or resume (bad config, data or run directory)."""


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in config.json and in every checkpoint."""

    preset: str = "lite"
    seed: int = 0
    batch_size: int = 8
    epochs: int = 20
    max_steps: int | None = None  # stops early when reached (None: run all epochs)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)  # the paper prints 0.99 for beta1; 0.9 is the usual value
    lr_decay: float = 0.99  # exponential decay per epoch (paper)
    disc_lr: float = 1e-4
    grad_clip: float = 1.0
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    num_workers: int = 2
    checkpoint_every: int = 200  # steps
    log_every: int = 10  # steps
    val_max_images: int = 32
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; for exact-resume checks)
    model: ModelConfig | None = None  # None: the preset's config
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def resolved_model(self) -> ModelConfig:
        return self.model if self.model is not None else preset_config(self.preset)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["betas"] = list(self.betas)
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
            config = cls(**values)
        except (TypeError, ValueError) as err:
            raise TrainError(f"invalid training config: {err}") from None
        config.validate()
        return config

    def validate(self) -> None:
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or self.max_steps >= 0, "max_steps must be >= 0"),
            (self.lr > 0 and self.disc_lr > 0, "learning rates must be > 0"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (all(0 <= b < 1 for b in self.betas) and len(self.betas) == 2, "betas must be two numbers in [0, 1)"),
            (self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every and log_every must be >= 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(f"invalid training config: {message}")
        try:
            self.resolved_model()
        except ValueError as err:
            raise TrainError(str(err)) from None


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


class Trainer:
    """Owns the model, losses, optimisers and the run directory of one training run."""

    def __init__(
        self,
        data_dir: Path,
        run_dir: Path,
        config: TrainConfig,
        device: torch.device,
        resume: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.log_line = log
        self.device = distributed_device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = init_distributed(self.device)
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(config.seed)

        state = self._check_run_dir(resume)
        paths, self.skipped = scan_images(data_dir, config.data)
        self.train_paths, self.val_paths = split(paths, config.data.val_fraction, config.seed)
        if len(self.train_paths) < config.batch_size * self.dist.world:
            raise TrainError(
                f"{len(self.train_paths)} training photos cannot fill one batch of {config.batch_size}"
                f" x {self.dist.world} process(es); lower --batch-size"
            )
        val_paths = self.val_paths[: config.val_max_images]
        neighbours = None  # retrieved references: each photo's best training photos but itself
        if config.data.kind_probabilities()[REF_RETRIEVED] > 0:
            neighbours = reference_neighbours(self.train_paths + val_paths, self.train_paths,
                                              self.run_dir / "neighbours", config.data.ref_neighbours)
        self.train_set = PairDataset(self.train_paths, config.data, config.seed, train=True, neighbours=neighbours)
        self.val_set = PairDataset(val_paths, config.data, config.seed, train=False, neighbours=neighbours)
        self.steps_per_epoch = len(self.train_set) // (config.batch_size * self.dist.world)

        self.model = PikFix(config.resolved_model()).to(self.device)
        self.loss = PikFixLoss(config.loss, self.model.sphist).to(self.device)
        self.disc = PatchDiscriminator().to(self.device) if self.loss.uses_gan else None
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(trainable, lr=config.lr, betas=config.betas)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=config.lr_decay)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.999)) if self.disc else None
        self.step = 0
        self.best_psnr = -math.inf
        if state is not None:
            self._load_state(state)
        # The discriminator runs several forward passes per step, which DDP does not allow;
        # its gradients are averaged across ranks by hand instead (_average_disc_grads).
        self.ddp_model: torch.nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)

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
        for key in ("model", "data", "seed", "batch_size", "preset"):
            if saved.get(key) != mine[key]:
                raise TrainError(
                    f"{self.run_dir} was trained with a different {key!r} "
                    f"({json.dumps(saved.get(key))[:120]}); resume with the same settings or use a new --out"
                )
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if self.disc is not None and self.opt_d is not None:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.best_psnr = float(state["best_psnr"])

    def _save_state(self) -> None:
        state: dict[str, Any] = {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
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
            "epoch": self.step / max(1, self.steps_per_epoch),
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

    def _batches(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches of an epoch, starting after ``skip`` batches (exact resume)."""
        self.train_set.set_epoch(epoch)
        order = epoch_order(len(self.train_set), self.config.seed, epoch)
        global_batch = self.config.batch_size * self.dist.world
        order = order[skip * global_batch : self.steps_per_epoch * global_batch]
        mine = [i for pos, i in enumerate(order) if pos % self.dist.world == self.dist.rank]
        loader = DataLoader(
            torch.utils.data.Subset(self.train_set, mine),
            batch_size=self.config.batch_size,
            shuffle=False,
            drop_last=True,
            num_workers=self.config.num_workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _autocast(self):  # noqa: ANN202 - a context manager
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    # ---------------------------------------------------------------- one step

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.ddp_model.train()
        with self._autocast():
            out = self.ddp_model(batch["input_l"], batch["ref_l"], batch["ref_ab"])
        terms: dict[str, float] = {}
        if self.disc is not None and self.opt_d is not None:
            with self._autocast():
                d_loss, d_terms = self.loss.discriminator_loss(self.disc, batch["target_l"], batch["target_ab"], out.ab.float())
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self._average_disc_grads()
            self.opt_d.step()
            terms.update(d_terms)
        with self._autocast():
            g_loss, g_terms = self.loss.generator_loss(
                _float_output(out), batch["target_l"], batch["target_ab"], batch["ref_ab"], self.disc
            )
        self.opt.zero_grad(set_to_none=True)
        if self.opt_d is not None:
            self.opt_d.zero_grad(set_to_none=True)
        g_loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.config.grad_clip)
        self.opt.step()
        terms.update(g_terms)
        terms["total"] = float(g_loss.detach())
        return terms

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

    def _validate_and_log(self, epoch: int) -> ValResult:
        result = self.validate()
        self._event("val", step=self.step, epoch=epoch, **dataclasses.asdict(result))
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
        total = self.config.epochs * self.steps_per_epoch
        return total if self.config.max_steps is None else min(total, self.config.max_steps)

    def fit(self, progress: Callable[[int, int, dict[str, float]], None] | None = None) -> None:
        """Train until ``total_steps``; checkpoints periodically and at the end."""
        total = self.total_steps()
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
            self._event(
                "start", step=self.step, total_steps=total, device=str(self.device), world=self.dist.world,
                train_images=len(self.train_paths), val_images=len(self.val_paths),
                skipped=[[str(p), r] for p, r in self.skipped], perceptual=self.loss.perceptual_description,
                config=self.config.to_dict(),
            )
            if self.step == 0:
                self._validate_and_log(epoch=0)
        start_step, tick = self.step, time.perf_counter()
        while self.step < total:
            epoch, skip = divmod(self.step, self.steps_per_epoch)
            for batch in self._batches(epoch, skip):
                terms = self.train_step(batch)
                self.step += 1
                if self.dist.main and (self.step % self.config.log_every == 0 or self.step == total):
                    elapsed = time.perf_counter() - tick
                    crops = (self.step - start_step) * self.config.batch_size * self.dist.world
                    self._event("step", step=self.step, epoch=epoch, lr=self.opt.param_groups[0]["lr"],
                                crops_per_s=round(crops / max(elapsed, 1e-9), 3), **terms)
                if progress is not None and self.dist.main:
                    progress(self.step, total, terms)
                if self.step % self.config.checkpoint_every == 0 and self.dist.main:
                    self._save_state()
                    self._event("checkpoint", step=self.step)
                if self.step >= total:
                    break
            if self.step % self.steps_per_epoch == 0:  # a whole epoch is done
                self.sched.step()
                if self.dist.main:
                    self._validate_and_log(epoch=epoch + 1)
        if self.dist.main:
            self._save_state()
            self._event("end", step=self.step, seconds=round(time.perf_counter() - tick, 2))
        if self.dist.world > 1:
            dist.barrier()


def _float_output(out: Any) -> Any:
    """Losses are computed in float32 even when the forward pass ran in bf16."""
    return dataclasses.replace(out, l=out.l.float(), ab=out.ab.float())


def _to_rgb(l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    lab = torch.cat([denormalize_l(l.float()), denormalize_ab(ab.float())], dim=1)
    return lab_to_rgb(lab)
