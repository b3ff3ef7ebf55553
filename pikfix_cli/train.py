"""`pikfix train`: train the model on colour photos damaged on the fly, staged or end to end."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Optional

import typer

from pikfix_cli.common import console, fail, progress_bar, warn


_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>[smh]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """'90', '90s', '8m', '1.5h' -> seconds; ValueError with the accepted forms otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or float(match["value"]) <= 0:
        raise ValueError(f"--time-limit {text}: not a duration; use e.g. 90s, 8m or 1.5h")
    return float(match["value"]) * _SECONDS[match["unit"]]


def train(
    data_dirs: list[Path] = typer.Argument(..., help="Folders of colour photos (searched recursively); several allowed."),
    out: Path = typer.Option(..., "--out", help="Run directory: checkpoints, config.json, log.jsonl."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model preset: lite, paper or tiny (default lite)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON training config (keys of TrainConfig)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N steps (0: save the initial model)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Run length in epochs (crops_per_photo crops of each photo)."),
    stage: Optional[str] = typer.Option(
        None, "--stage", help="Train one stage only: restoration, colorization or joint (else the config's stages)."
    ),
    crop: Optional[int] = typer.Option(None, "--crop", help="Training crop size (px)."),
    init: Optional[Path] = typer.Option(
        None, "--init", help="Start from this model file's weights and config (e.g. the shipped model)."
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data loader processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    time_limit: Optional[str] = typer.Option(
        None, "--time-limit", help="Wall-clock budget (90s, 8m, 1.5h): stop in time to validate and save."
    ),
) -> None:
    """Train Pik-Fix (restoration + similarity + colorization, staged or end to end) with synthetic damage."""
    started = time.perf_counter()
    try:
        budget = parse_duration(time_limit) if time_limit is not None else None
    except ValueError as err:
        raise fail(str(err)) from None
    # Idle OpenMP threads must sleep rather than spin, or they take the cores the data workers
    # need (before torch is imported; an explicit setting wins).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pikfix.training.data import DataError
    from pikfix.device import resolve_device
    from pikfix.training.trainer import Trainer, TrainConfig, TrainError

    try:
        raw = json.loads(config.read_text()) if config else {}
    except (OSError, json.JSONDecodeError) as err:
        raise fail(f"{config}: cannot read training config ({err})") from None
    if not isinstance(raw, dict):
        raise fail(f"{config}: the training config must be a JSON object")
    overrides = {"preset": preset, "max_steps": max_steps, "epochs": epochs, "batch_size": batch_size,
                 "seed": seed, "num_workers": workers, "init": None if init is None else str(init)}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if stage is not None:
        raw["stages"] = [stage]
    if crop is not None:
        raw["data"] = {**raw.get("data", {}), "crop": crop}
    try:
        cfg = TrainConfig.from_dict(raw)
        trainer = Trainer(data_dirs, out, cfg, resolve_device(device), resume=resume, log=console.print)
    except (TrainError, DataError, ValueError) as err:
        raise fail(str(err)) from None
    for path, reason in trainer.skipped:
        warn(f"{path}: skipped ({reason})")
    if trainer.dist.main:
        console.print(
            f"{len(trainer.train_paths)} training / {len(trainer.val_paths)} validation photos, "
            f"{len(trainer.skipped)} skipped; {trainer.total_steps()} steps on {trainer.device}"
            f" x {trainer.dist.world}; perceptual loss: {trainer.loss.perceptual_description}"
        )
    with progress_bar(disable=not trainer.dist.main) as bar:
        task = bar.add_task("training", total=trainer.total_steps(), completed=trainer.step)

        def report(step: int, total: int, terms: dict[str, float]) -> None:
            bar.update(task, completed=step, description=f"training  loss {terms['total']:.4f}")

        # The budget covers the whole command, photo scanning and model set-up included.
        trainer.fit(report, time_limit=None if budget is None else budget - (time.perf_counter() - started))
    if trainer.dist.main:
        why = "time limit reached, --resume continues" if trainer.stopped_early else "done"
        console.print(f"{why}: {out / 'last.safetensors'} (step {trainer.step}); log: {out / 'log.jsonl'}")
