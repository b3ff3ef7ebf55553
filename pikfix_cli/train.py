"""`pikfix train`: train the whole model on colour photos damaged on the fly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pikfix_cli.common import console, fail, progress_bar, warn


def train(
    data_dir: Path = typer.Argument(..., help="Folder of colour photos (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Run directory: checkpoints, config.json, log.jsonl."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model preset: lite, paper or tiny (default lite)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON training config (keys of TrainConfig)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N steps (0: save the initial model)."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    crop: Optional[int] = typer.Option(None, "--crop", help="Training crop size (px)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data loader processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
) -> None:
    """Train Pik-Fix end to end (restoration + similarity + colorization) with synthetic damage."""
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
                 "seed": seed, "num_workers": workers}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if crop is not None:
        raw["data"] = {**raw.get("data", {}), "crop": crop}
    try:
        cfg = TrainConfig.from_dict(raw)
        trainer = Trainer(data_dir, out, cfg, resolve_device(device), resume=resume, log=console.print)
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

        trainer.fit(report)
    if trainer.dist.main:
        console.print(f"done: {out / 'last.safetensors'} (step {trainer.step}); log: {out / 'log.jsonl'}")
